"""AudioSet as a ``datasets.DatasetDict``: the segment lists with labels (and HLP labels) and audio file paths.

>>> ds = load_audioset(["eval"], hlp=True)["eval"]                         # doctest: +SKIP

:func:`load_audioset` reads the segment CSVs (:mod:`hlp_audio.audioset`) into in-memory datasets
with ``labels`` (and ``hlp_labels``) as ``List(ClassLabel)``; with ``audio_dir`` it matches clips to
files named ``<YTID>*.{wav,flac,ogg,mp3}`` (:func:`find_audio_files`) and reports what is missing.
This module imports ``datasets`` only where it builds ``datasets`` objects.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .audioset import Segments, load_segments, split_names
from .ontology import Ontology
from .propagation import propagate_labels

__all__ = [
    "AUDIO_EXTENSIONS",
    "audioset_features",
    "segments_to_dataset",
    "load_audioset",
    "find_audio_files",
    "AudioMatchError",
    "MissingAudioWarning",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Audio file extensions matched by :func:`find_audio_files`, in order of preference when one
#: clip is stored in several formats (same name, different extension).
AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "mp3")

#: AudioSet YouTube ids are always 11 characters from this alphabet.
_YTID_LENGTH = 11
_YTID_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

def audioset_features(ontology: Ontology, *, hlp: bool = False, audio: bool = False):
    """``datasets.Features`` of :func:`load_audioset`'s splits."""
    from datasets import ClassLabel, Features, List, Value

    labels = List(ClassLabel(names=list(ontology.names)))
    features = {
        "ytid": Value("string"),
        "start_seconds": Value("float64"),
        "end_seconds": Value("float64"),
        "labels": labels,
    }
    if hlp:
        features["hlp_labels"] = labels
    if audio:
        features["audio"] = Value("string")
    return Features(features)


_AUDIOSET_CITATION = """@inproceedings{gemmeke2017audioset,
  title = {Audio Set: An ontology and human-labeled dataset for audio events},
  author = {Gemmeke, Jort F. and Ellis, Daniel P. W. and Freedman, Dylan and Jansen, Aren and
            Lawrence, Wade and Moore, R. Channing and Plakal, Manoj and Ritter, Marvin},
  booktitle = {Proc. IEEE ICASSP},
  year = {2017}
}"""


def segments_to_dataset(
    segments: Segments,
    ontology: Ontology,
    *,
    hlp: bool = False,
    split: Optional[str] = None,
    audio: Optional[pa.Array] = None,
    note: Optional[str] = None,
):
    """One AudioSet split (from :func:`hlp_audio.load_segments`) as an in-memory ``datasets.Dataset``.

    ``labels`` (and ``hlp_labels`` when ``hlp``) are ``List(ClassLabel)`` over the ontology's
    display names in class-index order; ``hlp_labels`` is :func:`hlp_audio.propagate_labels` of
    ``labels``. ``audio`` (one path or null per segment) becomes the ``audio`` column; ``note``
    is appended to the description.
    """
    from datasets import Dataset, DatasetInfo, NamedSplit

    features = audioset_features(ontology, hlp=hlp, audio=audio is not None)
    labels = segments.labels.cast(pa.list_(pa.int64()))
    columns = {
        "ytid": segments.ytid.cast(pa.string()),
        "start_seconds": pa.array(segments.start_seconds, pa.float64()),
        "end_seconds": pa.array(segments.end_seconds, pa.float64()),
        "labels": labels,
    }
    if hlp:
        columns["hlp_labels"] = propagate_labels(labels, ontology)
    if audio is not None:
        if len(audio) != len(segments):
            raise ValueError(f"{len(audio)} audio paths for {len(segments)} segments")
        columns["audio"] = audio
    table = pa.table(columns).cast(features.arrow_schema)
    source = os.path.basename(segments.source) if segments.source else "AudioSet segments"
    info = DatasetInfo(
        description=f"AudioSet v1 segments from {source}"
        + (", with Hierarchical Label Propagation labels (hlp_labels)" if hlp else "")
        + (f". {note}." if note else ""),
        citation=_AUDIOSET_CITATION,
        homepage="https://research.google.com/audioset/",
        license="AudioSet labels: CC BY 4.0 (Google); ontology: CC BY-SA 4.0 (Google)",
        features=features,
    )
    return Dataset(table, info=info, split=NamedSplit(split) if split else None)


class AudioMatchError(ValueError):
    """Audio files that cannot be matched to AudioSet clips unambiguously (or at all)."""


class MissingAudioWarning(UserWarning):
    """Some AudioSet clips have no audio file in ``audio_dir``."""


def _index_audio_dir(audio_dir: Path, extensions: Sequence[str]) -> Tuple[Dict[str, List[str]], int]:
    """YTID -> audio file paths under ``audio_dir`` (recursively), and the count of unmatched names.

    A file belongs to YTID ``Y`` when its name is ``Y`` (11 characters) followed by the extension
    or by a character that cannot continue a YouTube id (``_`` is a common separator and is
    accepted: ids are exactly 11 characters, so ``Y_30.000.wav`` is unambiguous).
    """
    by_ytid: Dict[str, List[str]] = {}
    suffixes = {"." + ext.lower().lstrip(".") for ext in extensions}
    unmatched = 0
    for root, dirs, files in os.walk(audio_dir):
        dirs.sort()
        for name in sorted(files):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in suffixes:
                continue
            ytid, rest = stem[:_YTID_LENGTH], stem[_YTID_LENGTH:]
            if (
                len(ytid) != _YTID_LENGTH
                or not set(ytid) <= _YTID_CHARACTERS
                or (rest and (rest[0].isalnum() or rest[0] == "-"))
            ):
                unmatched += 1
                continue
            by_ytid.setdefault(ytid, []).append(os.path.join(root, name))
    return by_ytid, unmatched


def _choose_audio_file(ytid: str, paths: List[str], extensions: Sequence[str]) -> str:
    """One file per clip: the same name in several formats is fine (preferred extension wins)."""
    if len(paths) == 1:
        return paths[0]
    stems = {os.path.splitext(path)[0] for path in paths}
    if len(stems) > 1:
        raise AudioMatchError(
            f"clip {ytid} matches {len(paths)} different audio files: {sorted(paths)[:5]}; "
            "keep one file per clip (or the same name in several formats)"
        )
    preference = {"." + ext.lower().lstrip("."): rank for rank, ext in enumerate(extensions)}
    return min(paths, key=lambda path: preference[os.path.splitext(path)[1].lower()])


def find_audio_files(
    ytids: Union[Sequence[str], pa.Array, pa.ChunkedArray],
    audio_dir: PathLike,
    *,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
) -> pa.Array:
    """The audio file of each YTID under ``audio_dir`` (a string array, null where missing).

    Files are matched as ``<YTID>*.{wav,flac,ogg,mp3}`` on the exact 11-character id (see
    :func:`load_audioset`). Two different files for one requested clip raise
    :class:`AudioMatchError`; the same name with two extensions picks the first of ``extensions``.
    """
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise AudioMatchError(f"audio_dir={audio_dir} is not a directory")
    by_ytid, unmatched = _index_audio_dir(audio_dir, extensions)
    if not isinstance(ytids, (pa.Array, pa.ChunkedArray)):
        ytids = pa.array(list(ytids), pa.string())
    known = list(by_ytid)
    position = pc.index_in(ytids, value_set=pa.array(known, pa.string()))
    chosen = [paths[0] for paths in by_ytid.values()]
    file_count = np.array([len(paths) for paths in by_ytid.values()], dtype=np.int64)
    requested = np.unique(position.drop_null().to_numpy(zero_copy_only=False)).astype(np.int64)
    for i in requested[file_count[requested] > 1] if len(known) else ():  # only clips with several files
        chosen[i] = _choose_audio_file(known[i], by_ytid[known[i]], extensions)
    result = pa.array(chosen, pa.string()).take(position)
    if unmatched and result.null_count == len(result):
        warnings.warn(
            f"{unmatched} audio files in {audio_dir} are not named <YTID>.<ext> or <YTID>_<anything>.<ext> "
            "with an 11-character YouTube id",
            MissingAudioWarning,
            stacklevel=2,
        )
    return result


def _filter_segments(segments: Segments, keep: np.ndarray) -> Segments:
    mask = pa.array(keep, pa.bool_())
    return Segments(
        ytid=segments.ytid.filter(mask),
        start_seconds=segments.start_seconds[keep],
        end_seconds=segments.end_seconds[keep],
        labels=segments.labels.filter(mask),
        source=segments.source,
    )


def load_audioset(
    splits: Optional[Union[str, Sequence[str]]] = None,
    audioset_dir: Optional[PathLike] = None,
    hlp: bool = False,
    audio_dir: Optional[PathLike] = None,
    *,
    ontology: Optional[Ontology] = None,
    missing: str = "drop",
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    verify: bool = True,
):
    """AudioSet's segment lists as a ``datasets.DatasetDict`` (one in-memory ``Dataset`` per split).

    Args:
        splits: ``"balanced_train"``, ``"eval"``, ``"unbalanced_train"``, a list of them, or None
            (all three).
        audioset_dir: where the AudioSet metadata files are (see :func:`hlp_audio.resolve_file`:
            else ``$HLP_AUDIOSET_DIR``, else a verified download into the cache).
        hlp: add ``hlp_labels``, the labels after Hierarchical Label Propagation.
        audio_dir: a folder holding the clips, named ``<YTID>.<ext>`` or ``<YTID>_<anything>.<ext>``
            with ``ext`` in ``wav, flac, ogg, mp3`` (searched recursively): adds an ``audio``
            column of file paths. Audio stays a path (``datasets.Audio`` needs torchcodec); decode
            it with ``soundfile``.
        ontology: the :class:`~hlp_audio.Ontology` (default: AudioSet's, from ``audioset_dir``).
        missing: what to do with clips that have no file in ``audio_dir``: ``"drop"`` them
            (default), ``"keep"`` them with ``audio=None``, or ``"raise"``. Dropping and keeping
            warn with :class:`MissingAudioWarning` (count and first ids); the drop is also
            written to the split's ``info.description``.
        verify: check the official metadata files against their pinned sha256 (``False`` reads
            edited copies; see :mod:`hlp_audio.audioset`).

    Columns: ``ytid`` (string), ``start_seconds``, ``end_seconds`` (float64), ``labels``
    (``List(ClassLabel)`` over the 527 display names in class-index order), then ``hlp_labels``
    and ``audio`` when asked for.
    """
    from datasets import DatasetDict

    if missing not in ("drop", "keep", "raise"):
        raise ValueError(f"missing must be 'drop', 'keep' or 'raise', got {missing!r}")
    splits = split_names(splits)
    if ontology is None:
        ontology = Ontology.from_audioset(audioset_dir=audioset_dir, verify=verify)
    segments = load_segments(splits, ontology, audioset_dir=audioset_dir, verify=verify)
    if audio_dir is None:
        return DatasetDict(
            {split: segments_to_dataset(segments[split], ontology, hlp=hlp, split=split) for split in splits}
        )

    # One walk of audio_dir for all splits, then cut the answer back into splits.
    found = find_audio_files(
        pa.concat_arrays([segments[split].ytid for split in splits]), audio_dir, extensions=extensions
    )
    audio, start = {}, 0
    for split in splits:
        audio[split] = found.slice(start, len(segments[split]))
        start += len(segments[split])
    if len(found) and found.null_count == len(found):
        raise AudioMatchError(
            f"no audio file in {audio_dir} matches a clip of {splits}; files must be named "
            f"<YTID>.<ext> or <YTID>_<anything>.<ext> with ext in {list(extensions)}"
        )
    result = {}
    for split in splits:
        split_segments, paths, note = segments[split], audio[split], None
        if paths.null_count:
            lacking = split_segments.ytid.filter(paths.is_null())
            message = (
                f"{len(lacking)} of {len(paths)} clips of split {split!r} have no audio file in {audio_dir} "
                f"(first: {', '.join(lacking.slice(0, 5).to_pylist())})"
            )
            if missing == "raise":
                raise AudioMatchError(message + "; pass missing='drop' or missing='keep' to go on without them")
            if missing == "drop":
                keep = paths.is_valid().to_numpy(zero_copy_only=False)
                split_segments, paths = _filter_segments(split_segments, keep), paths.filter(keep)
                note = message + "; they were dropped"
            outcome = "dropped (missing='drop')" if missing == "drop" else "kept with audio=None (missing='keep')"
            warnings.warn(f"{message}; {outcome}", MissingAudioWarning, stacklevel=2)
        result[split] = segments_to_dataset(split_segments, ontology, hlp=hlp, split=split, audio=paths, note=note)
    return DatasetDict(result)
