"""Evaluation of a saved tagger (``scripts/evaluate_model.py``): the four mAPs, AUC, d' and per-class AP.

The clips come from any source of :mod:`.sources` (a Hub repo or folder of shards with a config and a
split, read whole or streamed; a ``save_to_disk`` folder; a manifest of audio files). The references are
the source's labels (AS-Base) and the same labels after HLP (AS-HLP) with the ontology of the model's config; scores are the model's logits with post-HLP off and on. Writes to
``--out``: ``metrics.json`` (every figure, and per class the AP on AS-Base and AS-HLP with post-HLP
off and on, and the ROC AUC), ``metrics.md`` (the markdown table printed at the end) and
``ap_change.png`` (per-class AP change, AS-HLP vs AS-Base, of the classes that can receive labels).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from accelerate import Accelerator
from transformers import AutoFeatureExtractor

from ..metrics import compute_hierarchical_map
from ..modeling.modeling_hlp_audio import HLPAudioForAudioClassification
from ..ontology import Ontology
from .data import SOURCE_HELP, add_data_arguments, check_clip_count, eval_loader
from .models import build_front_end, predict
from .skipped import SkippedClips

__all__ = ["build_evaluate_parser", "evaluate_model", "markdown_table", "per_class_rows", "plot_ap_change", "predict_saved_model"]


def build_evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate_model.py",
        description="Evaluate an HLP tagger on a data source: the paper's four mAPs, AUC, d' and per-class AP.",
    )
    parser.add_argument("model", metavar="MODEL", help="saved HLP tagger folder")
    parser.add_argument("data", metavar="SOURCE", help=SOURCE_HELP)
    parser.add_argument("--out", metavar="DIR", help="folder for metrics.json, metrics.md and ap_change.png")
    parser.add_argument("--config", metavar="NAME", help="config of a Hub repo / folder of shards (e.g. balanced, 20k)")
    parser.add_argument("--split", metavar="SPLIT", help="split (a+b joins splits); required for Hub repos and folders of shards")
    add_data_arguments(parser)
    parser.add_argument("--clip-seconds", type=float, default=10.0, help="clips are cut or zero-padded to this length")
    parser.add_argument("--batch-size", type=int, default=32, help="per device")
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"])
    parser.add_argument("--no-progress", action="store_true")
    return parser


def markdown_table(metrics: dict) -> str:
    """The four mAPs (references x post-HLP) and the ranking figures as a markdown table."""
    lines = [
        "| References | mAP, post-HLP off | mAP, post-HLP on |",
        "| --- | --- | --- |",
        f"| AS-Base (original labels) | {metrics['map']:.4f} | {metrics['map_post']:.4f} |",
        f"| AS-HLP (propagated labels) | {metrics['map_hlp']:.4f} | {metrics['map_hlp_post']:.4f} |",
        f"| receiving classes only, AS-Base | {metrics['map_receiving']:.4f} | {metrics['map_post_receiving']:.4f} |",
        f"| receiving classes only, AS-HLP | {metrics['map_hlp_receiving']:.4f} | {metrics['map_hlp_post_receiving']:.4f} |",
        "",
        f"AUC {metrics['auc']:.4f}, d' "
        + (f"{metrics['d_prime']:.3f}" if metrics["d_prime"] is not None else "undefined (infinite at a mean AUC of 0 or 1)")
        + " (AS-Base, post-HLP off); "
        f"{metrics['num_samples']} clips, {metrics['num_classes']} classes "
        f"({metrics['num_receiving_classes']} can receive propagated labels; "
        f"{metrics['num_classes_without_positives']} without positives are left out of the means).",
    ]
    return "\n".join(lines) + "\n"


def plot_ap_change(per_class: List[dict], post_hlp: bool, path: Path) -> Tuple[Optional[Path], str]:
    """Bars of AP(AS-HLP) - AP(AS-Base) per receiving class, sorted, and the AS-HLP AP of the receiving classes that
    have positives only after propagation (no AS-Base AP to compare with). Returns the path written (None when
    there is nothing to draw) and a sentence saying what was drawn or why nothing was."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suffix = "_post" if post_hlp else ""
    receiving = [row for row in per_class if row["receiving"]]
    changed = [
        (row["name"], row[f"ap_hlp{suffix}"] - row[f"ap{suffix}"])
        for row in receiving
        if row[f"ap{suffix}"] is not None and row[f"ap_hlp{suffix}"] is not None
    ]
    new = [
        (f"{row['name']} (new)", row[f"ap_hlp{suffix}"])
        for row in receiving
        if row[f"ap{suffix}"] is None and row[f"ap_hlp{suffix}"] is not None
    ]
    if not changed and not new:
        return None, (
            f"no AP-change plot: none of the {len(receiving)} classes that can receive propagated labels has a "
            "positive clip in this evaluation set, before or after propagation"
        )
    changed.sort(key=lambda row: row[1])
    new.sort(key=lambda row: row[1])
    names = [name for name, _ in new + changed]
    count = len(changed) + len(new)
    figure, axis = plt.subplots(figsize=(7.5, max(3.0, 0.16 * count + 1.4)))
    if new:
        axis.barh(np.arange(len(new)), [value for _, value in new], color="lightgray", hatch="//", edgecolor="gray",
                  label="AP on AS-HLP; no AS-Base positive to compare")
    colors = ["tab:green" if change >= 0 else "tab:red" for _, change in changed]
    axis.barh(len(new) + np.arange(len(changed)), [change for _, change in changed], color=colors)
    axis.set_yticks(np.arange(count), labels=names, fontsize=7 if count > 40 else 9)
    axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set_xlabel("AP on AS-HLP references - AP on AS-Base references")
    plural = "class" if count == 1 else "classes"
    axis.set_title(f"Per-class AP change, {count} receiving {plural} (post-HLP {'on' if post_hlp else 'off'})", fontsize=10)
    if new:
        axis.legend(fontsize=8, loc="lower right")
    axis.margins(y=0.005)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path, (
        f"{path}: AP change of {len(changed)} receiving {'class' if len(changed) == 1 else 'classes'}, and the AS-HLP AP "
        f"of {len(new)} that {'has' if len(new) == 1 else 'have'} positives only after propagation"
    )


def _none_if_nan(value):
    """JSON has no NaN or infinity: a class without positives (NaN AP), or d' of a perfect AUC, becomes null."""
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def predict_saved_model(model_dir, options: argparse.Namespace, accelerator: Accelerator, *, report: Optional[Path] = None):
    """Load a saved tagger and score every clip of ``options.data`` (read with the model's ontology).

    ``options`` are parsed :func:`build_evaluate_parser` options (source, config, split, streaming,
    columns, clip length, batch size, workers). Returns ``(logits, references, ontology, post_hlp,
    num_skipped)``: (N, C) logits before post-HLP, the source's (N, C) multi-hot labels, the model's
    :class:`Ontology`, its ``config.post_hlp``, and the clips skipped with ``--skip-bad-audio``
    (listed in ``report``).
    """
    model = HLPAudioForAudioClassification.from_pretrained(model_dir, dtype=torch.float32)
    feature_extractor = AutoFeatureExtractor.from_pretrained(model_dir)
    if model.config.ontology is None:
        raise SystemExit(f"{model_dir}: the config has no ontology; HLP references cannot be built")
    ontology = Ontology.from_dict(model.config.ontology)
    skipped = SkippedClips(report or Path("skipped_clips.jsonl"), accelerator)
    loader = eval_loader(
        options.data, options.config, options.split, options, ontology, int(feature_extractor.sampling_rate),
        options.clip_seconds, options.batch_size, accelerator, report=report,
    )
    model = accelerator.prepare(model)
    front_end = build_front_end(accelerator.unwrap_model(model), feature_extractor).to(accelerator.device)
    logits, labels = predict(model, loader, front_end, accelerator, progress=not options.no_progress, skipped=skipped.current)
    num_skipped = skipped.report(f"evaluation of {options.data}")
    check_clip_count(loader, len(logits), num_skipped)
    return logits, labels, ontology, bool(accelerator.unwrap_model(model).config.post_hlp), num_skipped


def per_class_rows(metrics: dict, ontology: Ontology) -> List[dict]:
    """Pop the per-class arrays of ``compute_hierarchical_map(..., return_per_class=True)`` into one row per class:
    index, label, name, receiving, and the AP on AS-Base / AS-HLP with post-HLP off / on and the AUC (None: no positives)."""
    receiving = set(metrics.pop("receiving_classes"))
    per_class_keys = ("ap_per_class", "ap_hlp_per_class", "ap_post_per_class", "ap_hlp_post_per_class", "auc_per_class")
    columns = {key: metrics.pop(key) for key in per_class_keys}
    return [
        {
            "index": index,
            "label": ontology.labels[index],
            "name": ontology.names[index],
            "receiving": index in receiving,
            **{key[: -len("_per_class")]: _none_if_nan(columns[key][index]) for key in per_class_keys},
        }
        for index in range(len(ontology))
    ]


def evaluate_model(args: argparse.Namespace) -> dict:
    """Evaluate from parsed options (:func:`build_evaluate_parser`); returns the figures and per-class rows."""
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    report = Path(args.out) / "skipped_clips.jsonl" if args.out else None
    logits, labels, ontology, post_hlp, num_skipped = predict_saved_model(args.model, args, accelerator, report=report)
    metrics = compute_hierarchical_map(logits, labels, ontology, return_per_class=True)
    metrics["num_skipped"] = num_skipped
    per_class = per_class_rows(metrics, ontology)
    summary = {key: _none_if_nan(value) for key, value in metrics.items()}
    table = markdown_table(metrics)
    if accelerator.is_main_process:
        print(table)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            source = {"data": str(args.data), "config": args.config, "split": args.split, "streaming": args.streaming}
            record = {"model": str(args.model), **source, "post_hlp": post_hlp, **summary, "per_class": per_class}
            (out / "metrics.json").write_text(json.dumps(record, indent=2))
            (out / "metrics.md").write_text(table)
            _, plotted = plot_ap_change(per_class, record["post_hlp"], out / "ap_change.png")
            print(f"wrote {out / 'metrics.json'} and {out / 'metrics.md'}; {plotted}")
    accelerator.wait_for_everyone()
    return {**summary, "per_class": per_class}
