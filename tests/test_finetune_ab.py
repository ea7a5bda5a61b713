"""The leaf-label fine-tuning experiment (hlp_audio.training.finetune_ab) end to end on a handful of real clips.

Real UrbanSound8K FLACs of folds 2 and 10 (one clip per class and split), the real converted
EfficientAT mn04, one optimizer step per fine-tuned arm and seed, offline.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hlp_audio.training.finetune_ab import (
    ARMS,
    FIGURE_KEYS,
    OTHER_CLASSES_TOP_K,
    Recipe,
    mean_probability,
    read_metadata,
    run_experiment,
    split_urbansound8k,
    top_other_classes,
    write_manifest,
)
from training_helpers import reset_accelerate_state

OUTPUT_WEIGHT = "backbone.classifier.output.weight"
OUTPUT_BIAS = "backbone.classifier.output.bias"


@pytest.fixture(scope="module")
def urbansound8k(shared_data):
    folder = shared_data / "urbansound8k"
    if not (folder / "metadata.csv").is_file():
        pytest.fail(f"UrbanSound8K not found at {folder}")
    return folder


@pytest.fixture(scope="module")
def experiment(urbansound8k, shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune_ab")
    # 10 training clips (one per class) in one batch: one optimizer step per arm and seed
    recipe = Recipe(epochs=1, batch_size=10, lr=1e-3, clip_seconds=1.0, seeds=(0, 1), num_workers=0, clips_per_class=1)
    reset_accelerate_state()
    record = run_experiment(
        urbansound8k, shared_data / "models" / "efficientat_mn04_as" / "mn04_as_mAP_432.pt", out, recipe,
        audioset_dir=shared_data / "audioset",
    )
    yield out, record
    # leave no single-process accelerate state behind: a later debug_launcher test forks from this process
    reset_accelerate_state()


def _manifest(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_outputs_and_manifests(experiment, urbansound8k):
    out, record = experiment
    manifests = {name: _manifest(out / "manifests" / f"{name}.csv") for name in ("train", "validation", "test")}
    assert {name: len(rows) for name, rows in manifests.items()} == record["clips"] == {"train": 10, "validation": 10, "test": 10}
    for name, fold in (("train", "fold2"), ("validation", "fold2"), ("test", "fold10")):
        assert all(row["audio"].startswith(str((urbansound8k / "audio" / fold).resolve())) for row in manifests[name])
        assert all(row["audio"].endswith(".flac") for row in manifests[name])
    # validation holds whole recordings: no recording on both sides
    assert not {row["fsID"] for row in manifests["train"]} & {row["fsID"] for row in manifests["validation"]}
    dog = next(row for row in manifests["train"] if row["class"] == "dog_bark")
    assert dog["labels"] == "/m/05tny_,/m/0bt9lr"  # Bark, Dog
    results = out / "results"
    assert (results / "parent_ap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((results / "metrics.json").read_text()) == json.loads(json.dumps(record))
    for arm in ARMS[1:]:
        for seed in (0, 1):
            run = out / "runs" / arm.name / f"seed{seed}"
            assert (run / "best" / "model.safetensors").is_file()
            assert not (run / "checkpoints").exists() and not (run / "final").exists()


def test_metrics_per_arm(experiment):
    out, record = experiment
    # 10 UrbanSound8K classes -> 12 AudioSet classes (Bark + Dog, Idling + Engine); HLP adds 7 ancestors
    assert record["classes_with_positives"] == 12 and record["classes_with_positives_hlp"] == 19
    assert len(record["training_vocabulary"]) == 19
    assert record["parent_classes"] == ["Animal", "Domestic animals, pets", "Dog", "Engine", "Alarm", "Mechanisms", "Tools", "Power tool", "Explosion"]
    assert list(record["arms"]) == [arm.name for arm in ARMS]
    for name, summary in record["arms"].items():
        assert len(summary["runs"]) == (1 if name == "pretrained" else 2)
        for key in FIGURE_KEYS:
            values = [run[key] for run in summary["runs"]]
            assert all(0.0 <= value <= 1.0 for value in values)
            assert summary[key] == pytest.approx(sum(values) / len(values))
            if name != "pretrained":
                assert summary[key + "_std"] == pytest.approx(torch.tensor(values, dtype=torch.float64).std().item())
        assert len(summary["per_class"]) == 19 and sum(row["parent"] for row in summary["per_class"]) == 9
    table = (out / "results" / "metrics.md").read_text()
    for arm in ARMS:
        assert f"| {arm.title} |" in table
    assert "±" in table and "mAP, base labels (12 classes)" in table and "mAP, HLP labels (19 classes)" in table


def test_arms_differ_as_they_should(experiment, shared_data):
    out, record = experiment
    original = torch.load(shared_data / "models" / "efficientat_mn04_as" / "mn04_as_mAP_432.pt", weights_only=True)
    pretrained = load_file(out / "pretrained" / "model.safetensors")
    # (a) is the converted checkpoint itself, untouched
    assert record["arms"]["pretrained"]["runs"][0]["checkpoint"] == "pretrained"
    assert torch.equal(pretrained[OUTPUT_WEIGHT], original["classifier.5.weight"])
    vocabulary = torch.zeros(527, dtype=torch.bool)
    labels = json.loads((out / "pretrained" / "config.json").read_text())["ontology"]["labels"]
    vocabulary[[labels.index(label) for label in record["training_vocabulary"]]] = True

    def weights(arm, seed=0):
        return load_file(out / "runs" / arm / f"seed{seed}" / "best" / "model.safetensors")

    base, hlp, partial = weights("base"), weights("hlp"), weights("hlp_partial")
    for key in (OUTPUT_WEIGHT, OUTPUT_BIAS):
        # (d): the head rows of the classes outside the vocabulary are exactly the pretrained ones
        assert torch.equal(partial[key][~vocabulary], pretrained[key][~vocabulary])
        changed = [not torch.equal(a, b) for a, b in zip(partial[key][vocabulary], pretrained[key][vocabulary])]
        assert all(changed)
        # (b): every row moves, the other classes' included (each is a negative on every clip)
        assert all(not torch.equal(a, b) for a, b in zip(base[key][~vocabulary], pretrained[key][~vocabulary]))
    # (c) differs from (b) only through its targets: the rows of the propagated ancestors differ
    assert not torch.equal(hlp[OUTPUT_WEIGHT], base[OUTPUT_WEIGHT])
    recorded = json.loads((out / "runs" / "hlp_partial" / "seed0" / "training_args.json").read_text())
    assert recorded["annotated_classes"] == record["training_vocabulary"]
    assert json.loads((out / "runs" / "hlp" / "seed0" / "training_args.json").read_text())["hlp"] is True
    # different seeds, different runs
    assert not torch.equal(weights("base", 0)[OUTPUT_WEIGHT], weights("base", 1)[OUTPUT_WEIGHT])


def test_a_second_call_reuses_the_finished_runs(experiment, urbansound8k, shared_data):
    out, record = experiment
    results = out / "runs" / "base" / "seed0" / "results.json"
    before = results.stat().st_mtime_ns
    recipe = Recipe(**{**record["recipe"], "seeds": tuple(record["recipe"]["seeds"])})
    again = run_experiment(urbansound8k, shared_data / "no_checkpoint_needed.pt", out, recipe, audioset_dir=shared_data / "audioset")
    assert results.stat().st_mtime_ns == before
    for name, summary in record["arms"].items():
        assert [run["map_hlp"] for run in again["arms"][name]["runs"]] == [run["map_hlp"] for run in summary["runs"]]


def test_mean_probability_of_the_pretrained_models_top_other_classes():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((3, 9))
    vocabulary = np.zeros(9, dtype=bool)
    vocabulary[[0, 4]] = True
    reference[:, 0] = 10.0  # the highest everywhere, but in the vocabulary: never chosen
    selected = top_other_classes(reference, vocabulary)
    for row in range(3):
        outside = [c for c in np.argsort(-reference[row]) if not vocabulary[c]]
        assert sorted(np.flatnonzero(selected[row])) == sorted(outside[:OTHER_CLASSES_TOP_K])
    logits = rng.standard_normal((3, 9))
    expected = np.mean([1 / (1 + math.exp(-logits[r, c])) for r in range(3) for c in range(9) if selected[r, c]])
    assert mean_probability(logits, selected) == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------------------------ bad input
def _metadata(folder, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.csv").write_text(text)
    return folder


HEADER = "file,fold,fsID,class,audioset_mids\n"


def test_bad_metadata_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere/metadata.csv does not exist"):
        read_metadata(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"metadata.csv: no column 'audioset_mids'"):
        read_metadata(_metadata(tmp_path / "a", "file,fold,fsID,class\nx.flac,2,1,dog_bark\n"))
    with pytest.raises(ValueError, match=r"metadata.csv, line 3: no AudioSet label for y.flac"):
        read_metadata(_metadata(tmp_path / "b", HEADER + "x.flac,2,1,dog_bark,/m/05tny_\ny.flac,2,2,dog_bark,\n"))
    rows = read_metadata(_metadata(tmp_path / "c", HEADER + "x.flac,2,1,dog_bark,/m/05tny_\n"))
    with pytest.raises(ValueError, match="fold 10 has no clip"):
        split_urbansound8k(rows, validation_share=0.2)
    with pytest.raises(ValueError, match=r"validation_share must be in \(0, 1\), got 1.5"):
        split_urbansound8k(rows, validation_share=1.5)
    with pytest.raises(FileNotFoundError, match=r"the audio file .*x.flac of dog_bark does not exist"):
        write_manifest(rows, tmp_path / "c", tmp_path / "manifest.csv")


def test_validation_split_holds_out_whole_recordings_per_class(urbansound8k):
    rows = read_metadata(urbansound8k)
    splits = split_urbansound8k(rows, validation_share=0.2)
    assert len(splits["train"]) + len(splits["validation"]) == 888 and len(splits["test"]) == 837
    train, validation = ({row["fsID"] for row in splits[name]} for name in ("train", "validation"))
    assert not train & validation
    assert {row["class"] for row in splits["validation"]} == {row["class"] for row in splits["train"]}  # every class
    assert 0.1 < len(splits["validation"]) / 888 < 0.35
    assert splits == split_urbansound8k(rows, validation_share=0.2)  # deterministic
