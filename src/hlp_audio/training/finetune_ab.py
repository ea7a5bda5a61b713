"""Fine-tuning a pretrained AudioSet tagger on real leaf-labelled audio, with and without HLP (``scripts/finetune_ab.py``).

Users fine-tune a 527-class tagger on clips labelled with a few leaf classes ("Bark", "Drill",
"Siren"). Plain BCE makes every ancestor of those leaves ("Dog", "Animal", "Power tool") a
negative on every clip, and every class the data does not annotate a negative too. This
experiment measures what that does on real audio, UrbanSound8K (fold 2 to train, fold 10 to
test; never mixed), starting from the converted EfficientAT mn04, with the same recipe and seeds
in every arm:

- (a) ``pretrained``: the converted model, not fine-tuned;
- (b) ``base``: fine-tuned on the base labels;
- (c) ``hlp``: fine-tuned with ``--hlp`` (labels propagated to their ancestors);
- (d) ``hlp_partial``: ``--hlp --loss-on-annotated-classes`` (the loss only over the training
  data's label vocabulary: every other class is unknown, not negative).

Training goes through :func:`hlp_audio.training.train` (clips decoded from the FLAC files and
resampled to 32 kHz in DataLoader workers); the best epoch is chosen on a validation share of
fold 2 (whole recordings, ``fsID``), so fold 10 is seen once, by the best checkpoint. Each arm is
scored on fold 10 with :func:`hlp_audio.training.predict_saved_model` and
:func:`hlp_audio.compute_hierarchical_map` (the four mAPs, per-class AP), plus two mean
probabilities: that of the parent classes on the clips where HLP says they are present (are they
denied?), and that of what the pretrained model hears outside the training vocabulary (is the
rest forgotten?). Writes
``OUT/manifests/*.csv``, ``OUT/pretrained`` (arm (a)), ``OUT/runs/<arm>/seed<k>/best`` and
``OUT/results/{metrics.md, metrics.json, parent_ap.png}``. A finished run (its ``results.json``)
is not trained again, so an interrupted experiment continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..metrics import compute_hierarchical_map
from ..ontology import Ontology
from ..propagation import propagate_labels
from .arguments import parse_train_args
from .evaluation import build_evaluate_parser, per_class_rows, predict_saved_model
from .manifests import read_manifest
from .trainer import train

__all__ = [
    "ARMS",
    "Arm",
    "Recipe",
    "read_metadata",
    "split_urbansound8k",
    "write_manifest",
    "mean_probability",
    "top_other_classes",
    "run_experiment",
    "build_parser",
    "main",
]

#: The four mAPs of :func:`compute_hierarchical_map` reported per arm.
MAP_KEYS = ("map", "map_post", "map_hlp", "map_hlp_post")
#: Every figure reported per arm: the four mAPs, then two mean probabilities (see :func:`mean_probability`).
FIGURE_KEYS = (*MAP_KEYS, "parent_score", "other_classes_score")
#: Per clip, how many of the pretrained model's top classes outside the training vocabulary are followed.
OTHER_CLASSES_TOP_K = 5
METADATA_COLUMNS = ("file", "fold", "fsID", "class", "audioset_mids")


@dataclass(frozen=True)
class Arm:
    name: str  # folder name and key in metrics.json
    title: str  # in tables and plots
    train_flags: Optional[Tuple[str, ...]]  # train.py options of the arm; None: not fine-tuned


ARMS = (
    Arm("pretrained", "(a) pretrained, not fine-tuned", None),
    Arm("base", "(b) fine-tuned, base labels", ()),
    Arm("hlp", "(c) fine-tuned, --hlp", ("--hlp",)),
    Arm("hlp_partial", "(d) --hlp + --loss-on-annotated-classes", ("--hlp", "--loss-on-annotated-classes")),
)


@dataclass(frozen=True)
class Recipe:
    """What every fine-tuned arm shares (see ``scripts/finetune_ab.py --help``)."""

    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-4
    clip_seconds: float = 4.0
    seeds: Tuple[int, ...] = (0, 1, 2)
    num_workers: int = 1
    threads: int = 1
    validation_share: float = 0.2
    clips_per_class: Optional[int] = None  # at most this many clips of each class per split (smoke tests)

    def train_options(self) -> List[str]:
        # No weight decay: partial-label training then leaves the head rows of unknown classes exactly
        # as they were (AdamW's decoupled decay would shrink them); the same for every arm.
        return [
            "--epochs", str(self.epochs), "--batch-size", str(self.batch_size), "--lr", str(self.lr),
            "--weight-decay", "0", "--clip-seconds", str(self.clip_seconds), "--num-workers", str(self.num_workers),
            "--mixed-precision", "no", "--best-metric", "map_hlp", "--report-to", "none", "--no-progress",
        ]


# ---------------------------------------------------------------------------------------------- data
def read_metadata(data_dir: Path) -> List[dict]:
    """The rows of UrbanSound8K's ``metadata.csv`` (with the AudioSet mids of each clip), checked."""
    path = data_dir / "metadata.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass the UrbanSound8K folder (with metadata.csv and audio/)")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in METADATA_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: no column {missing[0]!r}; columns are {reader.fieldnames}")
        rows = list(reader)
    for line, row in enumerate(rows, start=2):
        if not row["audioset_mids"].strip():
            raise ValueError(f"{path}, line {line}: no AudioSet label for {row['file']}")
    return rows


def split_urbansound8k(
    rows: List[dict], *, validation_share: float, seed: int = 0, clips_per_class: Optional[int] = None,
    train_fold: str = "2", test_fold: str = "10",
) -> Dict[str, List[dict]]:
    """``train`` / ``validation`` from ``train_fold``, ``test`` from ``test_fold``.

    The validation share is drawn per class as whole recordings (``fsID``: the clips cut from one
    recording stay together, as UrbanSound8K's folds do), at least one recording per class.
    """
    if not 0.0 < validation_share < 1.0:
        raise ValueError(f"validation_share must be in (0, 1), got {validation_share}")
    rng = np.random.default_rng(seed)
    train_rows = [row for row in rows if row["fold"] == train_fold]
    splits = {"train": [], "validation": [], "test": [row for row in rows if row["fold"] == test_fold]}
    for name, fold in (("train", train_fold), ("test", test_fold)):
        if not (train_rows if name == "train" else splits["test"]):
            raise ValueError(f"fold {fold} has no clip in the metadata")
    held_out = set()
    for klass in sorted({row["class"] for row in train_rows}):
        recordings = sorted({row["fsID"] for row in train_rows if row["class"] == klass})
        count = max(1, round(validation_share * len(recordings))) if len(recordings) > 1 else 0
        held_out.update(rng.permutation(recordings)[:count].tolist())
    for row in train_rows:
        splits["validation" if row["fsID"] in held_out else "train"].append(row)
    if clips_per_class is not None:
        for name, split in splits.items():
            kept, seen = [], {}
            for row in split:
                seen[row["class"]] = seen.get(row["class"], 0) + 1
                if seen[row["class"]] <= clips_per_class:
                    kept.append(row)
            splits[name] = kept
    return splits


def write_manifest(rows: List[dict], data_dir: Path, path: Path) -> Path:
    """A training manifest: absolute audio paths into ``data_dir`` and comma-separated AudioSet mids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio", "labels", "class", "fsID"])
        for row in rows:
            audio = (data_dir / row["file"]).resolve()
            if not audio.is_file():
                raise FileNotFoundError(f"{data_dir / 'metadata.csv'}: the audio file {audio} of {row['class']} does not exist")
            writer.writerow([str(audio), ",".join(row["audioset_mids"].split(";")), row["class"], row["fsID"]])
    return path


# ---------------------------------------------------------------------------------------------- runs
def train_run(arm: Arm, seed: int, recipe: Recipe, manifests: Dict[str, Path], pretrained: Path, run_dir: Path) -> float:
    """Fine-tune one arm with one seed into ``run_dir`` (its best checkpoint in ``run_dir/best``); returns seconds."""
    if (run_dir / "results.json").is_file() and (run_dir / "best" / "config.json").is_file():
        return float(json.loads((run_dir / "results.json").read_text()).get("seconds", 0.0))
    started = time.time()
    argv = [
        "--train-manifest", str(manifests["train"]), "--eval-manifest", str(manifests["validation"]),
        "--model-name-or-path", str(pretrained), "--seed", str(seed), "--output-dir", str(run_dir),
        "--logging-steps", "10", *recipe.train_options(), *arm.train_flags,
    ]
    results = train(parse_train_args(argv))
    seconds = time.time() - started
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # resumption state and the last epoch: not kept
    shutil.rmtree(run_dir / "final", ignore_errors=True)
    (run_dir / "results.json").write_text(json.dumps({**results, "seconds": seconds}, indent=2))
    return seconds


def score_run(model_dir: Path, test_manifest: Path, recipe: Recipe) -> Tuple[np.ndarray, np.ndarray, Ontology]:
    """Logits before post-HLP and references of every test clip."""
    from accelerate import Accelerator

    options = build_evaluate_parser().parse_args([
        str(model_dir), str(test_manifest), "--clip-seconds", str(recipe.clip_seconds),
        "--batch-size", str(recipe.batch_size), "--num-workers", str(recipe.num_workers), "--no-progress",
    ])
    logits, labels, ontology, _, _ = predict_saved_model(model_dir, options, Accelerator(mixed_precision="no"))
    return logits, labels, ontology


def mean_probability(logits: np.ndarray, selected: np.ndarray) -> float:
    """Mean sigmoid of ``logits`` over the (clip, class) cells ``selected`` (an (N, C) bool mask)."""
    return float(np.mean(1.0 / (1.0 + np.exp(-logits[selected].astype(np.float64)))))


def top_other_classes(reference_logits: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """(N, C) bool: per clip, the ``OTHER_CLASSES_TOP_K`` classes outside ``vocabulary`` that ``reference_logits``
    (the pretrained model) scores highest; what it hears beyond the training labels (e.g. speech, traffic)."""
    outside = np.where(vocabulary, -np.inf, reference_logits)
    top = np.argpartition(-outside, OTHER_CLASSES_TOP_K - 1, axis=1)[:, :OTHER_CLASSES_TOP_K]
    selected = np.zeros(reference_logits.shape, dtype=bool)
    np.put_along_axis(selected, top, True, axis=1)
    return selected


def _mean_std(values: List[Optional[float]]) -> Tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation (0 for one value); None where a value is None (a class without positives)."""
    if not values or any(value is None for value in values):
        return None, None
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def summarise_arm(arm: Arm, runs: List[dict], parents: List[int]) -> dict:
    """Mean and standard deviation over seeds of the figures and the per-class AP of one arm."""
    summary = {"title": arm.title, "train_flags": list(arm.train_flags or []), "seeds": [run["seed"] for run in runs], "runs": runs}
    for key in FIGURE_KEYS:
        summary[key], summary[key + "_std"] = _mean_std([run[key] for run in runs])
    per_class = []
    for rows in zip(*(run["per_class"] for run in runs)):  # the same classes, in the same order, in every run
        row = {key: rows[0][key] for key in ("index", "label", "name", "receiving")}
        row["parent"] = row["index"] in parents
        for key in ("ap", "ap_post", "ap_hlp", "ap_hlp_post"):
            row[key], row[key + "_std"] = _mean_std([other[key] for other in rows])
        per_class.append(row)
    summary["per_class"] = per_class
    return summary


def run_experiment(data_dir, checkpoint, out, recipe: Recipe = Recipe(), *, audioset_dir=None, arms=ARMS) -> dict:
    """Run every arm (fine-tuned ones once per seed), score them on the test fold, write ``OUT/results``."""
    import torch

    from ..conversion import convert_efficientat

    data_dir, out = Path(data_dir), Path(out)
    started = time.time()
    torch.set_num_threads(recipe.threads)
    splits = split_urbansound8k(read_metadata(data_dir), validation_share=recipe.validation_share, clips_per_class=recipe.clips_per_class)
    manifests = {name: write_manifest(rows, data_dir, out / "manifests" / f"{name}.csv") for name, rows in splits.items()}
    pretrained = out / "pretrained"
    if not (pretrained / "config.json").is_file():
        convert_efficientat(checkpoint, 0.4, pretrained, audioset_dir=audioset_dir)

    reference_logits, references, ontology = score_run(pretrained, manifests["test"], recipe)
    train_clips = read_manifest(manifests["train"], ontology)
    vocabulary = train_clips.with_hlp(ontology).annotated_classes()  # the classes arm (d) trains on
    base_classes = np.flatnonzero(train_clips.annotated_classes())  # the UrbanSound8K classes' AudioSet classes
    ancestors = ontology.lookup_table()[base_classes]
    ancestors[np.arange(len(base_classes)), base_classes] = False  # the diagonal: a class is not its own parent
    parents = np.flatnonzero(ancestors.any(axis=0)).tolist()  # the HLP ancestors of the UrbanSound8K classes
    present_parents = propagate_labels(references > 0, ontology)  # the ontology says the parent is present
    present_parents[:, np.setdiff1d(np.arange(len(ontology)), parents)] = False
    other_classes = top_other_classes(reference_logits, vocabulary)

    summaries = {}
    for arm in arms:
        runs = []
        for seed in ([None] if arm.train_flags is None else recipe.seeds):
            seconds, model_dir = 0.0, pretrained
            if arm.train_flags is not None:
                run_dir = out / "runs" / arm.name / f"seed{seed}"
                seconds = train_run(arm, seed, recipe, manifests, pretrained, run_dir)
                model_dir = run_dir / "best"
            logits = reference_logits if model_dir == pretrained else score_run(model_dir, manifests["test"], recipe)[0]
            metrics = compute_hierarchical_map(logits, references, ontology, return_per_class=True)
            # the classes with a positive in the test references, base or HLP (the others have no AP)
            per_class = [row for row in per_class_rows(metrics, ontology) if row["ap_hlp"] is not None]
            run = {"seed": seed, "checkpoint": str(model_dir.relative_to(out)), "train_seconds": round(seconds, 1)}
            run.update({key: metrics[key] for key in MAP_KEYS})
            run["parent_score"] = mean_probability(logits, present_parents)
            run["other_classes_score"] = mean_probability(logits, other_classes)
            run.update(per_class=per_class)
            runs.append(run)
        summaries[arm.name] = summarise_arm(arm, runs, parents)

    first = compute_hierarchical_map(reference_logits, references, ontology)
    record = {
        "recipe": asdict(recipe),
        "clips": {name: len(rows) for name, rows in splits.items()},
        "classes_with_positives": first["num_classes"] - first["num_classes_without_positives"],
        "classes_with_positives_hlp": first["num_classes"] - first["num_classes_without_positives_hlp"],
        "training_vocabulary": [ontology.labels[i] for i in np.flatnonzero(vocabulary)],
        "parent_classes": [ontology.names[i] for i in parents],
        "arms": summaries,
        "seconds": round(time.time() - started, 1),
    }
    write_results(record, out / "results")
    return record


# ---------------------------------------------------------------------------------------------- report
def _figure(mean: Optional[float], std: Optional[float], seeds: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" if seeds <= 1 else f"{mean:.4f} ± {std:.4f}"


def markdown_report(record: dict) -> str:
    """The figures of each arm (mean ± std over seeds), then per-class AP tables."""
    arms = record["arms"]
    base, hlp = record["classes_with_positives"], record["classes_with_positives_hlp"]
    lines = [
        f"| arm | mAP, base labels ({base} classes) | + post-HLP | mAP, HLP labels ({hlp} classes) | + post-HLP "
        "| parents where present | other classes heard |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for summary in arms.values():
        seeds = len(summary["runs"])
        cells = [_figure(summary[key], summary[key + "_std"], seeds) for key in FIGURE_KEYS]
        lines.append(f"| {summary['title']} | " + " | ".join(cells) + " |")
    recipe, clips = record["recipe"], record["clips"]
    lines += [
        "",
        f"Test: UrbanSound8K fold 10, {clips['test']} clips. mAP over the {record['classes_with_positives']} classes with "
        f"positives in the base labels and the {record['classes_with_positives_hlp']} with positives after HLP "
        "(post-HLP off / on: the model's logits / raised to their descendants'). Fine-tuned arms: mean ± sample standard "
        f"deviation over seeds {', '.join(str(seed) for seed in recipe['seeds'])}; fold 2: {clips['train']} training clips, "
        f"{clips['validation']} validation clips (whole recordings) choosing the best of {recipe['epochs']} epochs on mAP, HLP "
        f"labels. Parents where present: the mean probability (post-HLP off) of the {len(record['parent_classes'])} parent "
        "classes on the test clips where HLP says they are present. Other classes heard: per test clip, the mean "
        f"probability an arm gives the {OTHER_CLASSES_TOP_K} classes outside the training vocabulary "
        f"({len(record['training_vocabulary'])} classes with HLP) that the pretrained model scores highest.",
        "",
    ]
    for title, key, selected in (
        ("Parent classes (the HLP ancestors of the UrbanSound8K classes): AP on HLP labels, post-HLP off", "ap_hlp", True),
        ("UrbanSound8K classes (base labels): AP, post-HLP off", "ap", False),
    ):
        header = " | ".join(f"{summary['title'].split()[0]} {name}" for name, summary in arms.items())
        lines += [f"**{title}**", "", f"| class | {header} |", "| --- |" + " --- |" * len(arms)]
        first = next(iter(arms.values()))
        for position, row in enumerate(first["per_class"]):
            if row["parent"] != selected or row[key] is None:
                continue
            cells = [
                _figure(summary["per_class"][position][key], summary["per_class"][position][key + "_std"], len(summary["runs"]))
                for summary in arms.values()
            ]
            lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(f"Wall time: {record['seconds'] / 60:.1f} min.")
    return "\n".join(lines) + "\n"


def plot_parent_ap(record: dict, path: Path) -> Path:
    """Per-class AP (HLP labels) of the parent classes, one bar per arm (± std over seeds), post-HLP off and on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(record["arms"].values())
    rows = [position for position, row in enumerate(arms[0]["per_class"]) if row["parent"]]
    names = [arms[0]["per_class"][position]["name"] for position in rows]
    width = 0.8 / len(arms)
    figure, axes = plt.subplots(1, 2, figsize=(12, 0.42 * len(rows) + 2.2), sharey=True)
    for axis, key, title in ((axes[0], "ap_hlp", "post-HLP off"), (axes[1], "ap_hlp_post", "post-HLP on")):
        for number, summary in enumerate(arms):
            means = [summary["per_class"][position][key] or 0.0 for position in rows]
            stds = [summary["per_class"][position][key + "_std"] or 0.0 for position in rows]
            axis.barh(np.arange(len(rows)) + (number - (len(arms) - 1) / 2) * width, means, height=width, xerr=stds,
                      label=summary["title"], capsize=2)
        axis.set_title(f"AP on HLP labels, {title}", fontsize=10)
        axis.set_xlim(0, 1)
        axis.set_xlabel("average precision (UrbanSound8K fold 10)")
    axes[0].set_yticks(np.arange(len(rows)), labels=names)
    axes[0].invert_yaxis()
    figure.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=len(arms), fontsize=8, frameon=False)
    figure.suptitle("Parent classes after fine-tuning mn04 on leaf labels (mean ± std over seeds)", fontsize=11)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_results(record: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(record, indent=2))
    (folder / "metrics.md").write_text(markdown_report(record))
    plot_parent_ap(record, folder / "parent_ap.png")


# ---------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    defaults = Recipe()
    parser = argparse.ArgumentParser(
        prog="finetune_ab.py",
        description="Fine-tune the converted EfficientAT mn04 on UrbanSound8K fold 2 (leaf labels) with base labels, "
        "--hlp and --hlp + --loss-on-annotated-classes; score every arm and the pretrained model on fold 10.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data-dir", required=True, help="UrbanSound8K folder: metadata.csv (with audioset_mids) and audio/")
    parser.add_argument("--checkpoint", required=True, help="EfficientAT mn04 state dict (mn04_as_mAP_432.pt)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--audioset-dir", help="folder of the AudioSet metadata (default: $HLP_AUDIOSET_DIR, else download)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--clip-seconds", type=float, default=defaults.clip_seconds)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(defaults.seeds))
    parser.add_argument("--num-workers", type=int, default=defaults.num_workers, help="DataLoader workers decoding the FLAC files")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch threads of the main process")
    parser.add_argument("--validation-share", type=float, default=defaults.validation_share, help="share of fold 2's recordings held out to pick the best epoch")
    parser.add_argument("--clips-per-class", type=int, help="at most this many clips of each class per split (a quick look)")
    return parser


def main(argv: Optional[List[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    recipe = Recipe(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, clip_seconds=args.clip_seconds, seeds=tuple(args.seeds),
        num_workers=args.num_workers, threads=args.threads, validation_share=args.validation_share,
        clips_per_class=args.clips_per_class,
    )
    record = run_experiment(args.data_dir, args.checkpoint, args.out, recipe, audioset_dir=args.audioset_dir)
    print((Path(args.out) / "results" / "metrics.md").read_text())
    return record
