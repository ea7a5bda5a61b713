"""Small local replicas of the Hub copies of AudioSet, written from real audio, for tests and benchmarks.

- :func:`write_agkphysics_replica`: the ``agkphysics/AudioSet`` layout: parquet shards under
  ``data/bal_train/``, ``data/unbal_train/``, ``data/eval/``; columns ``video_id``, ``audio`` (an
  ``Audio`` struct: FLAC bytes and the path ``audio/<split>/<id>.flac``), ``labels`` (mids) and
  ``human_labels`` (names); a ``README.md`` declaring the configs ``balanced`` (train/test),
  ``unbalanced`` (train/test) and ``full`` (bal_train/unbal_train/eval). Audio: 48 kHz 24-bit FLAC, one
  clip in ten at 44.1 kHz, stereo (one clip in seven mono), as in the real copy.
- :func:`write_confit_replica`: the ``confit/audioset-16khz-wds`` layout: WebDataset tar shards
  ``<config>/<split>/shard-NNNNN.tar`` for the configs ``20k``, ``500k``, ``2m`` (splits train / test),
  each sample a 16 kHz mono 16-bit ``sample-NNNNNNNNN.wav`` (or ``.flac``) and a ``.json`` with ``id``,
  ``label`` (display names) and ``label_id`` (class indices), as public scripts that read that dataset
  show; and its ``README.md`` with the three configs.

The audio is real: UrbanSound8K clips (``metadata.csv``: AudioSet mids and names of each clip's class),
fold 2 for training splits and fold 10 for evaluation splits (UrbanSound8K's folds must not mix), cut to
mixed lengths (4 s down to 0.6 s). UrbanSound8K is CC BY-NC: write replicas to a temporary or private
folder, never into a repository.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

__all__ = ["urbansound_clips", "write_agkphysics_replica", "write_confit_replica", "AGKPHYSICS_SPLITS", "CONFIT_CONFIGS"]

PathLike = Union[str, "os.PathLike[str]"]

#: agkphysics/AudioSet: folder under data/ of each split, and the fold of UrbanSound8K it is cut from.
AGKPHYSICS_SPLITS = {"bal_train": 2, "unbal_train": 2, "eval": 10}
#: confit/audioset-16khz-wds configs (each with train and test splits).
CONFIT_CONFIGS = ("20k", "500k", "2m")
#: clip lengths cycled through, in seconds: AudioSet clips are up to 10 s, many shorter.
CLIP_SECONDS = (4.0, 3.1, 2.2, 1.3, 0.6)


def urbansound_clips(urbansound_dir: PathLike, fold: int, count: int, *, offset: int = 0) -> List[dict]:
    """``count`` clips of one UrbanSound8K fold (after skipping ``offset``), spread over the ten classes.

    Each is ``{"id", "file", "mids", "names", "indices"}``; ``indices`` are AudioSet class indices
    (``class_map.csv``).
    """
    root = Path(urbansound_dir)
    with open(root / "class_map.csv", newline="") as handle:
        indices = {row["us8k_class"]: [int(i) for i in row["audioset_indices"].split(";")] for row in csv.DictReader(handle)}
    with open(root / "metadata.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["fold"]) == fold]
    by_class: Dict[str, list] = {}
    for row in sorted(rows, key=lambda r: r["slice_file_name"]):
        by_class.setdefault(row["class"], []).append(row)
    # round-robin over the classes, so that every class appears in a small replica
    order = [row for group in zip(*by_class.values()) for row in group]
    chosen = order[offset : offset + count]
    if len(chosen) < count:
        raise ValueError(f"fold {fold} of {root} has only {len(order) - offset} clips after offset {offset}, {count} wanted")
    return [
        {
            "id": Path(row["slice_file_name"]).stem,
            "file": root / row["file"],
            "mids": row["audioset_mids"].split(";"),
            "names": row["audioset_names"].split(";"),
            "indices": indices[row["class"]],
        }
        for row in chosen
    ]


def _audio(clip: dict, number: int, sampling_rate: int, *, stereo: bool, lengths: Sequence[float] = CLIP_SECONDS) -> np.ndarray:
    """The clip resampled to ``sampling_rate``, cut (or looped) to its length of ``lengths``, (frames[, 2])."""
    import soundfile
    import soxr

    waveform, rate = soundfile.read(clip["file"], dtype="float32")
    waveform = soxr.resample(waveform, rate, sampling_rate)
    waveform = np.resize(waveform, int(lengths[number % len(lengths)] * sampling_rate))  # loops a shorter clip
    if stereo:  # a second channel that differs: delayed and quieter
        waveform = np.stack([waveform, 0.8 * np.roll(waveform, 37)], axis=1)
    return np.clip(waveform, -1.0, 1.0).astype(np.float32)


def _encode(waveform: np.ndarray, sampling_rate: int, fmt: str, subtype: str) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, waveform, sampling_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


#: agkphysics/AudioSet's configs: split name -> folder under data/ (its README.md declares them so)
AGKPHYSICS_CONFIGS = {
    "balanced": {"train": "bal_train", "test": "eval"},
    "unbalanced": {"train": "unbal_train", "test": "eval"},
    "full": {"bal_train": "bal_train", "unbal_train": "unbal_train", "eval": "eval"},
}
_FEATURES_YAML = """  features:
  - name: video_id
    dtype: string
  - name: audio
    dtype: audio
  - name: labels
    sequence: string
  - name: human_labels
    sequence: string
"""


def _agkphysics_card(out: Path, clips: Dict[str, int]) -> str:
    """The card's YAML: the configs (and, as on the Hub, split sizes for balanced and unbalanced) of the written folders."""
    configs, infos = [], []
    for config, splits in AGKPHYSICS_CONFIGS.items():
        present = {split: folder for split, folder in splits.items() if folder in clips}
        if not present:
            continue
        configs.append(f"- config_name: {config}" + ("\n  default: true" if config == "balanced" else "") + "\n  data_files:")
        configs += [f"  - split: {split}\n    path: data/{folder}/*.parquet" for split, folder in present.items()]
        if config != "full":
            infos.append(f"- config_name: {config}\n{_FEATURES_YAML}  splits:")
            for split, folder in present.items():
                size = sum(path.stat().st_size for path in (out / "data" / folder).glob("*.parquet"))
                infos.append(f"  - name: {split}\n    num_bytes: {size}\n    num_examples: {clips[folder]}")
    return "\n".join(
        ["---", "license: cc-by-nc-4.0", "task_categories:", "- audio-classification", "tags:", "- audio", "configs:"]
        + configs + ["dataset_info:"] + infos + ["---", ""]
    ) + (
        "# AudioSet replica (agkphysics/AudioSet layout)\n\nA small local replica for tests: real UrbanSound8K clips "
        "(CC BY-NC 3.0; not for publication) in the layout of `agkphysics/AudioSet`, with AudioSet labels of their class.\n"
    )


def write_agkphysics_replica(
    out: PathLike,
    urbansound_dir: PathLike,
    *,
    clips: Optional[Dict[str, int]] = None,
    rows_per_shard: int = 8,
    row_group_size: int = 4,
    lengths: Sequence[float] = CLIP_SECONDS,
) -> Path:
    """Write the replica (see the module docstring) to ``out``; ``clips``: clips per split folder; ``lengths``:
    the clip lengths cycled through, in seconds (10 s for AudioSet-like clips: shorter originals are looped)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Audio, Features, List, Value

    clips = dict(clips or {"bal_train": 16, "unbal_train": 24, "eval": 12})
    features = Features({"video_id": Value("string"), "audio": Audio(), "labels": List(Value("string")), "human_labels": List(Value("string"))})
    out = Path(out)
    offsets = {}
    for split, count in clips.items():
        fold = AGKPHYSICS_SPLITS[split]
        chosen = urbansound_clips(urbansound_dir, fold, count, offset=offsets.get(fold, 0))
        offsets[fold] = offsets.get(fold, 0) + count  # bal_train and unbal_train take different clips
        rows = []
        for number, clip in enumerate(chosen):
            rate = 44100 if number % 10 == 9 else 48000
            waveform = _audio(clip, number, rate, stereo=number % 7 != 6, lengths=lengths)
            rows.append({
                "video_id": clip["id"],
                "audio": {"bytes": _encode(waveform, rate, "FLAC", "PCM_24"), "path": f"audio/{split}/{clip['id']}.flac"},
                "labels": clip["mids"],
                "human_labels": clip["names"],
            })
        folder = out / "data" / split
        folder.mkdir(parents=True, exist_ok=True)
        for shard, start in enumerate(range(0, len(rows), rows_per_shard)):
            table = pa.Table.from_pylist(rows[start : start + rows_per_shard], schema=features.arrow_schema)
            pq.write_table(table, folder / f"{shard:05d}.parquet", row_group_size=row_group_size)
    (out / "README.md").write_text(_agkphysics_card(out, clips))
    return out


def _confit_card(configs: Sequence[str], splits: Sequence[str]) -> str:
    lines = ["---", "configs:"]
    for config in configs:
        lines += [f"- config_name: {config}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {config}/{split}/*.tar" for split in splits]
    lines += ["task_categories:", "- audio-classification", "tags:", "- audio", "- multi-label", "- webdataset", "---", ""]
    return "\n".join(lines) + (
        "# AudioSet replica (confit/audioset-16khz-wds layout)\n\nA small local replica for tests: real UrbanSound8K "
        "clips (CC BY-NC 3.0; not for publication) as 16 kHz WebDataset shards with AudioSet labels of their class.\n"
    )


def _add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_confit_replica(
    out: PathLike,
    urbansound_dir: PathLike,
    *,
    clips: Optional[Dict[str, int]] = None,
    configs: Sequence[str] = CONFIT_CONFIGS,
    rows_per_shard: int = 8,
    audio_format: str = "wav",
    lengths: Sequence[float] = CLIP_SECONDS,
) -> Path:
    """Write the replica (see the module docstring) to ``out``; ``clips``: clips per split (train, test).

    Every config gets the same clips; ``audio_format`` is ``"wav"`` (16-bit PCM) or ``"flac"``.
    """
    if audio_format not in ("wav", "flac"):
        raise ValueError(f"audio_format must be 'wav' or 'flac', got {audio_format!r}")
    clips = dict(clips or {"train": 24, "test": 12})
    out = Path(out)
    samples = {}
    for split, count in clips.items():
        chosen = urbansound_clips(urbansound_dir, 10 if split == "test" else 2, count)
        samples[split] = [
            (
                _encode(_audio(clip, number, 16000, stereo=False, lengths=lengths), 16000, audio_format.upper(), "PCM_16"),
                json.dumps({"id": clip["id"], "label": clip["names"], "label_id": clip["indices"]}).encode(),
            )
            for number, clip in enumerate(chosen)
        ]
    for config in configs:
        for split, rows in samples.items():
            folder = out / config / split
            folder.mkdir(parents=True, exist_ok=True)
            for shard, start in enumerate(range(0, len(rows), rows_per_shard)):
                with tarfile.open(folder / f"shard-{shard:05d}.tar", "w", format=tarfile.USTAR_FORMAT) as archive:
                    for number, (audio, metadata) in enumerate(rows[start : start + rows_per_shard], start):
                        key = f"sample-{number:09d}"
                        _add_member(archive, f"{key}.{audio_format}", audio)
                        _add_member(archive, f"{key}.json", metadata)
    (out / "README.md").write_text(_confit_card(configs, list(clips)))
    return out
