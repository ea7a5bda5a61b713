"""Checking the audio of a manifest before training starts, so that a bad clip fails the run in minutes, not hours in.

Loose files: each one exists, is not empty and its header reads (``soundfile.info``) with at least
one sample. Encoded files in a column (``Audio`` structs, binary): each row has bytes (or a path to a
file, checked as above) and the header in its first 64 KiB reads with at least one sample: cheap (the
rest of each clip is not read) and it catches what usually goes wrong (empty or missing blobs,
something that is not audio, clips of zero length). Headers are read by a pool of threads.

:func:`audio_problems` lists the problems; :func:`checked_manifest` raises an error naming the source,
the count and the first rows, or with ``skip`` leaves those clips out and reports each one.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import pyarrow as pa

from .columns import SourceError
from .manifests import Manifest
from .skipped import write_skipped

__all__ = ["audio_problems", "checked_manifest", "HEADER_BYTES"]

#: The bytes of an encoded clip that the check reads (FLAC, WAV and Ogg headers fit).
HEADER_BYTES = 1 << 16


def _header_problem(source) -> Optional[str]:
    """What is wrong with the file (a path, or the first bytes of one), or None."""
    import soundfile

    if source is None:
        return "no audio (null: neither bytes nor a path)"
    if isinstance(source, str):
        if not os.path.isfile(source):
            return f"audio file not found: {source}"
        if os.path.getsize(source) == 0:
            return f"{source} is empty (0 bytes)"
        name, handle = source, source
    else:
        if len(source) == 0:
            return "the audio bytes are empty"
        name, handle = f"<{len(source)} bytes of audio>", io.BytesIO(source)
    try:
        info = soundfile.info(handle)
    except (RuntimeError, TypeError, soundfile.SoundFileError) as err:
        return f"cannot read the header of {name}: {err}"
    if info.frames == 0:
        return f"{name} is a zero-length clip (no samples)"
    return None


def audio_problems(manifest: Manifest, *, threads: int = 8) -> List[Tuple[int, str]]:
    """``(row, what is wrong)`` for every clip of ``manifest`` that cannot be used, in row order."""
    if isinstance(manifest.audio, pa.Array):
        paths = manifest.audio.to_pylist()

        def read(row):
            return _header_problem(paths[row])
    else:
        column = manifest.audio

        def read(row):
            return _header_problem(column.head(row, HEADER_BYTES))
    rows = range(len(manifest))
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        found = list(pool.map(read, rows, chunksize=256))
    return [(row, problem) for row, problem in zip(rows, found) if problem is not None]


def checked_manifest(
    manifest: Manifest,
    *,
    problems: Optional[List[Tuple[int, str]]] = None,
    skip: bool = False,
    report: Optional[Path] = None,
    threads: int = 8,
    log=print,
) -> Manifest:
    """``manifest`` after :func:`audio_problems` (or the ``problems`` found already): an error listing them, or
    with ``skip`` the manifest without those clips, each one logged and, with ``report``, written there as JSON lines."""
    if problems is None:
        problems = audio_problems(manifest, threads=threads)
    if not problems:
        return manifest
    listed = "; ".join(f"{manifest.clip_name(row)}: {problem}" for row, problem in problems[:10])
    summary = f"{manifest.source}: {len(problems)} of {len(manifest)} clips cannot be used"
    if not skip:
        raise SourceError(
            f"{summary} (first: {listed}); fix the data, or pass --skip-bad-audio to leave them out "
            "(each is then listed in OUTPUT_DIR/skipped_clips.jsonl)"
        )
    for row, problem in problems:
        log(f"skipping {manifest.source}, {manifest.clip_name(row)}: {problem}")
    if report is not None:
        write_skipped(report, "audio check", [(f"{manifest.source}, {manifest.clip_name(row)}", problem) for row, problem in problems])
    log(f"{summary}: skipped (--skip-bad-audio)")
    bad = np.array([row for row, _ in problems], dtype=np.int64)
    return manifest.select(np.setdiff1d(np.arange(len(manifest)), bad))
