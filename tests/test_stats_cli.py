"""`hlp-audio stats` reproduces the paper's label statistics on the real AudioSet files."""

import json
import subprocess
import sys

import numpy as np
import pytest

from hlp_audio import load_segments
from hlp_audio.cli import main
from hlp_audio.stats import compute_stats


@pytest.mark.slow
def test_all_splits_reproduce_the_paper(audioset_dir, capsys, tmp_path):
    plot = tmp_path / "growth.png"
    assert main(["stats", "--audioset-dir", str(audioset_dir), "--json", "--top", "5", "--plot", str(plot)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["ontology"]["classes"] == 527
    assert stats["ontology"]["receiving_classes"] == 109
    assert stats["ontology"]["ambiguous_classes"] == 21
    assert stats["ontology"]["ancestor_pairs"] == 731
    all_ = stats["splits"]["all"]
    assert all_["clips"] == 2_084_320
    assert round(all_["mean_labels_before"], 2) == 1.98
    assert round(all_["mean_labels_after"], 2) == 2.39
    assert 25.5 < all_["clips_changed_pct"] < 27.0  # "about 26 %"
    assert all_["classes_gaining"] == 109
    unbalanced = stats["splits"]["unbalanced_train"]
    assert unbalanced["labels_before"] == 4_020_212  # the header's num_positive_labels
    assert sum(stats["splits"][s]["clips"] for s in ("balanced_train", "eval", "unbalanced_train")) == all_["clips"]
    assert all_["labels_added"] == sum(stats["splits"][s]["labels_added"] for s in ("balanced_train", "eval", "unbalanced_train"))
    top = stats["top_growth"]
    assert len(top) == 5 and top[0]["growth"] >= top[-1]["growth"] > 1
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_split_figures_against_a_dense_recount(audioset_dir, audioset_ontology):
    segs = load_segments(["eval"], audioset_ontology, audioset_dir=audioset_dir)
    stats = compute_stats(audioset_ontology, segs, top=3)
    figures = stats["splits"]["eval"]
    assert "all" not in stats["splits"]
    # recount with the dense lookup table, independently of the arrow path
    labels = segs["eval"].labels
    dense = np.zeros((len(labels), 527), dtype=bool)
    offsets = labels.offsets.to_numpy()
    dense[np.repeat(np.arange(len(labels)), np.diff(offsets)), labels.values.to_numpy()] = True
    after = (dense.astype(np.uint8) @ audioset_ontology.lookup_table().astype(np.uint8)) > 0
    assert figures["clips"] == 20371
    assert figures["mean_labels_before"] == pytest.approx(51804 / 20371)
    assert figures["mean_labels_after"] == pytest.approx(after.sum() / 20371)
    assert figures["clips_changed"] == int((after.sum(1) > dense.sum(1)).sum())
    assert figures["labels_added"] == int(after.sum() - dense.sum())
    assert figures["classes_gaining"] == int((after.sum(0) > dense.sum(0)).sum())


def test_text_output_and_errors(audioset_dir, tmp_path, capsys):
    assert main(["stats", "--audioset-dir", str(audioset_dir), "--splits", "balanced_train", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "receiving classes     109" in out and "balanced_train" in out and "Top 3 classes" in out
    assert main(["stats", "--audioset-dir", str(tmp_path)]) == 2
    assert "ontology.json (or ontology.json.gz) is not in audioset_dir=" in capsys.readouterr().err


def test_console_script_entry_point(audioset_dir):
    result = subprocess.run(
        [sys.executable, "-m", "hlp_audio.cli", "stats", "--audioset-dir", str(audioset_dir), "--splits", "eval", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout)["splits"]["eval"]["clips"] == 20371
