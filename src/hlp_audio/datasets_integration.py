"""`datasets` integration: HLP as a ``Dataset.map`` function, and AudioSet as a ``DatasetDict``.

>>> ds = load_audioset(["eval"])["eval"]                                   # doctest: +SKIP
>>> ds = ds.map(hlp_propagate(ontology, output_column="hlp_labels"), batched=True)  # doctest: +SKIP

:func:`hlp_propagate` works on the three ways label columns are stored, and writes its result in
the same form (same Arrow type, same ``datasets`` feature):

- label ids: lists of strings (AudioSet mids such as ``"/m/09x0r"``);
- class indices: lists of integers, ``List(ClassLabel)`` included;
- multi-hot vectors: lists (fixed-length or not) of bool, int or float with one value per class.

With the default (python) format and with the ``"arrow"`` format, ``Dataset.map`` hands the batch
over as an Arrow table: the column is propagated with array kernels (``pyarrow.compute`` and
:func:`hlp_audio.propagate_labels`), without converting rows to Python objects, and the function
returns an Arrow table. Other inputs (``IterableDataset`` in python format, the numpy and torch
formats) are converted to Arrow, propagated by the same kernel, and converted back.

This module imports ``datasets`` only where it builds ``datasets`` objects; the map function
itself needs only pyarrow and numpy.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .audioset import SPLITS, Segments, load_segments
from .ontology import Ontology
from .propagation import HLPInputError, propagate_labels

try:
    import torch
except ImportError:  # pragma: no cover - torch is a dependency of the package
    torch = None

__all__ = [
    "LABEL_FORMATS",
    "AUDIO_EXTENSIONS",
    "HLPPropagate",
    "hlp_propagate",
    "propagate_label_array",
    "audioset_features",
    "segments_to_dataset",
    "load_audioset",
    "find_audio_files",
    "AudioMatchError",
    "MissingAudioWarning",
]

PathLike = Union[str, "os.PathLike[str]"]

#: How a label column can be stored; ``None`` (the default) infers it from the column type.
LABEL_FORMATS = ("ids", "indices", "multi_hot")

#: Audio file extensions matched by :func:`find_audio_files`, in order of preference when one
#: clip is stored in several formats (same name, different extension).
AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "mp3")

#: AudioSet YouTube ids are always 11 characters from this alphabet.
_YTID_LENGTH = 11
_YTID_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


# ============================================================================ the Arrow kernel
class _RowError(HLPInputError):
    """An :class:`HLPInputError` about one row; ``row`` is its position in the array."""

    def __init__(self, row: int, detail: str):
        super().__init__(f"row {row}: {detail}")
        self.row = row
        self.detail = detail


def _row_of_value(lengths: np.ndarray, position: int) -> int:
    """Row of the ``position``-th flattened value, given the row lengths (0 for null rows)."""
    return int(np.searchsorted(np.cumsum(lengths), position, side="right"))


def _list_offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _variable_list(like: pa.DataType, offsets: np.ndarray, values: pa.Array, mask) -> pa.Array:
    """A list array of type ``like`` (list or large_list) from offsets, values and a null mask."""
    if pa.types.is_large_list(like):
        return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values, type=like, mask=mask)
    if offsets[-1] > np.iinfo(np.int32).max:
        raise HLPInputError(f"{offsets[-1]} labels do not fit a 32-bit list array; cast the column to a large list")
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=like, mask=mask)


class _LabelKernel:
    """Propagates Arrow list arrays of labels for one ontology (vocabulary built once)."""

    def __init__(self, ontology: Ontology):
        self.ontology = ontology
        self.num_classes = len(ontology)
        self.label_ids = pa.array(ontology.labels, pa.string())

    # ------------------------------------------------------------------ entry point
    def propagate(self, array, label_format: Optional[str] = None, class_label: bool = False):
        """HLP on a list array or chunked array; returns the same type. Row errors: :class:`_RowError`."""
        if isinstance(array, pa.ChunkedArray) and array.num_chunks == 1:
            array = array.chunk(0)
        if isinstance(array, pa.ChunkedArray):
            chunks, start = [], 0
            for chunk in array.chunks:
                try:
                    chunks.append(self._propagate_chunk(chunk, label_format, class_label))
                except _RowError as err:
                    raise _RowError(start + err.row, err.detail) from None
                start += len(chunk)
            return pa.chunked_array(chunks, type=array.type)
        return self._propagate_chunk(array, label_format, class_label)

    def _propagate_chunk(self, array: pa.Array, label_format: Optional[str], class_label: bool) -> pa.Array:
        list_type = array.type
        if not (
            pa.types.is_list(list_type) or pa.types.is_large_list(list_type) or pa.types.is_fixed_size_list(list_type)
        ):
            raise HLPInputError(
                "labels must be a list column (label ids, class indices or a multi-hot vector per row), "
                f"got Arrow type {list_type}"
            )
        if array.null_count or pa.types.is_fixed_size_list(list_type):
            lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            lengths = np.diff(array.offsets.to_numpy()).astype(np.int64)
        flat = array.flatten()  # skips null rows
        if flat.null_count:
            position = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0])
            raise _RowError(_row_of_value(lengths, position), "a label is null")
        mask = array.is_null() if array.null_count else None
        label_format = self._resolve_format(list_type, flat, lengths, label_format, class_label)
        if label_format == "multi_hot":
            return self._multi_hot(array, flat, lengths, mask)
        if pa.types.is_fixed_size_list(list_type):
            raise HLPInputError(
                f"a fixed-length list ({list_type}) of {'label ids' if label_format == 'ids' else 'class indices'} "
                "cannot receive the added labels; cast the column to a variable-length list first"
            )
        if label_format == "ids":
            return self._label_ids(array, flat, lengths, mask)
        return self._class_indices(array, flat, lengths)

    # ------------------------------------------------------------------ format
    def _resolve_format(self, list_type, flat, lengths, requested, class_label) -> str:
        value_type = list_type.value_type
        if pa.types.is_string(value_type) or pa.types.is_large_string(value_type):
            found = "ids"
        elif pa.types.is_integer(value_type):
            if requested is not None:
                found = requested if requested != "ids" else "indices"
            elif class_label:
                found = "indices"
            elif pa.types.is_fixed_size_list(list_type):
                found = "multi_hot"
            else:
                found = self._guess_integer_format(flat, lengths, self.num_classes)
        elif pa.types.is_boolean(value_type) or pa.types.is_floating(value_type):
            found = "multi_hot"
        else:
            raise HLPInputError(
                f"cannot read labels of Arrow type {list_type}: expected lists of label ids (strings), "
                "class indices (integers) or multi-hot values (bool, int or float)"
            )
        if requested is not None and requested != found:
            kind = {
                "ids": "label ids (strings)",
                "indices": "class indices (integers)",
                "multi_hot": "multi-hot values",
            }
            raise HLPInputError(
                f"label_format={requested!r} needs {kind[requested]}, but the column holds {list_type} "
                f"(read as {kind[found]})"
            )
        return found

    @staticmethod
    def _guess_integer_format(flat: pa.Array, lengths: np.ndarray, num_classes: int) -> str:
        """Integer lists are class indices unless they can only be multi-hot vectors.

        A row of three or more values that are all 0 or 1 cannot be a list of distinct class
        indices, so a batch whose values are all 0/1 with such a row is read as multi-hot. With one
        or two classes, 0/1 rows of length C fit both readings: ``label_format`` must then say which.
        """
        if flat.null_count == 0 and len(flat):
            extremes = pc.min_max(flat)
            binary = extremes["min"].as_py() >= 0 and extremes["max"].as_py() <= 1
            if binary and lengths.max() > 2:
                return "multi_hot"
            if binary and num_classes <= 2 and (lengths == num_classes).all():
                raise HLPInputError(
                    f"integer rows of length {num_classes} holding only 0 and 1 can be multi-hot vectors or "
                    "class indices for this ontology; pass label_format='multi_hot' or 'indices'"
                )
        return "indices"

    # ------------------------------------------------------------------ the three representations
    def _label_ids(self, array, flat, lengths, mask) -> pa.Array:
        strings = flat.cast(pa.string()) if pa.types.is_large_string(flat.type) else flat
        positions = pc.index_in(strings, value_set=self.label_ids)
        if positions.null_count:
            position = int(np.flatnonzero(positions.is_null().to_numpy(zero_copy_only=False))[0])
            raise _RowError(
                _row_of_value(lengths, position),
                f"unknown label {strings[position].as_py()!r}: not one of the {self.num_classes} label ids of "
                "the ontology (label ids are matched exactly; map display names with Ontology.index first)",
            )
        indices = pa.LargeListArray.from_arrays(
            pa.array(_list_offsets(lengths), pa.int64()), positions.cast(pa.int32()), mask=mask
        )
        propagated = self._propagate_indices(indices, positions)
        values = self.label_ids.take(propagated.values).cast(array.type.value_type)
        return _variable_list(array.type, propagated.offsets.to_numpy().astype(np.int64), values, mask)

    def _class_indices(self, array, flat, lengths) -> pa.Array:
        values = flat.to_numpy(zero_copy_only=False)
        if values.size and (values.min() < 0 or values.max() >= self.num_classes):
            position = int(np.flatnonzero((values < 0) | (values >= self.num_classes))[0])
            raise _RowError(
                _row_of_value(lengths, position),
                f"class index {values[position]} is outside [0, {self.num_classes}), the classes of the ontology",
            )
        return self._propagate_indices(array, flat)

    def _propagate_indices(self, array: pa.Array, flat: pa.Array) -> pa.Array:
        """Validated class-index lists -> propagated lists (:func:`propagate_labels`' batch kernel)."""
        if len(array) == 1 and not array.null_count:
            # One row, as in an unbatched map: the row's slice of the lookup table L, y_hlp = max_i
            # y_i L[i, :], costs a few microseconds against the batch kernel's fixed ~150 us.
            values = flat.to_numpy(zero_copy_only=False)
            reached = self.lookup_table[values].any(axis=0)
            reached[values] = False
            return pa.array([np.concatenate([values, np.flatnonzero(reached).astype(values.dtype)])], array.type)
        return propagate_labels(array, self.ontology)

    @cached_property
    def lookup_table(self) -> np.ndarray:
        return self.ontology.lookup_table()

    def _multi_hot(self, array, flat, lengths, mask) -> pa.Array:
        num_classes = self.num_classes
        valid = np.ones(len(array), dtype=bool) if mask is None else ~mask.to_numpy(zero_copy_only=False)
        wrong = valid & (lengths != num_classes)
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise _RowError(
                row,
                f"multi-hot vector of length {lengths[row]}, expected {num_classes} "
                "(one value per class of the ontology)",
            )
        values = flat.to_numpy(zero_copy_only=False)
        dense = values.reshape(-1, num_classes)
        if np.issubdtype(dense.dtype, np.floating):
            finite = np.isfinite(dense)
            if not finite.all():
                row_in_valid, column = (int(i) for i in np.argwhere(~finite)[0])
                raise _RowError(
                    int(np.flatnonzero(valid)[row_in_valid]),
                    f"multi-hot value {dense[row_in_valid, column]} for class {column} is not finite",
                )
        propagated = propagate_labels(dense, self.ontology)
        value_type = array.type.value_type
        if pa.types.is_fixed_size_list(array.type):
            full = propagated
            if mask is not None:  # null rows still own num_classes slots in a fixed-size list
                full = np.zeros((len(array), num_classes), dtype=propagated.dtype)
                full[valid] = propagated
            return pa.FixedSizeListArray.from_arrays(pa.array(full.reshape(-1), value_type), type=array.type, mask=mask)
        offsets = _list_offsets(np.where(valid, num_classes, 0))
        return _variable_list(array.type, offsets, pa.array(propagated.reshape(-1), value_type), mask)


def propagate_label_array(array, ontology: Ontology, label_format: Optional[str] = None):
    """HLP on one Arrow column of labels, in any of the three representations; same type out.

    ``array`` is a ``pyarrow`` list, large list or fixed-size list array (or a chunked array of
    those) of label ids, class indices or multi-hot vectors; ``label_format`` (one of
    :data:`LABEL_FORMATS`) overrides the inference from the Arrow type. Label lists keep their
    labels in order, followed by the added ancestors in class order; null rows stay null.
    """
    _check_label_format(label_format)
    return _LabelKernel(ontology).propagate(array, label_format)


def _check_label_format(label_format: Optional[str]) -> None:
    if label_format is not None and label_format not in LABEL_FORMATS:
        raise ValueError(f"label_format must be one of {LABEL_FORMATS} or None (infer), got {label_format!r}")


# ============================================================================ Python containers
def _python_labels_to_arrow(values) -> Tuple[pa.Array, Callable[[pa.Array], object]]:
    """Arrow form of a column as ``IterableDataset`` or the numpy/torch formats give it.

    Returns the list array and a function turning a propagated array back into the same kind of
    container: a list of lists (one example: a list), numpy arrays or torch tensors.
    """
    is_torch = torch is not None and isinstance(values, torch.Tensor)
    if is_torch:
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray) and values.dtype != object:
        if values.ndim not in (1, 2):
            raise HLPInputError(
                f"labels must be one vector or a batch of vectors, got an array of shape {values.shape}"
            )
        single = values.ndim == 1
        matrix = values[None] if single else values
        width = matrix.shape[1]
        offsets = np.arange(len(matrix) + 1, dtype=np.int64) * width
        array = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(matrix.reshape(-1)))

        def restore(result: pa.Array):
            lengths = pc.list_value_length(result).to_numpy(zero_copy_only=False)
            flat = pc.list_flatten(result).to_numpy(zero_copy_only=False).astype(values.dtype, copy=False)
            if len(lengths) and (lengths == lengths[0]).all():
                out = flat.reshape(len(lengths), -1)
                out = out[0] if single else out
                return torch.from_numpy(out.copy()) if is_torch else out
            rows = np.split(flat, np.cumsum(lengths)[:-1])
            return [torch.from_numpy(row.copy()) for row in rows] if is_torch else rows

        return array, restore

    rows = list(values)
    nested = any(_is_sequence(row) for row in rows)
    if nested:
        # ragged numpy/torch formats give one array per row
        is_torch = is_torch or any(torch is not None and isinstance(row, torch.Tensor) for row in rows)
        to_arrays = any(isinstance(row, np.ndarray) for row in rows) or is_torch
        rows = [
            row.detach().cpu().numpy() if torch is not None and isinstance(row, torch.Tensor) else row for row in rows
        ]
    else:
        rows, to_arrays = [rows], False
    try:
        array = pa.array(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as err:
        raise HLPInputError(f"labels are not lists of label ids, class indices or multi-hot values: {err}") from None
    if pa.types.is_null(array.type.value_type):  # only empty rows: nothing to infer, nothing to add
        array = array.cast(pa.list_(pa.int64()))

    def restore(result: pa.Array):
        out = result.to_pylist()
        if to_arrays:
            out = [None if row is None else np.asarray(row) for row in out]
            if is_torch:
                out = [None if row is None else torch.from_numpy(row) for row in out]
        return out if nested else out[0]

    return array, restore


def _is_sequence(value) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) or (torch is not None and isinstance(value, torch.Tensor))


# ============================================================================ the map function
def _feature_dicts(schema: pa.Schema) -> Optional[dict]:
    """The ``datasets`` features (as dicts) stored in an Arrow schema's metadata, if any."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw is None:
        return None
    try:
        features = json.loads(raw)["info"]["features"]
    except (ValueError, KeyError, TypeError):
        return None
    return features if isinstance(features, dict) else None


def _class_label_names(feature) -> Optional[List[str]]:
    """Names of the ClassLabel inside a ``List`` / ``Sequence`` / ``LargeList`` feature dict."""
    inner = feature.get("feature") if isinstance(feature, dict) else None
    if isinstance(inner, dict) and inner.get("_type") == "ClassLabel":
        return list(inner.get("names") or [])
    return None


class HLPPropagate:
    """A ``Dataset.map`` / ``IterableDataset.map`` function that adds HLP labels to a column.

    Build it with :func:`hlp_propagate`. It is a small picklable object whose state is the
    ontology (as :meth:`Ontology.to_dict`) and the column names: ``datasets`` hashes that state,
    so the same arguments give the same fingerprint in any process and a repeated ``map`` is a
    cache hit. Use it batched (fast: vectorised over the Arrow batch) or not, with ``num_proc``.

    Call it as ``fn(batch)`` or, with ``map(..., with_indices=True)``, ``fn(batch, indices)``: an
    error then names the dataset row instead of the row of the batch.

    Note: with the default and ``"arrow"`` formats the function returns an Arrow table of the
    whole batch, and ``Dataset.map`` does not apply ``remove_columns`` to table outputs. Replace
    the column (``output_column=None``) or call ``.remove_columns(...)`` after the map.
    """

    def __init__(
        self,
        ontology: Union[Ontology, Mapping],
        column: str = "labels",
        output_column: Optional[str] = None,
        label_format: Optional[str] = None,
    ):
        if isinstance(ontology, Mapping):
            ontology = Ontology.from_dict(ontology)
        if not isinstance(ontology, Ontology):
            raise TypeError(f"ontology must be a hlp_audio.Ontology (or its to_dict()), got {type(ontology).__name__}")
        for name, value in (("column", column), ("output_column", output_column)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty column name, got {value!r}")
        if column is None:
            raise ValueError("column must be a non-empty column name, got None")
        _check_label_format(label_format)
        self.ontology = ontology
        self.column = column
        self.output_column = output_column
        self.label_format = label_format
        self._kernel = _LabelKernel(ontology)
        self._metadata_cache: Tuple[Optional[bytes], Optional[bytes], bool] = (None, None, False)

    @property
    def target_column(self) -> str:
        """The column written: ``output_column``, or ``column`` itself when it is None."""
        return self.output_column or self.column

    # ------------------------------------------------------------------ pickling / hashing
    def __getstate__(self) -> dict:
        # Only deterministic, JSON-like state: this is what datasets' Hasher fingerprints.
        return {
            "ontology": self.ontology.to_dict(),
            "column": self.column,
            "output_column": self.output_column,
            "label_format": self.label_format,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(
            Ontology.from_dict(state["ontology"]), state["column"], state["output_column"], state["label_format"]
        )

    def __eq__(self, other) -> bool:
        if not isinstance(other, HLPPropagate):
            return NotImplemented
        return self.__getstate__() == other.__getstate__()

    def __hash__(self) -> int:
        return hash((self.ontology, self.column, self.output_column, self.label_format))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(ontology=<{len(self.ontology)} classes>, column={self.column!r}, "
            f"output_column={self.output_column!r}, label_format={self.label_format!r})"
        )

    # ------------------------------------------------------------------ features
    def output_features(self, features):
        """The ``datasets.Features`` after the map: the output column gets the input column's feature.

        Useful for ``IterableDataset.map(..., features=fn.output_features(ds.features))``.
        """
        if features is None:
            return None
        if self.column not in features:
            raise KeyError(f"column {self.column!r} is not among the features {list(features)}")
        out = features.copy()
        out[self.target_column] = features[self.column]
        return out

    # ------------------------------------------------------------------ call
    def __call__(self, batch, indices=None):
        table = batch if isinstance(batch, pa.Table) else getattr(batch, "pa_table", None)
        if isinstance(table, pa.Table):  # arrow format, or the lazy python batch/row of Dataset.map
            return self._call_table(table, indices)
        if isinstance(batch, Mapping):
            return self._call_mapping(batch, indices)
        raise TypeError(
            f"{type(self).__name__} takes a batch or example (a dict or a pyarrow.Table), got "
            f"{type(batch).__name__}; do not pass input_columns to map(), and use the default, "
            "'arrow', 'numpy' or 'torch' format"
        )

    def _call_table(self, table: pa.Table, indices) -> pa.Table:
        if self.column not in table.column_names:
            raise KeyError(f"column {self.column!r} not found; the columns are {table.column_names}")
        metadata, class_label = self._schema_metadata(table.schema)
        result = self._propagate(table.column(self.column), indices, class_label)
        field = pa.field(self.target_column, result.type)
        if self.target_column in table.column_names:
            table = table.set_column(table.column_names.index(self.target_column), field, result)
        else:
            table = table.append_column(field, result)
        if metadata is not None:
            table = table.replace_schema_metadata(metadata)
        return table

    def _schema_metadata(self, schema: pa.Schema) -> Tuple[Optional[dict], bool]:
        """Check a ClassLabel input against the ontology and give the output column its feature.

        Returns the schema metadata for the output table (None: keep it) and whether the input
        column is a ClassLabel list. Cached on the metadata bytes, which repeat for every batch.
        """
        raw = (schema.metadata or {}).get(b"huggingface")
        cached_raw, cached_new, cached_class_label = self._metadata_cache
        if raw is not None and raw == cached_raw:
            return (None if cached_new is None else {**schema.metadata, b"huggingface": cached_new}), cached_class_label
        features = _feature_dicts(schema)
        if features is None or self.column not in features:
            return None, False
        names = _class_label_names(features[self.column])
        if names is not None:
            self._check_class_label_names(names)
        new_raw = None
        if self.target_column != self.column:
            info = json.loads(raw)
            info["info"]["features"][self.target_column] = features[self.column]
            new_raw = json.dumps(info).encode()
        self._metadata_cache = (raw, new_raw, names is not None)
        return (None if new_raw is None else {**schema.metadata, b"huggingface": new_raw}), names is not None

    def _check_class_label_names(self, names: Sequence[str]) -> None:
        onto = self.ontology
        if list(names) in (list(onto.names), list(onto.labels)):
            return
        if len(names) != len(onto):
            raise HLPInputError(
                f"column {self.column!r} is a ClassLabel with {len(names)} classes, but the ontology has {len(onto)}"
            )
        reference = max((onto.names, onto.labels), key=lambda ids: len(set(ids) & set(names)))
        first = next(i for i, (a, b) in enumerate(zip(names, reference)) if a != b)
        raise HLPInputError(
            f"column {self.column!r} is a ClassLabel whose names are not the ontology's classes in index "
            f"order: class {first} is {names[first]!r} in the dataset and {reference[first]!r} in the "
            "ontology. Re-encode the column in the ontology's order or build the ontology in the "
            "dataset's order (Ontology.from_parents)"
        )

    def _call_mapping(self, batch: Mapping, indices) -> dict:
        if self.column not in batch:
            raise KeyError(f"column {self.column!r} not found; the columns are {list(batch)}")
        array, restore = _python_labels_to_arrow(batch[self.column])
        return {self.target_column: restore(self._propagate(array, indices, class_label=False))}

    def _propagate(self, array, indices, class_label: bool):
        try:
            return self._kernel.propagate(array, self.label_format, class_label)
        except _RowError as err:
            hint = ""
            if indices is None:
                where = f"row {err.row} of this batch"
                hint = " (map with with_indices=True to have the dataset row named)"
            elif isinstance(indices, (int, np.integer)):
                where = f"row {int(indices)}"
            else:
                where = f"row {int(indices[err.row])}"
            raise HLPInputError(f"column {self.column!r}, {where}: {err.detail}{hint}") from None


def hlp_propagate(
    ontology: Union[Ontology, Mapping],
    column: str = "labels",
    output_column: Optional[str] = None,
    *,
    label_format: Optional[str] = None,
) -> HLPPropagate:
    """A function for ``Dataset.map`` / ``IterableDataset.map`` that applies HLP to ``column``.

    Args:
        ontology: the label hierarchy (an :class:`~hlp_audio.Ontology` or its ``to_dict()``).
        column: the label column: lists of label ids (strings), lists of class indices (integers,
            e.g. ``List(ClassLabel)``) or multi-hot vectors (bool, int or float, one per class).
        output_column: ``None`` replaces ``column``; a name writes the result there (with the same
            ``datasets`` feature as ``column``, ClassLabel names included).
        label_format: ``"ids"``, ``"indices"`` or ``"multi_hot"``; ``None`` infers it: strings are
            ids, ClassLabel lists and other integer lists are indices, bool/float lists and
            fixed-length lists are multi-hot. Integer lists whose values are all 0/1 with a row
            of three or more values can only be multi-hot and are read so.

    The output has the input's representation: label lists keep their labels in order followed by
    the added ancestors in class order; multi-hot vectors keep their dtype; null rows stay null.
    Unknown labels, out-of-range indices and vectors of the wrong length raise
    :class:`~hlp_audio.HLPInputError` naming the column and row.

    >>> ds = ds.map(hlp_propagate(ontology, output_column="hlp_labels"), batched=True)  # doctest: +SKIP
    """
    return HLPPropagate(ontology, column, output_column, label_format)


# ============================================================================ AudioSet
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

    Columns: ``ytid`` (string), ``start_seconds``, ``end_seconds`` (float64), ``labels``
    (``List(ClassLabel)`` over the 527 display names in class-index order), then ``hlp_labels``
    and ``audio`` when asked for.
    """
    from datasets import DatasetDict

    if missing not in ("drop", "keep", "raise"):
        raise ValueError(f"missing must be 'drop', 'keep' or 'raise', got {missing!r}")
    if isinstance(splits, str):
        splits = [splits]
    splits = list(SPLITS) if splits is None else list(splits)
    if ontology is None:
        ontology = Ontology.from_audioset(audioset_dir=audioset_dir)
    segments = load_segments(splits, ontology, audioset_dir=audioset_dir)
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
    if sum(len(paths) - paths.null_count for paths in audio.values()) == 0 and sum(map(len, audio.values())):
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
