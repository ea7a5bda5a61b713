"""Small AudioSet replicas (real UrbanSound8K audio) in the layouts of the Hub copies, and ways to damage them."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hlp_audio.audioset_replicas import write_agkphysics_replica, write_confit_replica

#: clips per split: small, several shards each (rows_per_shard 4), mixed lengths and rates
AGK_CLIPS = {"bal_train": 12, "unbal_train": 8, "eval": 8}
CONFIT_CLIPS = {"train": 12, "test": 8}


def write_replicas(folder: Path, shared_data: Path) -> dict:
    urbansound = shared_data / "urbansound8k"
    agk = write_agkphysics_replica(folder / "agkphysics", urbansound, clips=AGK_CLIPS, rows_per_shard=4, row_group_size=2)
    confit = write_confit_replica(folder / "confit", urbansound, clips=CONFIT_CLIPS, rows_per_shard=4, configs=("20k", "2m"))
    return {"agkphysics": agk, "confit": confit, "urbansound": urbansound}


def copy_replica(replica: Path, to: Path) -> Path:
    shutil.copytree(replica, to)
    return to


def rewrite_row(shard: Path, row: int, **values) -> None:
    """Replace columns of one row of a parquet shard (``audio`` given as bytes or None, ``labels`` as a list or None)."""
    table = pq.read_table(shard)
    rows = table.to_pylist()
    for column, value in values.items():
        if column == "audio" and value is not None:
            value = {"bytes": value, "path": rows[row]["audio"]["path"]}
        rows[row][column] = value
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)


def zero_length_wav() -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros((0, 2), np.float32), 48000, format="WAV", subtype="PCM_24")
    return buffer.getvalue()


def garbled_flac() -> bytes:
    """A FLAC whose header reads but whose frames do not decode."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.random.default_rng(0).standard_normal((4800, 2)).astype(np.float32) * 0.1, 48000, format="FLAC", subtype="PCM_24")
    data = bytearray(buffer.getvalue())
    data[2000:] = np.random.default_rng(1).integers(0, 256, len(data) - 2000, dtype=np.uint8).tobytes()
    return bytes(data)
