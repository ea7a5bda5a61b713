"""AudioSet metadata: where the files come from, and readers for them.

Source resolution, in order: an explicit path; the ``audioset_dir`` argument; the
``HLP_AUDIOSET_DIR`` environment variable; the cache (``$HLP_AUDIOSET_CACHE``, default
``~/.cache/hlp_audio/audioset``), filled on first use by a download from the official locations
checked against pinned sha256 values.

Wherever they come from, the readers check the official files (by name: ``ontology.json``,
``class_labels_indices.csv``, the three segment lists) against the same pinned sha256 values, so
that a file cut in half or edited is an error rather than a smaller ontology or split; pass
``verify=False`` (``--no-verify`` on the command line) to read an edited copy on purpose. Every
file also gets structural checks (a segment list must hold the ``num_segs`` rows its header
announces). The three readers agree on text: UTF-8 with or without a byte-order mark, and LF,
CRLF or CR line endings.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .labels import LabelEncoder, LabelError

__all__ = [
    "AUDIOSET_FILES",
    "SPLITS",
    "AudioSetFile",
    "AudioSetFileError",
    "Segments",
    "resolve_file",
    "read_ontology_json",
    "read_class_labels",
    "read_segments",
    "load_segments",
    "split_names",
    "read_text",
    "official_name",
]

PathLike = Union[str, "os.PathLike[str]"]

ENV_DIR = "HLP_AUDIOSET_DIR"
ENV_CACHE = "HLP_AUDIOSET_CACHE"

_CSV_BASE = "http://storage.googleapis.com/us_ouraudioset/youtube_corpus/v1/csv/"


@dataclass(frozen=True)
class AudioSetFile:
    name: str
    url: str
    sha256: str  # of the uncompressed file
    size: int


AUDIOSET_FILES: Dict[str, AudioSetFile] = {
    f.name: f
    for f in (
        AudioSetFile(
            "ontology.json",
            "https://raw.githubusercontent.com/audioset/ontology/master/ontology.json",
            "9c685f4403eecc3ca9be37fd7285cf212feaaea6ff7229d3e7ca89e0d1f2d15d",
            342_780,
        ),
        AudioSetFile(
            "class_labels_indices.csv",
            _CSV_BASE + "class_labels_indices.csv",
            "cdd1049833c4b86127c2773ac0d14a2754b6a6d0d1798002ed5c66e699708429",
            14_675,
        ),
        AudioSetFile(
            "balanced_train_segments.csv",
            _CSV_BASE + "balanced_train_segments.csv",
            "3b83e5ff9ed72cfda37d4e36ce08250e107c1ea70f109f6ab6668ac200db5e94",
            1_211_931,
        ),
        AudioSetFile(
            "eval_segments.csv",
            _CSV_BASE + "eval_segments.csv",
            "f7055f53935f70e74e39494a5c8c4c78f1700fce275028bd36e31186f33d45db",
            1_143_389,
        ),
        AudioSetFile(
            "unbalanced_train_segments.csv",
            _CSV_BASE + "unbalanced_train_segments.csv",
            "bb2dfd5e4f1ced39db9480633c510f813d7899f4b7472aa83a411b4a43a12698",
            101_468_408,
        ),
    )
}

#: split name -> segment file name
SPLITS: Dict[str, str] = {
    "balanced_train": "balanced_train_segments.csv",
    "eval": "eval_segments.csv",
    "unbalanced_train": "unbalanced_train_segments.csv",
}


class AudioSetFileError(ValueError):
    """A missing, unreadable, malformed or corrupt AudioSet file."""


def _cache_dir() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hlp_audio" / "audioset"


def _in_directory(directory: Path, name: str) -> Optional[Path]:
    for candidate in (directory / name, directory / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def resolve_file(
    name: str,
    path: Optional[PathLike] = None,
    *,
    audioset_dir: Optional[PathLike] = None,
    cache_dir: Optional[PathLike] = None,
    download: bool = True,
    url: Optional[str] = None,
) -> Path:
    """Find one AudioSet file (``name`` as in :data:`AUDIOSET_FILES`), downloading it if needed.

    A ``.gz`` copy next to the plain name is accepted in directories. Downloads are written to a
    temporary file, checked against the pinned sha256 and only then moved into the cache.
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise AudioSetFileError(f"{name}: the given path {path} does not exist or is not a file")
        return path
    for directory, origin in ((audioset_dir, "audioset_dir"), (os.environ.get(ENV_DIR), ENV_DIR)):
        if directory:
            directory = Path(directory)
            if not directory.is_dir():
                raise AudioSetFileError(f"{origin}={directory} is not a directory")
            found = _in_directory(directory, name)
            if found is None:
                raise AudioSetFileError(
                    f"{name} (or {name}.gz) is not in {origin}={directory}; put the AudioSet files "
                    f"there or unset {origin} to download them"
                )
            return found
    if name not in AUDIOSET_FILES:
        raise AudioSetFileError(f"unknown AudioSet file {name!r}; known: {sorted(AUDIOSET_FILES)}")
    cache = Path(cache_dir) if cache_dir is not None else _cache_dir()
    cached = _in_directory(cache, name)
    if cached is not None:
        return cached
    if not download:
        raise AudioSetFileError(
            f"{name} is not in the cache {cache} and download=False; set {ENV_DIR} to a folder "
            f"that holds the AudioSet metadata files"
        )
    return _download(AUDIOSET_FILES[name], cache, url)


def _download(spec: AudioSetFile, cache: Path, url: Optional[str]) -> Path:
    url = url or spec.url
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / spec.name
    digest = hashlib.sha256()
    handle, tmp_name = tempfile.mkstemp(prefix=spec.name + ".", suffix=".part", dir=cache)
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    while True:
                        block = response.read(1 << 20)
                        if not block:
                            break
                        digest.update(block)
                        out.write(block)
            except (urllib.error.URLError, OSError) as err:
                raise AudioSetFileError(
                    f"could not download {spec.name} from {url} ({err}). Without network access, "
                    f"download the AudioSet metadata files elsewhere and set {ENV_DIR}=/path/to/dir "
                    f"(or pass audioset_dir=...)"
                ) from None
        got = digest.hexdigest()
        if got != spec.sha256:
            raise AudioSetFileError(
                f"checksum mismatch for {spec.name} downloaded from {url}: sha256 {got}, expected "
                f"{spec.sha256}. The file was not kept. Set {ENV_DIR} to a folder with verified copies."
            )
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def _read_bytes(path: PathLike) -> bytes:
    try:
        if str(path).endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                return handle.read()
        with open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise AudioSetFileError(f"{path}: cannot be read ({err})") from None


def official_name(path: PathLike) -> Optional[str]:
    """The name of the official AudioSet file ``path`` is a copy of (by its file name), or None."""
    name = os.path.basename(os.fspath(path))
    name = name[: -len(".gz")] if name.endswith(".gz") else name
    return name if name in AUDIOSET_FILES else None


def read_text(path: PathLike, *, verify: bool = True) -> str:
    """The text of a metadata file, checked and normalised: the one reader of the three formats.

    With ``verify`` an official file (by name) must have its pinned sha256. The text is UTF-8 (a
    byte-order mark is dropped) and its line endings become ``\n``.
    """
    data = _read_bytes(path)
    name = official_name(path)
    if verify and name is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != AUDIOSET_FILES[name].sha256:
            raise AudioSetFileError(
                f"{path}: sha256 {digest} differs from the official {name}'s ({AUDIOSET_FILES[name].sha256}): the "
                "file is cut, edited or damaged. Use the official file, or pass verify=False (--no-verify) to read "
                "an edited copy on purpose"
            )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise AudioSetFileError(f"{path}: not UTF-8 text ({err})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


# ---------------------------------------------------------------------------- ontology / labels
def read_ontology_json(path: PathLike, *, verify: bool = True) -> Dict[str, dict]:
    """Nodes of ``ontology.json`` by id, each with ``name``, ``child_ids`` and ``restrictions``."""
    try:
        data = json.loads(read_text(path, verify=verify))
    except json.JSONDecodeError as err:
        raise AudioSetFileError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    if not isinstance(data, list):
        raise AudioSetFileError(f"{path}: expected a JSON list of nodes, got {type(data).__name__}")
    nodes: Dict[str, dict] = {}
    for position, node in enumerate(data):
        if not isinstance(node, dict) or not isinstance(node.get("id"), str):
            raise AudioSetFileError(f"{path}: node #{position} has no string 'id': {str(node)[:80]}")
        child_ids = node.get("child_ids", [])
        if not isinstance(child_ids, list) or not all(isinstance(c, str) for c in child_ids):
            raise AudioSetFileError(f"{path}: node {node['id']!r} has a malformed 'child_ids': {child_ids!r}")
        if node["id"] in nodes:
            raise AudioSetFileError(f"{path}: duplicate node id {node['id']!r} (node #{position})")
        nodes[node["id"]] = {
            "name": str(node.get("name", node["id"])),
            "child_ids": list(child_ids),
            "restrictions": list(node.get("restrictions", [])),
        }
    return nodes


def read_class_labels(path: PathLike, *, verify: bool = True) -> Tuple[List[str], List[str], List[int]]:
    """``class_labels_indices.csv``: (mids, display names, file line of each) in index order."""
    text = read_text(path, verify=verify)
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        rows = list(reader)
    except csv.Error as err:  # e.g. a quote left open by a file cut in the middle of a row
        raise AudioSetFileError(f"{path}, line {reader.line_num}: malformed CSV ({err})") from None
    if not rows or [cell.strip() for cell in rows[0]] != ["index", "mid", "display_name"]:
        got = rows[0] if rows else "an empty file"
        raise AudioSetFileError(f"{path}, line 1: expected the header index,mid,display_name, got {got}")
    mids, names, lines = [], [], []
    seen: Dict[str, int] = {}
    for line_number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 3:
            raise AudioSetFileError(f"{path}, line {line_number}: expected 3 fields, got {len(row)}: {row}")
        index, mid, name = (cell.strip() for cell in row)
        if not index.isdigit() or int(index) != len(mids):
            raise AudioSetFileError(
                f"{path}, line {line_number}: index {index!r} out of sequence (expected {len(mids)})"
            )
        if mid in seen:
            raise AudioSetFileError(f"{path}, line {line_number}: label {mid!r} repeats line {seen[mid]}")
        seen[mid] = line_number
        mids.append(mid)
        names.append(name)
        lines.append(line_number)
    if not mids:
        raise AudioSetFileError(f"{path}: no labels")
    return mids, names, lines


# ---------------------------------------------------------------------------- segment CSVs
@dataclass
class Segments:
    """One AudioSet split: parallel columns, labels as an Arrow list array of class indices."""

    ytid: pa.Array
    start_seconds: np.ndarray
    end_seconds: np.ndarray
    labels: pa.ListArray
    source: str = ""

    def __len__(self) -> int:
        return len(self.ytid)

    @property
    def num_positive_labels(self) -> int:
        return len(self.labels.values)


def read_segments(path: PathLike, ontology, *, verify: bool = True) -> Segments:
    """Read a Google segment CSV (``.csv`` or ``.csv.gz``).

    Format: comment lines starting with ``#``, then ``YTID, start, end, "mid1,mid2"``. The parse is
    vectorised with Arrow compute kernels; on any malformed row the file and line are reported. A
    header ``num_segs=N`` must match the rows read, and a file without segments is an error.
    Labels are class ids (mids) of ``ontology`` (an :class:`~hlp_audio.Ontology`).
    """
    encoder = getattr(ontology, "label_encoder", None) or LabelEncoder(ontology)
    text = read_text(path, verify=verify)
    announced = re.search(r"^#.*\bnum_segs=(\d+)", text[:4096], re.MULTILINE)
    lines = pa.array(text.split("\n"))
    if len(lines) and lines[-1].as_py() == "":
        lines = lines.slice(0, len(lines) - 1)
    line_numbers = np.arange(1, len(lines) + 1)
    keep = pc.invert(pc.or_(pc.starts_with(lines, "#"), pc.equal(pc.utf8_trim_whitespace(lines), "")))
    rows = lines.filter(keep)
    line_numbers = line_numbers[np.asarray(keep.to_numpy(zero_copy_only=False), dtype=bool)]
    if not len(rows):
        raise AudioSetFileError(f"{path}: no segments (an empty or header-only file)")
    fields = pc.split_pattern(rows, ", ", max_splits=3)
    counts = pc.list_value_length(fields).to_numpy(zero_copy_only=False)
    if (counts != 4).any():
        bad = int(np.flatnonzero(counts != 4)[0])
        raise AudioSetFileError(
            f"{path}, line {line_numbers[bad]}: expected 4 fields 'YTID, start, end, \"labels\"', "
            f"got {counts[bad]}: {rows[bad].as_py()!r}"
        )
    ytid = pc.list_element(fields, 0)
    empty_ytid = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(ytid)), 0).to_numpy(zero_copy_only=False)
    if empty_ytid.any():
        bad = int(np.flatnonzero(empty_ytid)[0])
        raise AudioSetFileError(f"{path}, line {line_numbers[bad]}: empty YTID")
    start = _parse_seconds(path, fields, 1, line_numbers, rows)
    end = _parse_seconds(path, fields, 2, line_numbers, rows)
    raw_labels = pc.list_element(fields, 3)
    quoted = pc.and_(pc.starts_with(raw_labels, '"'), pc.ends_with(raw_labels, '"'))
    quoted_np = quoted.to_numpy(zero_copy_only=False).astype(bool) & (
        pc.utf8_length(raw_labels).to_numpy(zero_copy_only=False) >= 2
    )
    if not quoted_np.all():
        bad = int(np.flatnonzero(~quoted_np)[0])
        raise AudioSetFileError(
            f"{path}, line {line_numbers[bad]}: the label list must be double-quoted, got {raw_labels[bad].as_py()!r}"
        )
    inner = pc.utf8_slice_codeunits(raw_labels, 1, -1)
    mids = pc.split_pattern(inner, ",")
    mids = pa.ListArray.from_arrays(mids.offsets, pc.utf8_trim_whitespace(mids.values))
    try:
        offsets, values = encoder.to_indices(mids, "ids")
    except LabelError as err:
        raise AudioSetFileError(f"{path}, line {line_numbers[err.row]}: {err.detail}") from None
    labels = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values.astype(np.int32)))
    for values, what in ((start, "start"), (end, "end")):
        finite = np.isfinite(values)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise AudioSetFileError(f"{path}, line {line_numbers[bad]}: {what} time {values[bad]} is not a finite number")
    bad_span = end < start
    if bad_span.any():
        bad = int(np.flatnonzero(bad_span)[0])
        raise AudioSetFileError(f"{path}, line {line_numbers[bad]}: end {end[bad]} is before start {start[bad]}")
    if announced is not None and int(announced.group(1)) != len(rows):
        raise AudioSetFileError(
            f"{path}: the header announces num_segs={announced.group(1)} but the file holds {len(rows)} segments "
            "(a file cut short, or rows added)"
        )
    return Segments(ytid=ytid, start_seconds=start, end_seconds=end, labels=labels, source=str(path))


def _parse_seconds(path, fields, position, line_numbers, rows) -> np.ndarray:
    column = pc.utf8_trim_whitespace(pc.list_element(fields, position))
    try:
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, ValueError):
        for i, value in enumerate(column.to_pylist()):
            try:
                float(value)
            except (TypeError, ValueError):
                what = "start" if position == 1 else "end"
                raise AudioSetFileError(
                    f"{path}, line {line_numbers[i]}: {what} time {value!r} is not a number"
                ) from None
        raise


def split_names(splits: Optional[Union[str, Sequence[str]]]) -> List[str]:
    """The splits that ``splits`` names: one name, a list of names, or ``None`` (all three)."""
    return list(SPLITS) if splits is None else [splits] if isinstance(splits, str) else list(splits)


def load_segments(
    splits: Optional[Union[str, Sequence[str]]],
    ontology,
    *,
    audioset_dir: Optional[PathLike] = None,
    paths: Optional[Dict[str, PathLike]] = None,
    verify: bool = True,
) -> Dict[str, Segments]:
    """Read the segment CSVs of the named splits (one name, a list, or ``None``: all three) against an ontology."""
    splits = split_names(splits)
    paths = dict(paths or {})
    result = {}
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {list(SPLITS)}")
        file_path = resolve_file(SPLITS[split], paths.get(split), audioset_dir=audioset_dir)
        result[split] = read_segments(file_path, ontology, verify=verify)
    return result
