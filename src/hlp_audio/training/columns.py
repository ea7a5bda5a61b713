"""Which columns of a data set hold the audio, the labels and the clip ids, and reading audio from a column.

Hub copies of AudioSet name their columns differently: ``agkphysics/AudioSet`` has ``audio`` (an
``Audio`` struct of FLAC bytes and a path), ``labels`` (mids) and ``video_id``; WebDataset shards such as
``confit/audioset-16khz-wds`` have one column per file extension (``wav`` or ``flac``), a ``json``
struct (``id``, ``label``, ``label_id``) and ``__key__``. :func:`resolve_columns` finds them once, from
the column names and types: an explicit name must exist (dotted names reach into structs:
``json.label``); without one, ``audio`` / ``labels`` are used when present, else the one audio column
(an ``Audio`` feature or a file-extension name) and the ``labels`` or ``label`` field of a ``json`` struct.
Anything else is an error listing what the data holds.

:class:`AudioColumn` reads the encoded audio of one row (the bytes of a file, or a path when a row has
no bytes) from a ``datasets.Dataset`` (memory-mapped, pickled by reference to DataLoader workers) or a
pyarrow array.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..labels import HLPInputError

__all__ = [
    "AUDIO_FILE_EXTENSIONS",
    "ID_COLUMNS",
    "SourceError",
    "AudioColumn",
    "resolve_columns",
    "column_of",
    "feature_of",
    "is_audio_bytes_type",
    "audio_value",
]

#: Column names that WebDataset shards give to audio files (their extension).
AUDIO_FILE_EXTENSIONS = ("flac", "wav", "mp3", "ogg", "opus", "oga", "aiff", "aif", "au", "w64", "caf")

#: Columns that name a clip, in order of preference (YouTube id, WebDataset key, ...).
ID_COLUMNS = ("video_id", "ytid", "id", "json.id", "__key__")

#: Where labels are looked for when ``labels`` is absent (WebDataset metadata).
LABEL_FALLBACKS = ("json.labels", "json.label")


class SourceError(HLPInputError):
    """Data that cannot be used: a missing column, a bad shard, an undecodable or empty clip; names where."""


def _split_name(name: str) -> Tuple[str, Optional[str]]:
    head, _, field = name.partition(".")
    return head, (field or None)


def _struct_fields(arrow_type) -> list:
    return [arrow_type.field(i).name for i in range(arrow_type.num_fields)] if pa.types.is_struct(arrow_type) else []


def describe_columns(schema: pa.Schema) -> str:
    """``['audio', 'json' {id, label}, ...]``: the columns and, for structs, their fields."""
    parts = []
    for field in schema:
        inner = _struct_fields(field.type)
        parts.append(repr(field.name) + (" {" + ", ".join(inner) + "}" if inner and field.name != "audio" else ""))
    return "[" + ", ".join(parts) + "]"


def has_column(schema: pa.Schema, name: str) -> bool:
    head, field = _split_name(name)
    if head not in schema.names:
        return name in schema.names
    return field is None or field in _struct_fields(schema.field(head).type)


def column_of(table: pa.Table, name: str) -> pa.Array:
    """Column ``name`` of ``table`` as one array; ``a.b`` is field ``b`` of struct column ``a``."""
    if name in table.column_names:
        column = table.column(name)
    else:
        head, field = _split_name(name)
        column = pc.struct_field(table.column(head).combine_chunks(), field)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def feature_of(features, name: str):
    """The ``datasets`` feature of column ``name`` (dotted names reach into struct features), or None."""
    if features is None:
        return None
    if name in features:
        return features[name]
    head, field = _split_name(name)
    inner = features.get(head)
    return inner.get(field) if isinstance(inner, dict) and field else None


def is_audio_bytes_type(arrow_type) -> bool:
    """Binary, or a struct with a binary ``bytes`` field (``datasets.Audio``)."""
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return True
    return pa.types.is_struct(arrow_type) and "bytes" in _struct_fields(arrow_type)


def _is_audio_column(field: pa.Field, feature) -> bool:
    if type(feature).__name__ == "Audio":
        return True
    return field.name.lower() in AUDIO_FILE_EXTENSIONS and is_audio_bytes_type(field.type)


def resolve_columns(
    schema: pa.Schema,
    features=None,
    *,
    audio_column: Optional[str] = None,
    labels_column: Optional[str] = None,
    where: str,
) -> Tuple[str, str, Optional[str]]:
    """``(audio, labels, id)`` column names of a table with this schema (see the module docstring)."""
    listing = describe_columns(schema)

    def explicit(name, what):
        if not has_column(schema, name):
            raise SourceError(f"{where}: no column {name!r} ({what}); columns are {listing}")
        return name

    if audio_column is not None:
        audio = explicit(audio_column, "audio")
    elif "audio" in schema.names:
        audio = "audio"
    else:
        candidates = [f.name for f in schema if _is_audio_column(f, feature_of(features, f.name))]
        if len(candidates) != 1:
            found = "none" if not candidates else ", ".join(map(repr, candidates))
            raise SourceError(
                f"{where}: no column 'audio' and {'no' if not candidates else 'several'} other audio column(s) ({found}); "
                f"columns are {listing}; pass the audio column (--audio-column)"
            )
        audio = candidates[0]

    if labels_column is not None:
        labels = explicit(labels_column, "labels")
    else:
        found = [name for name in ("labels",) + LABEL_FALLBACKS if has_column(schema, name)]
        if not found:
            raise SourceError(
                f"{where}: no column 'labels' (nor a 'labels' or 'label' field of a 'json' column); columns are "
                f"{listing}; pass the labels column (--labels-column, dotted for struct fields, e.g. json.label_id)"
            )
        labels = found[0]
    ids = next((name for name in ID_COLUMNS if has_column(schema, name)), None)
    return audio, labels, ids


def audio_value(value) -> Union[bytes, str, None]:
    """The encoded file of one cell: its bytes, else its path (``Audio(decode=False)`` struct, binary or path)."""
    if isinstance(value, pa.Scalar):
        value = value.as_py()
    if isinstance(value, dict):  # bytes when present (even empty: an empty blob is an error, not a path)
        data = value.get("bytes")
        return data if data is not None else value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return value


class AudioColumn:
    """The encoded audio of each row of a column: ``column[i]`` is the bytes of a file (or its path).

    ``data`` is a ``datasets.Dataset`` (read row by row: memory-mapped, and pickled by reference when
    sent to DataLoader workers) or a pyarrow array of ``Audio(decode=False)`` structs or binary.
    """

    def __init__(self, data, column: Optional[str] = None):
        if isinstance(data, (pa.Array, pa.ChunkedArray)):
            self._array = data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data
            self._dataset = None
        else:
            head, _ = _split_name(column)
            self._dataset = data.select_columns([head]).with_format("arrow")
            self._array = None
        self.column = column

    def __len__(self) -> int:
        return len(self._array) if self._array is not None else len(self._dataset)

    def _cell(self, index: int) -> pa.Scalar:
        if self._array is not None:
            return self._array[int(index)]
        return column_of(self._dataset[int(index)], self.column)[0]

    def __getitem__(self, index: int) -> Union[bytes, str, None]:
        return audio_value(self._cell(index))

    def head(self, index: int, size: int) -> Union[bytes, str, None]:
        """The first ``size`` bytes of a row's file (read without copying the rest), or its path."""
        cell = self._cell(index)
        data = cell.get("bytes") if isinstance(cell, pa.StructScalar) else cell
        if data is None or not data.is_valid:
            return audio_value(cell)  # no bytes: the path, or None
        return data.as_buffer()[:size].to_pybytes()

    def take(self, rows) -> "AudioColumn":
        """The same column restricted to these rows (in this order)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._array is not None:
            return AudioColumn(self._array.take(pa.array(rows)), self.column)
        return AudioColumn(self._dataset.select(rows), self.column)
