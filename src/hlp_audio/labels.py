"""Labels in the forms users hold them, turned into class indices of an ontology: the one normaliser.

Every entry point that reads labels (the AudioSet reader, :func:`hlp_audio.propagate_labels`,
:func:`hlp_audio.hlp_propagate`, training manifests) goes through :class:`LabelEncoder`, so that they
accept the same forms and word their errors the same way:

- ``"ids"``: class ids, e.g. AudioSet mids (``"/m/09x0r"``), as strings;
- ``"names"``: display names (``"Speech"``), as strings;
- ``"indices"``: class indices (integers, ``ClassLabel`` values, or decimal strings in a CSV cell);
- ``"multi_hot"``: one value per class (bool, int or float).

The form of a column is decided once, from its type, never from its values (so that a result never
depends on how rows are batched): strings are ids unless ``label_format="names"`` (or
``"indices"``); integers in variable-length lists are indices, in fixed-length lists multi-hot;
bools and floats are multi-hot. An explicit ``label_format`` overrides the integer rules. A row that
cannot be what its form says is an error naming the row: an unknown id (with a hint when it is a
display name, or the other way round), an index out of range, a row of class indices longer than the
number of classes or repeating a class in a full-width row (multi-hot vectors read as indices), a
multi-hot vector of the wrong width or with non-finite values.

Numpy and pyarrow only.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "LABEL_FORMATS",
    "HLPInputError",
    "LabelError",
    "LabelEncoder",
    "resolve_label_format",
    "check_label_format",
    "list_offsets_and_values",
    "row_of",
    "describe_row",
]

#: The forms a label column can take (``None`` means: decide from the column's type).
LABEL_FORMATS = ("ids", "names", "indices", "multi_hot")

ListLike = Union[pa.ListArray, pa.LargeListArray, pa.FixedSizeListArray]


class HLPInputError(ValueError):
    """Labels or scores that do not fit the ontology: unknown label, wrong width, index out of range, NaN."""


class LabelError(HLPInputError):
    """An :class:`HLPInputError` about one row; ``row`` is its position in the array, ``detail`` the fault."""

    def __init__(self, where: str, row: int, detail: str, line_offset: Optional[int] = None):
        super().__init__(f"{describe_row(where, row, line_offset)}: {detail}")
        self.where, self.row, self.detail, self.line_offset = where, row, detail, line_offset


def describe_row(where: str, row: int, line_offset: Optional[int] = None) -> str:
    """``"<where>, row 5"``, plus ``" (line 7)"`` for text files whose first row is on line ``1 + line_offset``."""
    text = f"{where}, row {row}" if where else f"row {row}"
    if line_offset is not None:
        text += f" (line {row + line_offset})"
    return text


def row_of(offsets: np.ndarray, position: int) -> int:
    """Row of the ``position``-th flattened value of a list array with these offsets (starting at 0)."""
    return int(np.searchsorted(offsets, position, side="right") - 1)


def list_offsets_and_values(array: ListLike) -> Tuple[np.ndarray, pa.Array]:
    """``(offsets, values)`` of a list array: int64 offsets from 0, and the values those offsets index.

    Handles sliced arrays, fixed-size lists, and null rows (given length 0: Arrow lets a null row own
    values in the child array, which must be neither counted nor propagated).
    """
    if array.null_count or pa.types.is_fixed_size_list(array.type):
        lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        offsets = np.zeros(len(array) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return offsets, array.flatten()
    offsets = array.offsets.to_numpy().astype(np.int64)
    values = array.values.slice(offsets[0], offsets[-1] - offsets[0])
    return offsets - offsets[0], values


def check_label_format(label_format: Optional[str]) -> None:
    if label_format is not None and label_format not in LABEL_FORMATS:
        raise ValueError(f"label_format must be one of {LABEL_FORMATS} or None (decide from the type), got {label_format!r}")


_KIND = {
    "ids": "class ids (strings)",
    "names": "display names (strings)",
    "indices": "class indices (integers)",
    "multi_hot": "multi-hot vectors (one bool, int or float per class)",
}


def resolve_label_format(list_type: pa.DataType, label_format: Optional[str] = None) -> str:
    """The form of a column of this Arrow list type: ``label_format`` if given and possible, else from the type."""
    check_label_format(label_format)
    if not (pa.types.is_list(list_type) or pa.types.is_large_list(list_type) or pa.types.is_fixed_size_list(list_type)):
        raise HLPInputError(
            f"labels must be a list column (class ids, display names, class indices or a multi-hot vector per row), "
            f"got Arrow type {list_type}"
        )
    value_type = list_type.value_type
    if pa.types.is_string(value_type) or pa.types.is_large_string(value_type):
        possible, default = ("ids", "names", "indices"), "ids"
    elif pa.types.is_integer(value_type):
        possible = ("indices", "multi_hot")
        default = "multi_hot" if pa.types.is_fixed_size_list(list_type) else "indices"
    elif pa.types.is_boolean(value_type) or pa.types.is_floating(value_type):
        possible, default = ("multi_hot",), "multi_hot"
    elif pa.types.is_null(value_type):  # only empty rows: nothing to read
        possible, default = LABEL_FORMATS, "indices"
    else:
        raise HLPInputError(
            f"cannot read labels of Arrow type {list_type}: expected lists of class ids or names (strings), class "
            "indices (integers) or multi-hot values (bool, int or float)"
        )
    if label_format is None:
        return default
    if label_format not in possible:
        raise HLPInputError(
            f"label_format={label_format!r} needs {_KIND[label_format]}, but the column holds {list_type}"
        )
    return label_format


class LabelEncoder:
    """Class indices of an ontology from labels in any form (see the module docstring). Vocabularies are built once.

    Args:
        ontology: anything with ``labels`` (class ids) and ``names`` (display names) in class order.
    """

    def __init__(self, ontology):
        self.labels = pa.array(list(ontology.labels), pa.string())
        self.names = pa.array(list(ontology.names), pa.string())
        self.num_classes = len(self.labels)

    # ------------------------------------------------------------------ list arrays of labels
    def to_indices(
        self,
        array: ListLike,
        label_format: str,
        *,
        where: str = "labels",
        line_offset: Optional[int] = None,
        class_label_names: Optional[Sequence[str]] = None,
    ) -> Tuple[np.ndarray, np.ndarray]:
        """``(offsets, indices)`` of a list array in form ``label_format`` ("ids", "names" or "indices").

        Null rows get length 0 (the caller decides what a null row means). ``class_label_names`` are the
        names of a ``ClassLabel`` feature: its integer values are mapped to the ontology through them.
        Raises :class:`LabelError` naming ``where`` and the row.
        """
        offsets, values = list_offsets_and_values(array)
        if values.null_count:
            position = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            raise LabelError(where, row_of(offsets, position), "a label is missing (null)", line_offset)
        if label_format in ("ids", "names"):
            indices = self._tokens(values, offsets, label_format, where, line_offset)
        elif label_format == "indices":
            if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
                indices = self._decimal_indices(values, offsets, where, line_offset)
            else:
                indices = values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            limit = self.num_classes if class_label_names is None else len(class_label_names)
            bad = (indices < 0) | (indices >= limit)
            if bad.any():
                position = int(np.flatnonzero(bad)[0])
                what = "the ClassLabel's classes" if class_label_names is not None else "the classes of the ontology"
                raise LabelError(
                    where, row_of(offsets, position), f"class index {indices[position]} is outside [0, {limit}), {what}",
                    line_offset,
                )
            if class_label_names is not None:
                indices = self.class_label_mapping(class_label_names, where)[indices]
            self._check_index_rows(offsets, indices, where, line_offset)
        else:
            raise ValueError(f"to_indices reads ids, names or indices, not {label_format!r}")
        return offsets, indices

    def _tokens(self, values: pa.Array, offsets, label_format: str, where: str, line_offset) -> np.ndarray:
        tokens = values.cast(pa.string()) if pa.types.is_large_string(values.type) else values
        vocabulary, other, other_format = (
            (self.labels, self.names, "names") if label_format == "ids" else (self.names, self.labels, "ids")
        )
        positions = pc.index_in(tokens, value_set=vocabulary)
        if positions.null_count:
            position = int(np.flatnonzero(positions.is_null().to_numpy(zero_copy_only=False))[0])
            token = tokens[position].as_py()
            detail = (
                "an empty label" if token == "" else
                f"unknown label {token!r}: not one of the {self.num_classes} class "
                f"{'ids' if label_format == 'ids' else 'display names'} of the ontology"
            )
            if token and pc.is_in(pa.array([token]), value_set=other)[0].as_py():
                detail += (
                    f" (it is a class {'display name' if other_format == 'names' else 'id'}: "
                    f"pass label_format={other_format!r})"
                )
            elif label_format == "names" and any(name.startswith(f"{token},") for name in self.names.to_pylist()):
                detail += (
                    " (display names can contain commas, e.g. 'Domestic animals, pets': a comma-separated cell cuts "
                    "them; separate labels with another character, e.g. label_separator=';')"
                )
            raise LabelError(where, row_of(offsets, position), detail, line_offset)
        return positions.to_numpy(zero_copy_only=False).astype(np.int64)

    def _decimal_indices(self, values: pa.Array, offsets, where: str, line_offset) -> np.ndarray:
        tokens = pc.utf8_trim_whitespace(values.cast(pa.string()))
        numeric = pc.match_substring_regex(tokens, r"^[0-9]{1,18}$").to_numpy(zero_copy_only=False)
        if not numeric.all():
            position = int(np.flatnonzero(~numeric)[0])
            raise LabelError(
                where, row_of(offsets, position),
                f"{tokens[position].as_py()!r} is not a class index (label_format='indices')", line_offset,
            )
        return pc.cast(tokens, pa.int64()).to_numpy(zero_copy_only=False)

    def _check_index_rows(self, offsets: np.ndarray, indices: np.ndarray, where: str, line_offset) -> None:
        """Rows of class indices longer than C, or C long with a repeated class, are multi-hot vectors read as indices."""
        lengths = np.diff(offsets)
        suspect = np.flatnonzero(lengths >= self.num_classes)
        for row in suspect:  # rare in real label lists: only full-width rows are checked exactly
            values = indices[offsets[row] : offsets[row + 1]]
            if lengths[row] > self.num_classes or np.unique(values).size != values.size:
                raise LabelError(
                    where, int(row),
                    f"{lengths[row]} class indices with repeats in a {self.num_classes}-class ontology: this looks like "
                    "a multi-hot vector; pass label_format='multi_hot' (or store the column as a fixed-length list)",
                    line_offset,
                )

    # ------------------------------------------------------------------ ClassLabel features
    def class_label_mapping(self, names: Sequence[str], where: str = "labels") -> np.ndarray:
        """Ontology index of each ``ClassLabel`` name (names may be class ids or display names)."""
        names = pa.array(list(names), pa.string())
        positions = pc.coalesce(pc.index_in(names, value_set=self.labels), pc.index_in(names, value_set=self.names))
        if positions.null_count:
            first = int(np.flatnonzero(positions.is_null().to_numpy(zero_copy_only=False))[0])
            raise HLPInputError(
                f"{where}: ClassLabel class {first} is {names[first].as_py()!r}, neither a class id nor a display name "
                f"of the {self.num_classes}-class ontology"
            )
        return positions.to_numpy(zero_copy_only=False).astype(np.int64)

    # ------------------------------------------------------------------ multi-hot vectors
    def multi_hot_rows(self, array: ListLike, *, where: str = "labels", line_offset: Optional[int] = None) -> np.ndarray:
        """The (valid rows, C) matrix of a list array of multi-hot vectors (null rows left out), checked."""
        offsets, values = list_offsets_and_values(array)
        lengths = np.diff(offsets)
        valid = np.ones(len(array), dtype=bool) if not array.null_count else array.is_valid().to_numpy(zero_copy_only=False)
        wrong = valid & (lengths != self.num_classes)
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise LabelError(
                where, row,
                f"multi-hot vector of length {lengths[row]}, expected {self.num_classes} (one value per class of the ontology)",
                line_offset,
            )
        if values.null_count:
            position = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            raise LabelError(where, row_of(offsets, position), "a multi-hot value is missing (null)", line_offset)
        dense = values.to_numpy(zero_copy_only=False).reshape(-1, self.num_classes)
        if np.issubdtype(dense.dtype, np.floating):
            finite = np.isfinite(dense)
            if not finite.all():
                row_in_valid, column = (int(i) for i in np.argwhere(~finite)[0])
                raise LabelError(
                    where, int(np.flatnonzero(valid)[row_in_valid]),
                    f"multi-hot value {dense[row_in_valid, column]} for class {column} is not finite", line_offset,
                )
        return dense
