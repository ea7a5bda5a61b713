"""Training manifests: audio clips and their labels as class indices of an ontology.

:func:`read_manifest` reads a CSV / TSV / parquet file or a ``datasets`` dataset (or a folder saved with
``save_to_disk``) with an audio column (file paths, or the encoded files themselves: ``Audio(decode=False)``
structs or binary) and a labels column, through the one label normaliser (:mod:`hlp_audio.labels`: class
ids, display names, class indices or multi-hot vectors), into a :class:`Manifest` (the audio + an Arrow
list array of class indices). Errors name the source, the row (and the CSV line) and the label or path at
fault. Hub repositories and folders of shards are read by :mod:`.sources`, which builds on this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..labels import LABEL_FORMATS, HLPInputError, LabelError, describe_row, list_offsets_and_values, resolve_label_format
from ..ontology import Ontology
from ..propagation import propagate_labels
from .columns import AudioColumn, column_of, feature_of, is_audio_bytes_type, resolve_columns

__all__ = [
    "ManifestError",
    "Manifest",
    "read_manifest",
    "multi_hot",
    "MANIFEST_OPTIONS",
    "add_manifest_arguments",
    "manifest_options",
]

PathLike = Union[str, "os.PathLike[str]"]


class ManifestError(HLPInputError):
    """A manifest that cannot be used: missing column, unknown label, empty path, bad index."""


@dataclass(frozen=True)
class Manifest:
    """Audio clips and their labels as class indices of an ontology.

    ``audio`` is a pyarrow string array of file paths (compact, cheap to send to DataLoader workers
    even for the 2M AudioSet clips) or an :class:`~hlp_audio.training.columns.AudioColumn` of encoded
    files (the bytes column of a ``datasets`` dataset); ``labels`` is a pyarrow ``ListArray`` of int32
    class indices, the form :func:`hlp_audio.propagate_labels` and ``datasets`` use; ``ids`` (optional)
    names each clip (``video_id``, ``__key__``) in messages.
    """

    audio: Union[pa.Array, AudioColumn]
    labels: pa.ListArray
    num_classes: int
    source: str = "<manifest>"
    ids: Optional[pa.Array] = None

    def __post_init__(self):
        if len(self.audio) != len(self.labels):
            raise ManifestError(f"{self.source}: {len(self.audio)} audio clips for {len(self.labels)} label rows")

    def __len__(self) -> int:
        return len(self.audio)

    def with_hlp(self, ontology: Ontology) -> "Manifest":
        """The same clips with HLP pre-processing: every unambiguous ancestor label added."""
        _check_width(self, ontology)
        return Manifest(self.audio, propagate_labels(self.labels, ontology), self.num_classes, self.source + " (HLP)", self.ids)

    def select(self, rows) -> "Manifest":
        """The clips at these row positions (e.g. without the ones that failed the audio check)."""
        rows = np.asarray(rows, dtype=np.int64)
        audio = self.audio.take(pa.array(rows)) if isinstance(self.audio, pa.Array) else self.audio.take(rows)
        ids = None if self.ids is None else self.ids.take(pa.array(rows))
        return Manifest(audio, self.labels.take(pa.array(rows)), self.num_classes, self.source, ids)

    def clip_name(self, row: int) -> str:
        """``row 5 (id abc)``: how messages name a clip."""
        clip = None if self.ids is None else self.ids[int(row)].as_py()
        return f"row {row}" + (f" (id {clip})" if clip is not None else "")

    def annotated_classes(self) -> np.ndarray:
        """(C,) bool: the classes with at least one positive, the label vocabulary of these clips."""
        annotated = np.zeros(self.num_classes, dtype=bool)
        annotated[list_offsets_and_values(self.labels)[1].to_numpy(zero_copy_only=False)] = True
        return annotated

    def multi_hot(self, dtype=np.float32) -> np.ndarray:
        """Dense (N, C) targets. Memory grows as N * C: use the data set for large manifests."""
        return multi_hot(self.labels, self.num_classes, dtype=dtype)


def _check_width(manifest: Manifest, ontology: Ontology) -> None:
    if manifest.num_classes != len(ontology):
        raise ManifestError(
            f"{manifest.source}: labels index {manifest.num_classes} classes but the ontology has {len(ontology)}"
        )


def multi_hot(labels: pa.ListArray, num_classes: int, dtype=np.float32) -> np.ndarray:
    """(N, C) multi-hot matrix of a list array of class indices (vectorised, no loop over rows)."""
    offsets, values = list_offsets_and_values(labels)
    out = np.zeros((len(labels), num_classes), dtype=dtype)
    rows = np.repeat(np.arange(len(labels)), np.diff(offsets))
    out[rows, values.to_numpy(zero_copy_only=False)] = 1
    return out


#: keyword arguments of :func:`read_manifest` that the scripts take from the command line
MANIFEST_OPTIONS = ("audio_column", "labels_column", "audio_root", "label_separator", "label_format")


def add_manifest_arguments(parser) -> None:
    """The manifest-column flags shared by ``scripts/train.py`` and ``scripts/evaluate_model.py``."""
    parser.add_argument(
        "--audio-column",
        help="column of audio: file paths, or encoded files (Audio structs / binary) (default: 'audio', else the one audio column)",
    )
    parser.add_argument(
        "--labels-column",
        help="column of labels (mids, names or class indices); dotted for a struct field, e.g. json.label "
        "(default: 'labels', else the labels / label field of a json column)",
    )
    parser.add_argument("--audio-root", help="folder that relative audio paths are relative to (default: the manifest's folder)")
    parser.add_argument("--label-separator", default=",", help="separator of labels in a CSV cell")
    parser.add_argument(
        "--label-format", choices=LABEL_FORMATS,
        help="form of the labels (default: from the column type: strings are class ids, integers class indices)",
    )


def manifest_options(args) -> dict:
    """The :func:`read_manifest` keyword arguments parsed by :func:`add_manifest_arguments`."""
    return {name: getattr(args, name) for name in MANIFEST_OPTIONS}


def read_manifest(
    source,
    ontology: Ontology,
    *,
    audio_column: Optional[str] = None,
    labels_column: Optional[str] = None,
    split: Optional[str] = None,
    audio_root: Optional[PathLike] = None,
    label_separator: str = ",",
    label_format: Optional[str] = None,
    name: Optional[str] = None,
) -> Manifest:
    """Read audio paths and labels from a CSV/TSV/parquet file or a ``datasets`` dataset.

    Args:
        source: a ``.csv`` / ``.tsv`` / ``.parquet`` file, a folder written by
            ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, a ``datasets.Dataset`` or a
            ``DatasetDict`` (then ``split`` is required), e.g. from ``load_audioset(audio_dir=...)``.
        ontology: the classes the labels refer to.
        audio_column: column of file paths (strings), or of encoded files (``Audio`` structs with
            ``bytes``, or binary: decoded from memory; rows without bytes fall back to their ``path``).
            Default: ``audio`` (see :func:`~hlp_audio.training.columns.resolve_columns` for datasets).
        labels_column: column of labels (default ``labels``; dotted names reach into struct columns, e.g.
            ``json.label``), one of: a string of ``label_separator``-separated labels
            (CSV); a list of strings; a list of integers or ``ClassLabel`` values (class indices,
            mapped through the ClassLabel names); a single integer; multi-hot vectors (fixed-length
            lists, bools or floats, or ``label_format="multi_hot"``).
        split: which split of a ``DatasetDict``; ``"a+b"`` concatenates splits (e.g.
            ``"balanced_train+unbalanced_train"``, AudioSet-2M).
        audio_root: folder that relative paths are relative to. Defaults to the manifest file's
            folder for files, and to the working directory for datasets.
        label_separator: separator of labels inside a string cell (CSV).
        label_format: the form of the labels (see :mod:`hlp_audio.labels`): ``"ids"`` (the default for
            strings), ``"names"`` (display names), ``"indices"`` (the default for integers, also decimal
            strings in a CSV) or ``"multi_hot"``.
        name: how messages name a ``datasets`` source (default: its folder, or its dataset name).

    Errors name the source, the row (and the CSV line) and the label or path at fault.
    """
    table, where, root, dataset, features = _load_table(source, split, audio_column, labels_column, name)
    if audio_root is not None:
        root = os.fspath(audio_root)
    line_offset = 2 if where.endswith((".csv", ".tsv")) else None
    if line_offset is not None:
        audio_column, labels_column, id_column = audio_column or "audio", labels_column or "labels", None
    else:
        schema = table.schema if dataset is None else features.arrow_schema
        audio_column, labels_column, id_column = resolve_columns(
            schema, features, audio_column=audio_column, labels_column=labels_column, where=where
        )
    if dataset is not None:
        table = _dataset_columns(dataset, [labels_column, id_column])
        audio = _dataset_audio(dataset, audio_column, root, where)
    else:
        audio = _audio(column_of(table, audio_column), root, where, line_offset, audio_column)
    labels = _label_indices(
        column_of(table, labels_column), ontology, where, line_offset, labels_column, label_separator,
        class_label_names(feature_of(features, labels_column)), label_format,
    )
    ids = column_of(table, id_column).cast(pa.string()) if id_column else None
    return Manifest(audio, labels, len(ontology), where, ids)


def _dataset_columns(dataset, names) -> pa.Table:
    """The (top-level) columns holding ``names`` (dotted or not; None skipped) of a dataset, as one table."""
    heads = sorted({name.partition(".")[0] for name in names if name})
    return dataset.select_columns(heads).with_format("arrow")[:]


def _dataset_audio(dataset, name, root, where) -> Union[pa.Array, AudioColumn]:
    """The audio of a datasets.Dataset: file paths, or an :class:`AudioColumn` when its rows hold bytes.

    Only the column's null bitmaps are read here (from the underlying, memory-mapped table): the bytes
    stay on disk until a DataLoader worker reads a row.
    """
    head = name.partition(".")[0]
    if head in dataset.data.column_names and _holds_bytes(dataset.data.column(head)):
        return AudioColumn(dataset, name)
    return _audio(column_of(_dataset_columns(dataset, [name]), name), root, where, None, name)


def class_label_names(feature) -> Optional[list]:
    """The names of a ``ClassLabel`` feature (or of a list of them), else None."""
    inner = getattr(feature, "feature", feature)
    return list(inner.names) if type(inner).__name__ == "ClassLabel" else None


def _load_table(source, split, audio_column, labels_column, name=None):
    """(table, description, default root, the datasets.Dataset or None, its features or None)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"manifest {path} does not exist")
        if path.is_dir():
            import datasets

            dataset = datasets.load_from_disk(str(path))
            return _load_table_from_dataset(dataset, split, audio_column, labels_column, str(path))
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            import pyarrow.csv as pacsv

            delimiter = "\t" if suffix == ".tsv" else ","
            try:
                table = pacsv.read_csv(
                    path,
                    parse_options=pacsv.ParseOptions(delimiter=delimiter),
                    # keep every cell as text: labels like "0,5" or ids like "001" must not be cast
                    convert_options=pacsv.ConvertOptions(
                        column_types={audio_column or "audio": pa.string(), labels_column or "labels": pa.string()},
                        strings_can_be_null=False,
                    ),
                )
            except pa.ArrowInvalid as err:
                raise ManifestError(f"{path}: not a readable {suffix[1:].upper()} manifest ({err})") from None
            _require_columns(table.column_names, (audio_column or "audio", labels_column or "labels"), str(path))
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path)
            except (pa.ArrowInvalid, OSError) as err:
                raise ManifestError(f"{path}: not a readable parquet file ({err})") from None
        else:
            raise ManifestError(f"{path}: unknown manifest type {suffix!r}; expected .csv, .tsv, .parquet or a datasets folder")
        return table, str(path), str(path.parent), None, None
    return _load_table_from_dataset(source, split, audio_column, labels_column, name)


def _load_table_from_dataset(dataset, split, audio_column, labels_column, where):
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        if split is None:
            raise ManifestError(f"a DatasetDict needs split=...; it has {sorted(dataset)}")
        names = split.split("+")  # "balanced_train+unbalanced_train": AudioSet-2M
        missing = [name for name in names if name not in dataset]
        if missing:
            raise ManifestError(f"split {missing[0]!r} is not in the DatasetDict (it has {sorted(dataset)})")
        parts = [dataset[name] for name in names]
        dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
        where = f"{where or 'dataset'}[{split}]"
    if not isinstance(dataset, datasets.Dataset):
        raise ManifestError(
            f"a manifest must be a file path, a datasets.Dataset or a DatasetDict; got {type(dataset).__name__}"
        )
    where = where or f"dataset({dataset.info.dataset_name or 'in memory'})"
    return None, where, None, dataset, dataset.features


def _require_columns(columns, needed, where):
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ManifestError(f"{where}: no column {missing[0]!r}; columns are {list(columns)}")


def _holds_bytes(column) -> bool:
    """Binary, or ``Audio`` structs with bytes in at least one row: the encoded files themselves (structs without
    any bytes point at local files by their paths)."""
    if not is_audio_bytes_type(column.type):
        return False
    return not pa.types.is_struct(column.type) or pc.struct_field(column, "bytes").null_count < len(column)


def _audio(column, root, where, line_offset, name) -> Union[pa.Array, AudioColumn]:
    """File paths (checked, made absolute), or an :class:`AudioColumn` when the rows hold the files' bytes."""
    if _holds_bytes(column):
        return AudioColumn(column, name)  # encoded files, decoded from memory in DataLoader workers
    if is_audio_bytes_type(column.type):
        column = pc.struct_field(column, "path")  # Audio structs of local files: paths only
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise ManifestError(
            f"{where}: column {name!r} must hold file paths (strings) or encoded audio (binary, Audio structs), got {column.type}"
        )
    empty = pc.or_kleene(pc.is_null(column), pc.equal(pc.utf8_length(column), 0)).to_numpy(zero_copy_only=False)
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise ManifestError(f"{describe_row(where, row, line_offset)}: empty audio path in column {name!r}")
    column = column.cast(pa.string())
    if root:
        prefix = os.fspath(root).rstrip("/") + "/"
        column = pc.if_else(pc.starts_with(column, "/"), column, pc.binary_join_element_wise(prefix, column, ""))
    return column


def _label_indices(
    column, ontology, where, line_offset, name, separator, class_names, label_format, row_offset: int = 0
) -> pa.ListArray:
    """The labels column as rows of class indices, through the one label normaliser (:mod:`hlp_audio.labels`).

    ``row_offset`` is added to the row numbers of errors (for a block read from the middle of a shard).
    """
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise ManifestError(f"{describe_row(where, row + row_offset, line_offset)}: missing labels in column {name!r}")
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):  # a CSV cell: split it
        column = _split_cells(column.cast(pa.string()), separator)
    elif pa.types.is_integer(column.type):  # one class index per row
        column = pa.ListArray.from_arrays(pa.array(np.arange(len(column) + 1, dtype=np.int32)), column)
    where = f"{where}, column {name!r}"
    try:
        label_format = resolve_label_format(column.type, label_format)
        if label_format == "multi_hot":
            dense = ontology.label_encoder.multi_hot_rows(column, where=where, line_offset=line_offset)
            binary = (dense == 0) | (dense == 1)
            if not binary.all():
                row, klass = (int(i) for i in np.argwhere(~binary)[0])
                raise LabelError(where, row, f"multi-hot value {dense[row, klass]} for class {klass} is neither 0 nor 1", line_offset)
            rows, indices = np.nonzero(dense)
            offsets = np.zeros(len(dense) + 1, dtype=np.int64)
            np.cumsum(np.bincount(rows, minlength=len(dense)), out=offsets[1:])
        else:
            offsets, indices = ontology.label_encoder.to_indices(
                column, label_format, where=where, line_offset=line_offset, class_label_names=class_names
            )
    except LabelError as err:
        raise ManifestError(f"{describe_row(err.where, err.row + row_offset, err.line_offset)}: {err.detail}") from None
    except HLPInputError as err:
        raise ManifestError(str(err)) from None
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(indices.astype(np.int32)))


def _split_cells(cells: pa.Array, separator: str) -> pa.ListArray:
    """CSV cells of ``separator``-separated labels as lists of trimmed tokens; an empty cell is no label."""
    tokens = pc.split_pattern(cells, separator)
    offsets, values = list_offsets_and_values(tokens)
    values = pc.utf8_trim_whitespace(values)
    keep = pc.not_equal(pc.utf8_length(values), 0).to_numpy(zero_copy_only=False)
    if not keep.all():  # "" (no label) and trailing separators leave empty tokens
        rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        offsets = np.r_[0, np.cumsum(np.bincount(rows[keep], minlength=len(offsets) - 1))]
        values = values.filter(pa.array(keep))
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
