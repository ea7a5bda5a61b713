"""The two HLP operations: label pre-processing and score post-processing.

Both are the max over the lookup table L of :class:`~hlp_audio.Ontology`, computed without ever
building L per row: dense inputs take a gather + segmented max over the ancestor pairs
(``Ontology.ancestor_max``); label lists take the one Arrow kernel, :func:`propagate_indices`, a
bitset over the receiving classes reduced per row over the offsets (``Ontology.ancestor_bitsets``).
Labels in any form go through :mod:`hlp_audio.labels` first and come back in the same form.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa

from .labels import (
    HLPInputError,
    check_label_format,
    list_offsets_and_values,
    resolve_label_format,
)
from .ontology import Ontology

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

__all__ = ["propagate_labels", "propagate_scores", "propagate_label_array", "propagate_indices", "HLPInputError"]

_INT32_MAX = np.iinfo(np.int32).max

ArrowLabels = Union[pa.ListArray, pa.LargeListArray, pa.FixedSizeListArray, pa.ChunkedArray]


# ---------------------------------------------------------------------------- scores (post-HLP)
def propagate_scores(scores, ontology: Ontology):
    """Post-HLP: raise each parent's score to the max of its unambiguous descendants'.

    ``s_p = max(s_p, s_c)`` over every unique child -> parent edge until stable, i.e. the max over
    the lookup table. Works on logits (negative values) and probabilities, numpy arrays and torch
    tensors of shape (C,) or (N, C) on any device; returns a new array/tensor (autograd flows).
    """
    if not _is_tensor(scores):
        scores = np.asarray(scores)
    _check_dense(scores, ontology, "scores")
    return ontology.ancestor_max(scores)


def _is_tensor(value) -> bool:
    return torch is not None and isinstance(value, torch.Tensor)


def _check_dense(values, ontology: Ontology, what: str) -> None:
    shape = tuple(values.shape)
    if len(shape) == 0 or shape[-1] != len(ontology):
        raise HLPInputError(
            f"{what} must have shape (C,) or (N, C) with C={len(ontology)} classes of the ontology; got shape {shape}"
        )
    is_torch = _is_tensor(values)
    floating = values.is_floating_point() if is_torch else np.issubdtype(values.dtype, np.floating)
    if floating:
        # A finite sum proves every entry finite (one cheap reduction); only when it is not (a NaN or
        # inf, or merely an overflow of the sum) look at every entry.
        if is_torch:
            all_finite = bool(torch.isfinite(values.sum()))
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                all_finite = bool(np.isfinite(values.sum()))
        if all_finite:
            return
        finite = torch.isfinite(values) if is_torch else np.isfinite(values)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite)[0].tolist() if is_torch else np.argwhere(~finite)[0].tolist()
            value = values[tuple(bad)]
            value = value.item() if hasattr(value, "item") else value
            raise HLPInputError(f"{what} contain a non-finite value {value} at index {tuple(bad)}")
    elif not is_torch and not (np.issubdtype(values.dtype, np.integer) or values.dtype == bool):
        raise HLPInputError(f"{what} must be numeric, got dtype {values.dtype}")


# ---------------------------------------------------------------------------- labels (pre-processing)
def propagate_labels(labels, ontology: Ontology, *, label_format: Optional[str] = None):
    """HLP pre-processing: add every unambiguous ancestor of each positive label.

    Accepts, and returns in the same form:

    - dense multi-hot numpy arrays or torch tensors (bool, int or float), shape (C,) or (N, C); float
      values are treated as soft labels, ``y_hlp[j] = max_i y[i] * L[i, j]``;
    - label lists: one clip's labels (a list) or one list per clip, as Python lists, numpy rows or a
      ``pyarrow`` list array (``datasets`` columns). Strings are class ids (``label_format="names"``
      for display names), integers class indices, floats and bools multi-hot vectors
      (``label_format="multi_hot"`` reads integer lists as multi-hot too). Each row keeps its labels in
      order, followed by the added ancestors in ascending class order; null rows stay null.

    Errors (:class:`HLPInputError`) name the row and the label at fault.
    """
    check_label_format(label_format)
    if _is_tensor(labels) or isinstance(labels, np.ndarray):
        _check_dense(labels, ontology, "labels")
        return ontology.ancestor_max(labels)
    if isinstance(labels, (pa.Array, pa.ChunkedArray)):
        return propagate_label_array(labels, ontology, label_format)
    if isinstance(labels, (list, tuple)):
        array, restore = containers_to_arrow(labels)
        return restore(propagate_label_array(array, ontology, label_format))
    raise HLPInputError(
        "labels must be a numpy array or torch tensor (multi-hot), a list of labels (or one list per clip) or a "
        f"pyarrow list array; got {type(labels).__name__}"
    )


def propagate_label_array(
    array: ArrowLabels,
    ontology: Ontology,
    label_format: Optional[str] = None,
    *,
    where: str = "labels",
    class_label_names: Optional[Sequence[str]] = None,
) -> ArrowLabels:
    """HLP on one Arrow column of labels in any form; the result has the same type and form.

    ``label_format`` overrides the form read from the type (see :mod:`hlp_audio.labels`);
    ``class_label_names`` are the names of a ``ClassLabel`` feature of integer labels (mapped to the
    ontology and back). Errors are :class:`~hlp_audio.labels.LabelError` naming ``where`` and the row.
    """
    if isinstance(array, pa.ChunkedArray):  # one chunk, so that errors name the row of the whole column
        whole = array.combine_chunks() if array.num_chunks else pa.array([], type=array.type)
        return pa.chunked_array(
            [propagate_label_array(whole, ontology, label_format, where=where, class_label_names=class_label_names)]
        )
    label_format = resolve_label_format(array.type, label_format)
    if pa.types.is_null(array.type.value_type):  # only empty (or null) rows: nothing to add
        return array
    encoder = ontology.label_encoder
    mask = array.is_null() if array.null_count else None
    if label_format == "multi_hot":
        dense = encoder.multi_hot_rows(array, where=where)
        propagated = ontology.ancestor_max(dense)
        return _multi_hot_array(array, propagated, mask)
    if pa.types.is_fixed_size_list(array.type):
        raise HLPInputError(
            f"{where}: a fixed-length list ({array.type}) of labels cannot receive the added labels; cast the column "
            "to a variable-length list first, or pass label_format='multi_hot' if it holds multi-hot vectors"
        )
    # A ClassLabel in another order: its numbering must hold every class that HLP can add (checked for
    # the column, whatever the rows hold).
    to_class_label = (
        None if class_label_names is None
        else _inverse_mapping(encoder.class_label_mapping(class_label_names, where), ontology, where)
    )
    offsets, indices = encoder.to_indices(array, label_format, where=where, class_label_names=class_label_names)
    new_offsets, added_at, added = propagate_indices(offsets, indices, ontology)
    if not added.size:  # nothing to add: the column as it is
        return array
    originals = list_offsets_and_values(array)[1]
    if label_format in ("ids", "names"):
        vocabulary = encoder.labels if label_format == "ids" else encoder.names
        values = _interleave(originals, vocabulary.take(pa.array(added)), added_at, new_offsets[-1])
    else:
        if to_class_label is not None:  # back to the ClassLabel's numbering
            added = to_class_label[added]
        values = _interleave(originals, pa.array(added.astype(np.int64)), added_at, new_offsets[-1])
    return _list_array(array.type, new_offsets, values.cast(array.type.value_type), mask)


def _inverse_mapping(mapping: np.ndarray, ontology: Ontology, where: str) -> np.ndarray:
    inverse = np.full(len(ontology), -1, dtype=np.int64)
    inverse[mapping] = np.arange(mapping.size)
    missing = np.flatnonzero(inverse[ontology.receiving] < 0)
    if missing.size:
        cls = int(ontology.receiving[missing[0]])
        raise HLPInputError(
            f"{where}: the ClassLabel has no class for {ontology.labels[cls]!r} ({ontology.names[cls]!r}), which HLP "
            "can add; use a ClassLabel with every class of the ontology"
        )
    return inverse


def _interleave(originals: pa.Array, added: pa.Array, added_at: np.ndarray, total: int) -> pa.Array:
    """Values of the propagated lists: the original values, with ``added[k]`` placed at position ``added_at[k]``."""
    if not len(added):
        return originals
    is_added = np.zeros(total, dtype=bool)
    is_added[added_at] = True
    if pa.types.is_integer(originals.type):  # numeric: two scatters
        out = np.empty(total, dtype=originals.type.to_pandas_dtype())
        out[~is_added] = originals.to_numpy(zero_copy_only=False)
        out[added_at] = added.to_numpy(zero_copy_only=False)
        return pa.array(out, originals.type)
    order = np.empty(total, dtype=np.int64)
    order[~is_added] = np.arange(len(originals))
    order[added_at] = len(originals) + np.arange(len(added))
    return pa.concat_arrays([originals, added.cast(originals.type)]).take(pa.array(order))


def _list_array(list_type: pa.DataType, offsets: np.ndarray, values: pa.Array, mask) -> pa.Array:
    """A list array of ``list_type`` (list or large_list) from offsets, values and a null mask."""
    if pa.types.is_large_list(list_type):
        return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values, type=list_type, mask=mask)
    if offsets[-1] > _INT32_MAX:
        raise HLPInputError(f"{offsets[-1]} labels do not fit a 32-bit list array; cast the column to a large list")
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, type=list_type, mask=mask)


def _multi_hot_array(array: pa.Array, propagated: np.ndarray, mask) -> pa.Array:
    num_rows, num_classes = len(array), propagated.shape[1]
    valid = np.ones(num_rows, dtype=bool) if mask is None else ~mask.to_numpy(zero_copy_only=False)
    value_type = array.type.value_type
    if pa.types.is_fixed_size_list(array.type):
        full = propagated
        if mask is not None:  # null rows still own num_classes slots in a fixed-size list
            full = np.zeros((num_rows, array.type.list_size), dtype=propagated.dtype)
            full[valid] = propagated
        return pa.FixedSizeListArray.from_arrays(pa.array(full.reshape(-1), value_type), type=array.type, mask=mask)
    offsets = np.zeros(num_rows + 1, dtype=np.int64)
    np.cumsum(np.where(valid, num_classes, 0), out=offsets[1:])
    return _list_array(array.type, offsets, pa.array(propagated.reshape(-1), value_type), mask)


def propagate_indices(offsets: np.ndarray, indices: np.ndarray, ontology: Ontology) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The label kernel: HLP on rows of class indices given as ``(offsets, indices)``.

    Returns ``(new_offsets, added_at, added)``: the offsets of the propagated rows, and for every added
    label its position in the propagated values and its class. Each row keeps its own values first, then
    gets the ancestors it lacks in ascending class order. Vectorised: one gather and OR-reduce per row
    over bitsets of the receiving classes, then only the rows that change are unpacked.
    """
    num_rows = len(offsets) - 1
    bits = ontology.ancestor_bitsets
    counts = np.diff(offsets)
    nonempty = np.flatnonzero(counts)
    gained = np.zeros((num_rows, bits.words), dtype=np.uint64)
    if indices.size:
        starts = offsets[nonempty]
        reached = np.bitwise_or.reduceat(bits.ancestors[indices], starts, axis=0)
        present = np.bitwise_or.reduceat(bits.own[indices], starts, axis=0)
        gained[nonempty] = reached & ~present
    changed = np.flatnonzero(gained.any(axis=1))
    # bit -> class index; unpacking only the rows that change keeps this O(changed rows).
    unpacked = np.unpackbits(gained[changed].view(np.uint8), axis=1, bitorder="little")
    changed_local, bit = np.nonzero(unpacked)
    added_rows = changed[changed_local]
    added = bits.receiving[bit]
    shift = np.zeros(num_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(added_rows, minlength=num_rows), out=shift[1:])
    new_offsets = offsets + shift
    rank_in_row = np.arange(added_rows.size) - shift[added_rows]
    added_at = new_offsets[added_rows] + counts[added_rows] + rank_in_row
    return new_offsets, added_at, added


# ---------------------------------------------------------------------------- Python containers
def containers_to_arrow(values) -> Tuple[pa.Array, Callable[[pa.Array], object]]:
    """Arrow form of labels held in Python containers, and a function giving a result back in the same kind.

    ``values`` is one row (a list of labels) or a batch (a list of rows, or a 2-D numpy array / torch
    tensor of rows, as ``datasets`` gives a column in the numpy and torch formats). The form of the
    values is decided by their type, as for Arrow columns: a 2-D integer array is rows of class indices
    unless ``label_format="multi_hot"`` is passed along.
    """
    is_torch = _is_tensor(values)
    if is_torch:
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray) and values.dtype != object:
        if values.ndim not in (1, 2):
            raise HLPInputError(f"labels must be one row or a batch of rows, got an array of shape {values.shape}")
        single = values.ndim == 1
        matrix = values[None] if single else values
        offsets = np.arange(len(matrix) + 1, dtype=np.int64) * matrix.shape[1]
        array = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(matrix.reshape(-1)))

        def restore_matrix(result: pa.Array):
            offsets_out, flat = list_offsets_and_values(result)
            flat = flat.to_numpy(zero_copy_only=False).astype(values.dtype, copy=False)
            lengths = np.diff(offsets_out)
            if len(lengths) and (lengths == lengths[0]).all():
                out = flat.reshape(len(lengths), -1)
                out = out[0] if single else out
                return torch.from_numpy(out.copy()) if is_torch else out
            rows = np.split(flat, offsets_out[1:-1])
            return [torch.from_numpy(row.copy()) for row in rows] if is_torch else rows

        return array, restore_matrix

    rows = list(values)
    nested = any(_is_row(row) for row in rows)
    if nested:
        as_arrays = any(isinstance(row, np.ndarray) or _is_tensor(row) for row in rows)
        is_torch = any(_is_tensor(row) for row in rows)
        # lists, not arrays: an empty float64 row next to rows of strings must not decide the type
        rows = [
            None if row is None else (row.detach().cpu().numpy() if _is_tensor(row) else row)
            for row in rows
        ]
        rows = [row.tolist() if isinstance(row, np.ndarray) else row for row in rows]
    else:
        rows, as_arrays = [rows], False
    try:
        array = pa.array(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as err:
        raise HLPInputError(f"labels are not lists of class ids, names, indices or multi-hot values: {err}") from None
    if not pa.types.is_list(array.type):
        raise HLPInputError(f"labels must be lists of labels, got {array.type} values (one row: pass a list)")

    def restore_rows(result: pa.Array):
        out = result.to_pylist()
        if as_arrays:
            out = [None if row is None else np.asarray(row) for row in out]
            if is_torch:
                out = [None if row is None else torch.from_numpy(row) for row in out]
        return out if nested else out[0]

    return array, restore_rows


def _is_row(value) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) or _is_tensor(value)
