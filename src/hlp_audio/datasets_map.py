"""HLP as a ``datasets`` map function: ``ds.map(hlp_propagate(ontology), batched=True)``.

>>> ds = ds.map(hlp_propagate(ontology, output_column="hlp_labels"), batched=True)  # doctest: +SKIP

:func:`hlp_propagate` works on every form a label column takes (class ids, display names, class
indices and ``List(ClassLabel)``, multi-hot vectors; see :mod:`hlp_audio.labels`) and writes its
result in the same form (same Arrow type, same ``datasets`` feature). The form of the column is
decided once, from its type (or ``label_format``), never from the values of a batch.

With the default (python) format and with the ``"arrow"`` format, ``Dataset.map`` hands the batch
over as an Arrow table: the column is propagated with array kernels
(:func:`hlp_audio.propagation.propagate_label_array`), without converting rows to Python objects,
and the function returns an Arrow table. Other inputs (``IterableDataset`` in python format, the
numpy and torch formats) are converted to Arrow, propagated by the same kernel, and converted back.
The map function itself needs only pyarrow and numpy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa

from .labels import HLPInputError, LabelError, check_label_format
from .ontology import Ontology
from .propagation import containers_to_arrow, propagate_label_array

__all__ = ["HLPPropagate", "hlp_propagate"]


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
        check_label_format(label_format)
        self.ontology = ontology
        self.column = column
        self.output_column = output_column
        self.label_format = label_format
        # (input metadata, output metadata, ClassLabel names to map through, column is a ClassLabel)
        self._metadata_cache: Tuple[Optional[bytes], Optional[bytes], Optional[List[str]], bool] = (
            None, None, None, False,
        )

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
        metadata, class_label_names, is_class_label = self._schema_metadata(table.schema)
        result = self._propagate(table.column(self.column), indices, class_label_names, is_class_label)
        field = pa.field(self.target_column, result.type)
        if self.target_column in table.column_names:
            table = table.set_column(table.column_names.index(self.target_column), field, result)
        else:
            table = table.append_column(field, result)
        if metadata is not None:
            table = table.replace_schema_metadata(metadata)
        return table

    def _schema_metadata(self, schema: pa.Schema) -> Tuple[Optional[dict], Optional[List[str]], bool]:
        """The schema metadata for the output table (None: keep it), the ClassLabel names of the input column
        when they are not the ontology's own order (None otherwise), and whether the column is a ClassLabel.
        Cached on the metadata bytes, which repeat for every batch."""
        raw = (schema.metadata or {}).get(b"huggingface")
        if raw is None or raw != self._metadata_cache[0]:
            self._metadata_cache = (raw, *self._read_features(schema, raw))
        _, new_raw, names, is_class_label = self._metadata_cache
        return (None if new_raw is None else {**schema.metadata, b"huggingface": new_raw}), names, is_class_label

    def _read_features(self, schema: pa.Schema, raw: Optional[bytes]):
        features = _feature_dicts(schema)
        if features is None or self.column not in features:
            return None, None, False
        names = _class_label_names(features[self.column])
        is_class_label = names is not None
        if is_class_label and list(names) in (list(self.ontology.names), list(self.ontology.labels)):
            names = None  # the ontology's own numbering: nothing to map
        new_raw = None
        if self.target_column != self.column:
            info = json.loads(raw)
            info["info"]["features"][self.target_column] = features[self.column]
            new_raw = json.dumps(info).encode()
        return new_raw, names, is_class_label

    def _call_mapping(self, batch: Mapping, indices) -> dict:
        if self.column not in batch:
            raise KeyError(f"column {self.column!r} not found; the columns are {list(batch)}")
        array, restore = containers_to_arrow(batch[self.column])
        return {self.target_column: restore(self._propagate(array, indices, None, False))}

    def _propagate(self, array, indices, class_label_names, is_class_label: bool):
        label_format = self.label_format or ("indices" if is_class_label else None)  # ClassLabel values are indices
        try:
            return propagate_label_array(
                array, self.ontology, label_format, where=f"column {self.column!r}",
                class_label_names=class_label_names,
            )
        except LabelError as err:
            if indices is None:
                where = f"row {err.row} of this batch"
                hint = " (map with with_indices=True to have the dataset row named)"
            else:
                row = int(indices) if isinstance(indices, (int, np.integer)) else int(indices[err.row])
                where, hint = f"row {row}", ""
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
        column: the label column: lists of class ids or display names (strings), lists of class
            indices (integers, e.g. ``List(ClassLabel)``, mapped through the ClassLabel names when they
            are the ontology's classes in another order) or multi-hot vectors (one value per class).
        output_column: ``None`` replaces ``column``; a name writes the result there (with the same
            ``datasets`` feature as ``column``, ClassLabel names included).
        label_format: ``"ids"``, ``"names"``, ``"indices"`` or ``"multi_hot"``; ``None`` decides from
            the column's type, once: strings are ids, integer lists are indices, fixed-length integer
            lists and bool/float lists are multi-hot (see :mod:`hlp_audio.labels`). A column of integer
            multi-hot vectors stored as variable-length lists needs ``label_format="multi_hot"``.

    The output has the input's representation: label lists keep their labels in order followed by
    the added ancestors in class order; multi-hot vectors keep their dtype; null rows stay null.
    Unknown labels, out-of-range indices and vectors of the wrong length raise
    :class:`~hlp_audio.HLPInputError` naming the column and row.

    >>> ds = ds.map(hlp_propagate(ontology, output_column="hlp_labels"), batched=True)  # doctest: +SKIP
    """
    return HLPPropagate(ontology, column, output_column, label_format)


