"""Rewrite a split once at a model's rate, in a form that is cheap to decode: mono 16-bit WAV bytes in Arrow.

Decoding AudioSet's 48 kHz 24-bit stereo FLAC and resampling it costs ~28 ms a clip on one core: a
16-core host then feeds ~500 clips/s, far below what a small model trains at on a large GPU (see
``scripts/bench_data.py``). :func:`prepare_split` decodes every clip of a source once (in DataLoader
workers: downmix, resample with soxr) and writes it as a 16-bit mono WAV at the target rate into a
``save_to_disk`` folder (columns ``video_id``, ``audio`` (an ``Audio`` struct: WAV bytes and
``<id>.wav``), ``labels`` (class ids)). Training reads that folder memory-mapped; a clip then costs a
WAV parse (~1 ms for 10 s at 32 kHz) instead of a FLAC decode and a resampling, through the same code
path as any other bytes. Disk: 2 bytes per sample, 640 KB per 10 s clip at 32 kHz, ~1.3 TB for the
2,063,949 clips of AudioSet's training splits (0.66 TB at 16 kHz), against ~2.4 TB for the FLAC copy.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Union

import numpy as np
import pyarrow as pa
import torch

from .clips import AudioClipDataset
from .manifests import Manifest
from .streaming import ClipStream

__all__ = ["prepare_split", "prepared_features"]

PathLike = Union[str, "os.PathLike[str]"]


def prepared_features(sampling_rate: int):
    from datasets import Audio, Features, List, Value

    return Features({"video_id": Value("string"), "audio": Audio(sampling_rate=sampling_rate), "labels": List(Value("string"))})


class _Encoded(torch.utils.data.IterableDataset):
    """Whole clips of a source as ``{id, wav bytes, class ids}`` (or a skipped entry), encoded in the workers."""

    def __init__(self, clips, class_ids, sampling_rate: int):
        self.clips, self.class_ids, self.sampling_rate = clips, class_ids, sampling_rate

    def __iter__(self):
        import soundfile

        info = torch.utils.data.get_worker_info()
        if isinstance(self.clips, torch.utils.data.IterableDataset):
            items = iter(self.clips)  # a stream splits itself over the workers
        else:
            workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
            items = (self.clips[row] for row in range(worker, len(self.clips), workers))
        for item in items:
            if "skipped" in item:
                yield {"skipped": item["skipped"]}
                continue
            buffer = io.BytesIO()
            soundfile.write(buffer, item["waveform"].numpy(), self.sampling_rate, format="WAV", subtype="PCM_16")
            labels = [self.class_ids[i] for i in np.flatnonzero(item["labels"].numpy())]
            yield {"video_id": item["id"], "wav": buffer.getvalue(), "labels": labels}


def prepare_split(
    source,
    ontology,
    out: PathLike,
    *,
    sampling_rate: int,
    num_workers: int = 0,
    rows_per_file: int = 2048,
    skip_bad_audio: bool = False,
    log=print,
) -> dict:
    """Write every clip of ``source`` (a :class:`Manifest` or :class:`StreamSource`) to ``out`` (see the module docstring).

    Returns ``{"clips", "skipped", "bytes", "files"}``. ``out`` must not exist; it is written as
    ``out`` + ``.partial`` and renamed at the end, so that a folder that exists is complete.
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists: prepare into a new folder")
    if isinstance(source, Manifest):
        clips = AudioClipDataset(source, sampling_rate=sampling_rate, clip_seconds=None, skip_bad_audio=skip_bad_audio)
        where = source.source
    else:
        clips = ClipStream(source, ontology, sampling_rate=sampling_rate, clip_seconds=None, skip_bad_audio=skip_bad_audio)
        where = source.where
    loader = torch.utils.data.DataLoader(
        _Encoded(clips, list(ontology.labels), sampling_rate), batch_size=None, num_workers=num_workers
    )
    features = prepared_features(sampling_rate)
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True)
    files, rows, counts = [], [], {"clips": 0, "skipped": 0, "bytes": 0}

    def flush():
        if not rows:
            return
        name = f"data-{len(files):05d}.arrow"
        table = pa.Table.from_pylist(rows, schema=features.arrow_schema)
        with pa.OSFile(str(partial / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        files.append(name)
        counts["bytes"] += (partial / name).stat().st_size
        rows.clear()

    for item in loader:
        if "skipped" in item:
            counts["skipped"] += 1
            log(f"skipped {item['skipped'][0]}: {item['skipped'][1]}")
            continue
        rows.append({"video_id": item["video_id"], "audio": {"bytes": item["wav"], "path": f"{item['video_id']}.wav"}, "labels": item["labels"]})
        counts["clips"] += 1
        if len(rows) == rows_per_file:
            flush()
    flush()
    if not files:
        partial.rmdir()
        raise ValueError(f"{where}: no clip to prepare ({counts['skipped']} skipped)")
    _write_dataset_files(partial, files, features, f"{where} at {sampling_rate} Hz, mono 16-bit WAV (hlp-audio prepare)")
    partial.rename(out)
    return {**counts, "files": len(files)}


def _write_dataset_files(folder: Path, files, features, description: str) -> None:
    """The two files that make Arrow files a ``save_to_disk`` folder (``datasets.load_from_disk`` reads it)."""
    from datasets import DatasetInfo

    DatasetInfo(description=description, features=features).write_to_directory(str(folder))
    state = {
        "_data_files": [{"filename": name} for name in files],
        "_fingerprint": os.urandom(8).hex(),
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    (folder / "state.json").write_text(json.dumps(state, indent=2))
