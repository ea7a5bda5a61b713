"""The two HLP operations: label pre-processing and score post-processing.

Both are the max over the lookup table L of :class:`~hlp_audio.Ontology`, computed without ever
building L per row: dense inputs take a gather + segmented max over the ancestor pairs, index
lists (Arrow list arrays) a bitset over the receiving classes, reduced per row over the offsets.
"""

from __future__ import annotations

from typing import List, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .modeling.hierarchy_ops import AncestorMax
from .ontology import Ontology

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

__all__ = ["propagate_labels", "propagate_scores", "HLPInputError"]


class HLPInputError(ValueError):
    """Labels or scores that do not fit the ontology: wrong width, unknown class, NaN."""


# ---------------------------------------------------------------------------- dense helpers
def _ancestor_max(ontology: Ontology) -> AncestorMax:
    plan = ontology.__dict__.get("_ancestor_max")
    if plan is None:
        plan = ontology.__dict__["_ancestor_max"] = AncestorMax(*ontology.ancestor_pairs)
    return plan


def _check_dense(values, ontology: Ontology, what: str) -> None:
    shape = tuple(values.shape)
    if len(shape) == 0 or shape[-1] != len(ontology):
        raise HLPInputError(
            f"{what} must have shape (C,) or (N, C) with C={len(ontology)} classes of the ontology; got shape {shape}"
        )
    is_torch = torch is not None and isinstance(values, torch.Tensor)
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


def propagate_scores(scores, ontology: Ontology):
    """Post-HLP: raise each parent's score to the max of its unambiguous descendants'.

    ``s_p = max(s_p, s_c)`` over every unique child -> parent edge until stable, i.e. the max over
    the lookup table. Works on logits (negative values) and probabilities, numpy arrays and torch
    tensors of shape (C,) or (N, C) on any device; returns a new array/tensor (autograd flows).
    """
    if not (torch is not None and isinstance(scores, torch.Tensor)):
        scores = np.asarray(scores)
    _check_dense(scores, ontology, "scores")
    return _ancestor_max(ontology)(scores)


# ---------------------------------------------------------------------------- labels
def propagate_labels(labels, ontology: Ontology):
    """HLP pre-processing: add every unambiguous ancestor of each positive label.

    Accepts, and returns in the same form:

    - multi-hot numpy arrays or torch tensors (bool, int or float), shape (C,) or (N, C); float
      values are treated as soft labels, ``y_hlp[j] = max_i y[i] * L[i, j]``;
    - a list of class indices (one clip) or a list of such lists;
    - a ``pyarrow`` ``ListArray`` / ``LargeListArray`` / ``ChunkedArray`` of class indices, as
      ``datasets`` stores them. Each row keeps its labels in order, followed by the added
      ancestors in ascending class order; null rows stay null.
    """
    if isinstance(labels, (pa.ListArray, pa.LargeListArray)):
        return _propagate_arrow(labels, ontology)
    if isinstance(labels, pa.ChunkedArray):
        return pa.chunked_array([_propagate_arrow(chunk, ontology) for chunk in labels.chunks], type=labels.type)
    if isinstance(labels, (list, tuple)):
        return _propagate_python(labels, ontology)
    if torch is not None and isinstance(labels, torch.Tensor):
        _check_dense(labels, ontology, "labels")
        return _ancestor_max(ontology)(labels)
    if isinstance(labels, np.ndarray):
        _check_dense(labels, ontology, "labels")
        return _ancestor_max(ontology)(labels)
    raise HLPInputError(
        "labels must be a numpy array, a torch tensor, a list of class indices (or of such lists) "
        f"or a pyarrow list array; got {type(labels).__name__}"
    )


def _propagate_python(labels: Sequence, ontology: Ontology) -> List:
    nested = any(isinstance(row, (list, tuple, np.ndarray)) for row in labels)
    rows = labels if nested else [labels]
    for r, row in enumerate(rows):
        if not isinstance(row, (list, tuple, np.ndarray)):
            raise HLPInputError(f"row {r}: expected a list of class indices, got {row!r}")
        for value in row:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise HLPInputError(
                    f"row {r}: {value!r} is not a class index; pass multi-hot vectors as a numpy array or tensor"
                )
    try:
        arrow = pa.array([list(row) for row in rows], type=pa.list_(pa.int64()))
    except (pa.ArrowInvalid, OverflowError) as err:
        raise HLPInputError(f"labels are not lists of integer class indices: {err}") from None
    result = _propagate_arrow(arrow, ontology).to_pylist()
    return result if nested else result[0]


def list_offsets_and_values(array: Union[pa.ListArray, pa.LargeListArray]):
    """``(offsets, values)`` of a list array of class indices as int64 numpy arrays, offsets from 0.

    Handles sliced arrays, and null rows (given length 0: Arrow lets a null row own values in the
    child array, which must be neither counted nor propagated). A null class index is an error.
    """
    if array.null_count:
        lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        values = array.flatten()
    else:
        offsets = array.offsets.to_numpy().astype(np.int64)
        values = array.values.slice(offsets[0], offsets[-1] - offsets[0])
        offsets = offsets - offsets[0]
    if values.null_count:
        raise HLPInputError("labels contain a null class index")
    return offsets, values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


class _Bitsets:
    """Per-class ancestor and self bitsets over the receiving classes (the only ones that gain)."""

    def __init__(self, ontology: Ontology):
        descendant, ancestor = ontology.ancestor_pairs
        self.receiving = ontology.receiving.astype(np.int64)
        num_classes = len(ontology)
        words = max(1, -(-len(self.receiving) // 64))
        rank = np.full(num_classes, -1, dtype=np.int64)
        rank[self.receiving] = np.arange(len(self.receiving))
        self.words = words
        self.ancestors = np.zeros((num_classes, words), dtype=np.uint64)
        np.bitwise_or.at(self.ancestors, (descendant, rank[ancestor] // 64), _bit(rank[ancestor] % 64))
        self.own = np.zeros((num_classes, words), dtype=np.uint64)
        self.own[self.receiving, rank[self.receiving] // 64] = _bit(rank[self.receiving] % 64)


def _bit(position: np.ndarray) -> np.ndarray:
    return np.left_shift(np.uint64(1), position.astype(np.uint64))


def _bitsets(ontology: Ontology) -> _Bitsets:
    cached = ontology.__dict__.get("_label_bitsets")
    if cached is None:
        cached = ontology.__dict__["_label_bitsets"] = _Bitsets(ontology)
    return cached


def _propagate_arrow(array: Union[pa.ListArray, pa.LargeListArray], ontology: Ontology):
    if not (pa.types.is_integer(array.type.value_type)):
        raise HLPInputError(f"a list array of integer class indices is needed, got {array.type}")
    offsets, values = list_offsets_and_values(array)
    num_rows, num_classes = len(array), len(ontology)
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        bad = int(np.flatnonzero((values < 0) | (values >= num_classes))[0])
        row = int(np.searchsorted(offsets, bad, side="right") - 1)
        raise HLPInputError(f"row {row}: class index {values[bad]} is outside [0, {num_classes})")

    bits = _bitsets(ontology)
    counts = np.diff(offsets)
    nonempty = np.flatnonzero(counts)
    gained = np.zeros((num_rows, bits.words), dtype=np.uint64)
    if values.size:
        starts = offsets[nonempty]
        reached = np.bitwise_or.reduceat(bits.ancestors[values], starts, axis=0)
        present = np.bitwise_or.reduceat(bits.own[values], starts, axis=0)
        gained[nonempty] = reached & ~present
    if array.null_count:
        gained[np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)] = 0
    changed = np.flatnonzero(gained.any(axis=1))

    # bit -> class index; unpacking only the rows that change keeps this O(changed rows).
    unpacked = np.unpackbits(gained[changed].view(np.uint8), axis=1, bitorder="little")
    changed_local, bit = np.nonzero(unpacked)
    added_rows = changed[changed_local]
    added_classes = bits.receiving[bit]
    added_count = np.bincount(added_rows, minlength=num_rows)

    shift = np.zeros(num_rows + 1, dtype=np.int64)
    np.cumsum(added_count, out=shift[1:])
    new_offsets = offsets + shift
    out = np.empty(new_offsets[-1], dtype=values.dtype)
    row_of_value = np.repeat(np.arange(num_rows), counts)
    out[np.arange(values.size) + shift[row_of_value]] = values
    rank_in_row = np.arange(added_rows.size) - shift[added_rows]
    out[new_offsets[added_rows] + counts[added_rows] + rank_in_row] = added_classes

    list_type = type(array)
    offset_type = pa.int64() if list_type is pa.LargeListArray else pa.int32()
    mask = array.is_null() if array.null_count else None
    return list_type.from_arrays(
        pa.array(new_offsets, offset_type),
        pa.array(out, array.type.value_type),
        type=array.type,
        mask=mask,
    )
