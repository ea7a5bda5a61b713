"""The AS-HLP dataset (hlp_audio.hub.audioset_hlp): parquet files, dataset card with real statistics, one-commit push
to a fake Hub."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

datasets = pytest.importorskip("datasets")

from hlp_audio import load_segments, propagate_labels  # noqa: E402
from hlp_audio.audioset import AUDIOSET_FILES, SPLITS, AudioSetFileError  # noqa: E402
from hlp_audio.hub.audioset_hlp import build_audioset_hlp, official_sources, publish_audioset_hlp  # noqa: E402


class FakeHubApi:
    """Records create_repo / upload_folder calls; "uploads" by copying the folder."""

    def __init__(self, remote: Path):
        self.remote = remote
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))
        return f"https://huggingface.co/datasets/{kwargs['repo_id']}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        shutil.copytree(kwargs["folder_path"], self.remote / kwargs["repo_id"], dirs_exist_ok=True)
        return "commit-1"


def _header_counts(path):
    with open(path) as handle:
        header = handle.readlines()[1]
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", header)}


def _front_matter(card: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", card, re.S)
    assert match, "the card must start with YAML metadata"
    return yaml.safe_load(match.group(1))


def _naive_label_count(rows, lookup) -> int:
    """Labels per clip after HLP, by a per-row set union over the dense lookup table."""
    return sum(len(set(row) | set(np.flatnonzero(lookup[row].any(axis=0)).tolist())) for row in rows)


def _table_row(card: str, split: str) -> list:
    line = next(line for line in card.splitlines() if line.startswith(f"| {split} | ") and "parquet" not in line)
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_build_small_splits_and_push(audioset_dir, audioset_ontology, tmp_path, capsys):
    out = tmp_path / "as-hlp"
    api = FakeHubApi(tmp_path / "remote")
    publish_audioset_hlp(out, splits=["balanced_train", "eval"], audioset_dir=str(audioset_dir), repo_id="someone/as-hlp", api=api)
    assert "Wrote 42,531 clips" in capsys.readouterr().out

    # one repo creation and one commit, of the whole folder, to a dataset repo
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][1] == {"repo_id": "someone/as-hlp", "repo_type": "dataset", "private": False, "exist_ok": True}
    assert api.calls[1][1]["repo_type"] == "dataset" and api.calls[1][1]["folder_path"] == str(out)
    uploaded = sorted(str(p.relative_to(tmp_path / "remote" / "someone" / "as-hlp")) for p in (tmp_path / "remote").rglob("*") if p.is_file())
    assert uploaded == [
        "README.md",
        "data/balanced_train-00000-of-00001.parquet",
        "data/eval-00000-of-00001.parquet",
        "hlp_ontology.json",
    ]

    # the folder loads with datasets, through the card's `configs`, with ClassLabel features
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf_cache"))
    lookup = audioset_ontology.lookup_table()
    card = (out / "README.md").read_text()
    for split, file_name in (("balanced_train", "balanced_train_segments.csv"), ("eval", "eval_segments.csv")):
        ds = loaded[split]
        counts = _header_counts(audioset_dir / file_name)
        assert len(ds) == counts["num_segs"]
        assert ds.features["hlp_labels"].feature.names == list(audioset_ontology.names)
        assert ds.features["labels"] == ds.features["hlp_labels"]
        labels = ds.data.column("labels").combine_chunks()
        assert len(labels.values) == counts["num_positive_labels"]
        assert ds.data.column("hlp_labels").combine_chunks().equals(propagate_labels(labels, audioset_ontology))

        # the card's statistics row: independent figures from the CSV header and a naive set union
        after = _naive_label_count(labels.to_pylist(), lookup)
        row = _table_row(card, split)
        assert row[1] == f"{counts['num_segs']:,}"
        assert row[2] == f"{counts['num_positive_labels'] / counts['num_segs']:.3f}"
        assert row[3] == f"{after / counts['num_segs']:.3f}"
        assert row[5] == f"{after - counts['num_positive_labels']:,}"

    meta = _front_matter(card)
    assert meta["license"] == ["cc-by-4.0", "cc-by-sa-4.0"]
    assert meta["configs"][0]["data_files"] == [
        {"split": "balanced_train", "path": "data/balanced_train-00000-of-00001.parquet"},
        {"split": "eval", "path": "data/eval-00000-of-00001.parquet"},
    ]
    assert meta["size_categories"] == ["10K<n<100K"]
    assert "{{" not in card and "}}" not in card
    assert 'load_dataset("someone/as-hlp"' in card
    assert "42,531 AudioSet v1 segments** of balanced_train and eval" in card
    assert "*Bark* is also labelled *Dog*, *Domestic animals, pets* and *Animal*" in card
    assert "CC BY 4.0" in card and "CC BY-SA 4.0" in card and "Google" in card
    assert "arXiv" in card and "2503.21826" in card and "gemmeke2017audioset" in card
    for name in ("ontology.json", "class_labels_indices.csv", "balanced_train_segments.csv", "eval_segments.csv"):
        assert f"`{name}`: `{AUDIOSET_FILES[name].sha256}`" in card
    receiving = len(audioset_ontology.receiving)
    assert f"{receiving} can receive propagated labels" in card
    from hlp_audio import Ontology

    assert Ontology.from_json(out / "hlp_ontology.json") == audioset_ontology


def test_refuses_to_overwrite_or_to_use_altered_files(audioset_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not empty"):
        publish_audioset_hlp(out, splits=["eval"], audioset_dir=str(audioset_dir))
    assert (out / "keep.txt").exists()

    altered = tmp_path / "altered"
    altered.mkdir()
    for name in ("ontology.json", "class_labels_indices.csv"):
        shutil.copy(audioset_dir / name, altered / name)
    lines = (audioset_dir / "eval_segments.csv").read_text().splitlines(keepends=True)
    (altered / "eval_segments.csv").write_text("".join(lines[:-1]))  # one clip fewer
    with pytest.raises(AudioSetFileError, match="differs from the official eval_segments.csv"):
        publish_audioset_hlp(tmp_path / "new", splits=["eval"], audioset_dir=str(altered))


@pytest.mark.slow
def test_card_for_all_of_audioset(audioset_dir, audioset_ontology, tmp_path):
    """The full build; the card's overall row matches the paper (2,084,320 clips, 1.98 -> 2.39 labels)."""
    sources = official_sources(list(SPLITS))
    segments = load_segments(None, audioset_ontology, audioset_dir=audioset_dir)
    out = build_audioset_hlp(tmp_path / "full", audioset_ontology, segments, source_files=sources)
    card = (out / "README.md").read_text()
    row = _table_row(card, "all")
    assert row[1] == "2,084,320"
    assert round(float(row[2]), 2) == 1.98 and round(float(row[3]), 2) == 2.39
    assert _front_matter(card)["size_categories"] == ["1M<n<10M"]
    assert "of balanced_train, eval and unbalanced_train" in card
    assert "Classes that grow most (clips with the label, all splits together)" in card
    unbalanced = datasets.Dataset.from_parquet(str(out / "data" / "unbalanced_train-00000-of-00001.parquet"), cache_dir=str(tmp_path / "c"))
    assert len(unbalanced) == 2_041_789
    assert unbalanced.features["hlp_labels"].feature.names == list(audioset_ontology.names)
