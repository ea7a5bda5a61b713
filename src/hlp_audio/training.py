"""Reusable pieces of the training scripts: manifests, clip data sets, samplers, augmentation, schedule.

``scripts/train.py`` is a thin accelerate loop over these. Every source of randomness here is keyed
by explicit integers (``seed``, epoch, step, clip index, process index) instead of a global RNG
stream, so that a run interrupted at any step and resumed gives the same batches, crops, mixup
coefficients and masks as an uninterrupted run, whatever the number of DataLoader workers.

Pieces:

- :func:`read_manifest`: a CSV / TSV / parquet file, a ``datasets`` ``Dataset`` (or a folder saved
  with ``save_to_disk``) with an audio path column and labels as class ids (AudioSet mids), display
  names or class indices -> :class:`Manifest` (paths + an Arrow list array of class indices).
- :class:`AudioClipDataset`: decodes one file per item in DataLoader workers, crops or pads it to
  the clip length (random in training, from the start in evaluation) and returns the multi-hot target.
- :class:`ShuffleSampler` and :class:`ClassBalancedSampler`: epoch-seeded samplers that every
  process of a distributed run draws identically (accelerate then shards the batches).
- :func:`mixup` and :func:`mask_time_frequency`: batched augmentation on the accelerator.
- :class:`KaldiFbankFrontEnd` (AST's filter banks) and :func:`build_front_end`: a model's feature
  extractor as a batched ``nn.Module`` that runs on the accelerator.
- :func:`build_optimizer` (AdamW, no decay on biases and norms) and :func:`build_lr_scheduler`
  (linear warmup then cosine, transformers' schedule).
- :func:`build_model` (from scratch or from a converted checkpoint, with a new head for a new label
  set), :func:`predict` (logits before post-HLP, gathered over processes) and
  :func:`evaluation_metrics` (the four mAPs of :func:`hlp_audio.metrics.compute_hierarchical_map`).
- :func:`save_trained_model`, :func:`prepare_hub_folder` and :func:`publish_model`: a trained model
  as a Hub repository (weights, config, feature extractor, remote code, model card), one commit.
"""

from __future__ import annotations

import warnings

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from .ontology import Ontology
from .propagation import list_offsets_and_values, propagate_labels

__all__ = [
    "ManifestError",
    "Manifest",
    "read_manifest",
    "add_manifest_arguments",
    "manifest_options",
    "multi_hot",
    "AudioClipDataset",
    "crop_or_pad",
    "KaldiFbankFrontEnd",
    "FEATURE_AXES",
    "build_front_end",
    "class_balanced_weights",
    "ShuffleSampler",
    "ClassBalancedSampler",
    "step_rng",
    "seed_everything_for_step",
    "mixup",
    "mask_time_frequency",
    "build_optimizer",
    "build_lr_scheduler",
    "default_backbone_config",
    "input_kind",
    "feature_extractor_for",
    "build_model",
    "post_hlp_disabled",
    "predict",
    "TrainingProgress",
    "HEADLINE_MAPS",
    "evaluation_metrics",
    "save_trained_model",
    "training_recipe",
    "prepare_hub_folder",
    "publish_model",
]

PathLike = Union[str, "os.PathLike[str]"]


class ManifestError(ValueError):
    """A manifest that cannot be used: missing column, unknown label, empty path, bad index."""


# ------------------------------------------------------------------------------------ manifests
@dataclass(frozen=True)
class Manifest:
    """Audio files and their labels as class indices of an ontology.

    ``audio`` is a pyarrow string array of file paths (compact, cheap to send to DataLoader workers
    even for the 2M AudioSet clips); ``labels`` is a pyarrow ``ListArray`` of int32 class indices,
    the form :func:`hlp_audio.propagate_labels` and ``datasets`` use.
    """

    audio: pa.Array
    labels: pa.ListArray
    num_classes: int
    source: str = "<manifest>"

    def __post_init__(self):
        if len(self.audio) != len(self.labels):
            raise ManifestError(f"{self.source}: {len(self.audio)} audio paths for {len(self.labels)} label rows")

    def __len__(self) -> int:
        return len(self.audio)

    def with_hlp(self, ontology: Ontology) -> "Manifest":
        """The same clips with HLP pre-processing: every unambiguous ancestor label added."""
        _check_width(self, ontology)
        return Manifest(self.audio, propagate_labels(self.labels, ontology), self.num_classes, self.source + " (HLP)")

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
    out[rows, values] = 1
    return out


#: keyword arguments of :func:`read_manifest` that the scripts take from the command line
MANIFEST_OPTIONS = ("audio_column", "labels_column", "audio_root", "label_separator")


def add_manifest_arguments(parser) -> None:
    """The manifest-column flags shared by ``scripts/train.py`` and ``scripts/evaluate_model.py``."""
    parser.add_argument("--audio-column", default="audio", help="column of audio file paths")
    parser.add_argument("--labels-column", default="labels", help="column of labels (mids, names or class indices)")
    parser.add_argument("--audio-root", help="folder that relative audio paths are relative to (default: the manifest's folder)")
    parser.add_argument("--label-separator", default=",", help="separator of labels in a CSV cell")


def manifest_options(args) -> dict:
    """The :func:`read_manifest` keyword arguments parsed by :func:`add_manifest_arguments`."""
    return {name: getattr(args, name) for name in MANIFEST_OPTIONS}


def read_manifest(
    source,
    ontology: Ontology,
    *,
    audio_column: str = "audio",
    labels_column: str = "labels",
    split: Optional[str] = None,
    audio_root: Optional[PathLike] = None,
    label_separator: str = ",",
) -> Manifest:
    """Read audio paths and labels from a CSV/TSV/parquet file or a ``datasets`` dataset.

    Args:
        source: a ``.csv`` / ``.tsv`` / ``.parquet`` file, a folder written by
            ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, a ``datasets.Dataset`` or a
            ``DatasetDict`` (then ``split`` is required), e.g. from ``load_audioset(audio_dir=...)``.
        ontology: the classes the labels refer to.
        audio_column: column of file paths (a string, or an ``Audio(decode=False)`` struct whose
            ``path`` is used).
        labels_column: column of labels, one of: a string of ``label_separator``-separated class
            ids / display names / class indices (CSV); a list of strings; a list of integers or
            ``ClassLabel`` values (class indices, mapped through the ClassLabel names when they
            name the ontology's classes); a single integer.
        split: which split of a ``DatasetDict``; ``"a+b"`` concatenates splits (e.g.
            ``"balanced_train+unbalanced_train"``, AudioSet-2M).
        audio_root: folder that relative paths are relative to. Defaults to the manifest file's
            folder for files, and to the working directory for datasets.
        label_separator: separator of labels inside a string cell (CSV).

    Errors name the source, the row (and the CSV line) and the label or path at fault.
    """
    table, where, root, class_names = _load_table(source, split, audio_column, labels_column)
    if audio_root is not None:
        root = os.fspath(audio_root)
    line_offset = 2 if where.endswith((".csv", ".tsv")) else None
    audio = _audio_paths(table.column(audio_column), root, where, line_offset, audio_column)
    labels = _label_indices(
        table.column(labels_column), ontology, where, line_offset, labels_column, label_separator, class_names
    )
    return Manifest(audio, labels, len(ontology), where)


def _row_text(where: str, row: int, line_offset: Optional[int]) -> str:
    text = f"{where}, row {row}"
    if line_offset is not None:
        text += f" (line {row + line_offset})"
    return text


def _load_table(source, split, audio_column, labels_column):
    """(table, description, default root, ClassLabel names or None)."""
    class_names = None
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
                        column_types={audio_column: pa.string(), labels_column: pa.string()},
                        strings_can_be_null=False,
                    ),
                )
            except pa.ArrowInvalid as err:
                raise ManifestError(f"{path}: not a readable {suffix[1:].upper()} manifest ({err})") from None
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            raise ManifestError(f"{path}: unknown manifest type {suffix!r}; expected .csv, .tsv, .parquet or a datasets folder")
        _require_columns(table.column_names, (audio_column, labels_column), str(path))
        return table, str(path), str(path.parent), class_names
    return _load_table_from_dataset(source, split, audio_column, labels_column, None)


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
    _require_columns(dataset.column_names, (audio_column, labels_column), where)
    feature = dataset.features[labels_column]
    inner = getattr(feature, "feature", feature)
    class_names = list(inner.names) if isinstance(inner, datasets.ClassLabel) else None
    table = dataset.select_columns([audio_column, labels_column]).with_format("arrow")[:]
    return table, where, None, class_names


def _require_columns(columns, needed, where):
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ManifestError(f"{where}: no column {missing[0]!r}; columns are {list(columns)}")


def _audio_paths(column, root, where, line_offset, name) -> pa.Array:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_struct(column.type):  # datasets Audio(decode=False): {"bytes", "path"}
        column = pc.struct_field(column, "path")
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise ManifestError(f"{where}: column {name!r} must hold file paths (strings), got {column.type}")
    empty = pc.or_kleene(pc.is_null(column), pc.equal(pc.utf8_length(column), 0)).to_numpy(zero_copy_only=False)
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise ManifestError(f"{_row_text(where, row, line_offset)}: empty audio path in column {name!r}")
    column = column.cast(pa.string())
    if root:
        prefix = os.fspath(root).rstrip("/") + "/"
        column = pc.if_else(pc.starts_with(column, "/"), column, pc.binary_join_element_wise(prefix, column, ""))
    return column


def _label_indices(column, ontology, where, line_offset, name, separator, class_names) -> pa.ListArray:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    num_classes = len(ontology)
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        null_rows = column.is_null().to_numpy(zero_copy_only=False)
        if null_rows.any():
            row = int(np.flatnonzero(null_rows)[0])
            raise ManifestError(f"{_row_text(where, row, line_offset)}: missing labels in column {name!r}")
        column = pc.split_pattern(column.cast(pa.string()), separator)
        kind = column.type
    if pa.types.is_integer(kind):  # one class index per row
        column = pa.ListArray.from_arrays(pa.array(np.arange(len(column) + 1, dtype=np.int32)), column)
        kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        raise ManifestError(
            f"{where}: column {name!r} must hold labels as strings, lists or class indices, got {kind}"
        )
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise ManifestError(f"{_row_text(where, row, line_offset)}: missing labels in column {name!r}")
    offsets = column.offsets.to_numpy().astype(np.int64)
    values = column.values.slice(offsets[0], offsets[-1] - offsets[0])
    offsets = offsets - offsets[0]

    if values.null_count:
        position = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise ManifestError(f"{_row_text(where, _row_at(offsets, position), line_offset)}: a null label in column {name!r}")

    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        tokens = pc.utf8_trim_whitespace(values.cast(pa.string()))
        keep = pc.not_equal(pc.utf8_length(tokens), 0).to_numpy(zero_copy_only=False)
        if not keep.all():  # "" (no label) and trailing separators leave empty tokens
            rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
            offsets = np.r_[0, np.cumsum(np.bincount(rows[keep], minlength=len(offsets) - 1))]
            tokens = tokens.filter(pa.array(keep))
        indices = _tokens_to_indices(tokens, offsets, ontology, where, line_offset)
    elif pa.types.is_integer(values.type):
        indices = values.to_numpy(zero_copy_only=False).astype(np.int64)
        limit = len(class_names) if class_names is not None else num_classes
        bad = (indices < 0) | (indices >= limit)
        if bad.any():
            position = int(np.flatnonzero(bad)[0])
            raise ManifestError(
                f"{_row_text(where, _row_at(offsets, position), line_offset)}: class index {indices[position]} "
                f"is outside [0, {limit}) in column {name!r}"
            )
        if class_names is not None:
            indices = _class_label_to_ontology(indices, class_names, ontology, where)
    else:
        raise ManifestError(f"{where}: labels in column {name!r} must be strings or integers, got {values.type}")
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(indices.astype(np.int32)))


def _row_at(offsets: np.ndarray, position: int) -> int:
    """Row of the value at ``position`` of a list array's flat values."""
    return int(np.searchsorted(offsets, position, side="right") - 1)


def _tokens_to_indices(tokens: pa.Array, offsets: np.ndarray, ontology: Ontology, where, line_offset) -> np.ndarray:
    """Each token is a class id, else a display name, else a decimal class index."""
    found = pc.index_in(tokens, value_set=pa.array(list(ontology.labels)))
    if found.null_count:
        found = pc.coalesce(found, pc.index_in(tokens, value_set=pa.array(list(ontology.names))))
    if found.null_count:
        numeric = pc.match_substring_regex(tokens, r"^[0-9]{1,18}$")
        as_index = pc.if_else(numeric, pc.cast(pc.if_else(numeric, tokens, "0"), pa.int64()), None)
        found = pc.coalesce(found, as_index.cast(found.type))
    indices = found.to_numpy(zero_copy_only=False)
    unknown = found.is_null().to_numpy(zero_copy_only=False)
    if unknown.any():
        position = int(np.flatnonzero(unknown)[0])
        raise ManifestError(
            f"{_row_text(where, _row_at(offsets, position), line_offset)}: unknown label {tokens[position].as_py()!r}, "
            f"neither a class id, a display name nor a class index of the {len(ontology)}-class ontology"
        )
    indices = indices.astype(np.int64)
    bad = indices >= len(ontology)
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise ManifestError(
            f"{_row_text(where, _row_at(offsets, position), line_offset)}: class index {indices[position]} "
            f"is outside [0, {len(ontology)})"
        )
    return indices


def _class_label_to_ontology(indices: np.ndarray, class_names: List[str], ontology: Ontology, where: str) -> np.ndarray:
    """Map ``ClassLabel`` indices to ontology indices through the ClassLabel names."""
    if tuple(class_names) in (ontology.labels, ontology.names):
        return indices
    try:
        mapping = np.asarray(ontology.indices(class_names), dtype=np.int64)
    except KeyError as err:
        raise ManifestError(f"{where}: ClassLabel names do not match the ontology: {err.args[0]}") from None
    return mapping[indices]


# ------------------------------------------------------------------------------------ clips
def crop_or_pad(waveform: np.ndarray, length: int, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Fit a mono waveform to ``length`` samples.

    Longer clips are cropped, shorter ones zero-padded. With ``rng`` the crop start (or the position
    of a short clip inside the padded window) is drawn uniformly; without it the clip starts at 0,
    as in evaluation.
    """
    size = waveform.shape[-1]
    if size == length:
        return waveform
    offset = 0 if rng is None else int(rng.integers(0, abs(size - length) + 1))
    if size > length:
        return waveform[..., offset : offset + length]
    out = np.zeros(waveform.shape[:-1] + (length,), dtype=waveform.dtype)
    out[..., offset : offset + size] = waveform
    return out


class AudioClipDataset(torch.utils.data.Dataset):
    """Clips of a :class:`Manifest`, decoded on access (in DataLoader workers).

    Each item is ``{"waveform": float32 (clip_samples,), "labels": float32 (C,), "index": int}``.
    In training (``random_crop=True``) the crop is drawn from ``(seed, epoch, index)``: the same
    item in the same epoch gets the same crop in every run, whatever the worker that loads it.
    Call :meth:`set_epoch` before iterating each epoch.

    ``decode(path, sampling_rate) -> np.ndarray`` decodes one file to mono float32 at the rate;
    it defaults to :func:`hlp_audio.modeling.audio_loading.load_audio`.
    """

    def __init__(
        self,
        manifest: Manifest,
        *,
        sampling_rate: int,
        clip_seconds: float,
        random_crop: bool = False,
        seed: int = 0,
        decode: Optional[Callable[[str, int], np.ndarray]] = None,
    ):
        if sampling_rate <= 0 or clip_seconds <= 0:
            raise ValueError(f"sampling_rate and clip_seconds must be positive, got {sampling_rate}, {clip_seconds}")
        self.audio = manifest.audio
        self.source = manifest.source
        self.num_classes = manifest.num_classes
        self._label_offsets, self._label_values = list_offsets_and_values(manifest.labels)
        self.sampling_rate = int(sampling_rate)
        self.clip_samples = int(round(clip_seconds * sampling_rate))
        self.random_crop = random_crop
        self.seed = int(seed)
        self.epoch = 0
        self.decode = decode

    def __len__(self) -> int:
        return len(self.audio)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def target(self, index: int) -> np.ndarray:
        out = np.zeros(self.num_classes, dtype=np.float32)
        out[self._label_values[self._label_offsets[index] : self._label_offsets[index + 1]]] = 1.0
        return out

    def __getitem__(self, index: int) -> Dict[str, object]:
        index = int(index)
        path = self.audio[index].as_py()
        decode = self.decode or _default_decode()
        try:
            waveform = decode(path, self.sampling_rate)
        except Exception as err:  # name the manifest row too (the decoder names the file), same type
            try:
                located = type(err)(f"{self.source}, row {index}: {err}")
            except Exception:  # an exception type that takes other arguments: leave it as it is
                raise err from None
            raise located from err
        waveform = np.asarray(waveform, dtype=np.float32)
        if waveform.ndim != 1:
            raise ValueError(f"{self.source}, row {index}: decoder returned shape {waveform.shape} for {path}, expected mono")
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.random_crop else None
        waveform = crop_or_pad(waveform, self.clip_samples, rng)
        return {"waveform": torch.from_numpy(np.ascontiguousarray(waveform)), "labels": torch.from_numpy(self.target(index)), "index": index}


def _default_decode():
    from .modeling.audio_loading import load_audio

    return load_audio


# ------------------------------------------------------------------------------------ front ends
class KaldiFbankFrontEnd(torch.nn.Module):
    """AST's input features for a batch of waveforms, on any device: ``(batch, max_length, mel_bins)``.

    The same computation as ``ASTFeatureExtractor`` (Kaldi fbank: 25 ms frames every 10 ms, no
    centring, per-frame DC removal, pre-emphasis 0.97, symmetric Hann window, 512-point power
    spectrum, 128 Kaldi mel filters from 20 Hz to Nyquist, ``log(max(mel, eps))``, zero-padded or
    truncated to ``max_length`` frames, then ``(x - mean) / (2 std)``), vectorised over the batch
    and the frames: one ``rfft`` and one matmul per batch instead of a Python loop per frame.
    Always computed in float32 (autocast off). Build it with :meth:`from_feature_extractor`.
    """

    def __init__(
        self,
        sampling_rate: int = 16000,
        num_mel_bins: int = 128,
        max_length: int = 1024,
        do_normalize: bool = True,
        mean: float = -4.2677393,
        std: float = 4.5689974,
        frame_length: int = 400,
        hop_length: int = 160,
        n_fft: int = 512,
        preemphasis: float = 0.97,
        low_frequency: float = 20.0,
        mel_floor: float = 1.192092955078125e-07,
    ):
        super().__init__()
        from .modeling.feature_extraction_hlp_audio import kaldi_mel_filter_bank

        self.sampling_rate, self.max_length = int(sampling_rate), int(max_length)
        self.frame_length, self.hop_length, self.n_fft = int(frame_length), int(hop_length), int(n_fft)
        self.do_normalize, self.mean, self.std = do_normalize, float(mean), float(std)
        self.preemphasis, self.mel_floor = float(preemphasis), float(mel_floor)
        self.register_buffer("window", torch.hann_window(self.frame_length, periodic=False, dtype=torch.float64).float(), persistent=False)
        filters = kaldi_mel_filter_bank(num_mel_bins, self.n_fft, self.sampling_rate, low_frequency, 0.0)
        self.register_buffer("mel_filters", filters.T.contiguous(), persistent=False)  # (n_fft // 2 + 1, mel)

    @classmethod
    def from_feature_extractor(cls, extractor) -> "KaldiFbankFrontEnd":
        return cls(
            sampling_rate=extractor.sampling_rate,
            num_mel_bins=extractor.num_mel_bins,
            max_length=extractor.max_length,
            do_normalize=extractor.do_normalize,
            mean=extractor.mean,
            std=extractor.std,
        )

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        if waveforms.dim() == 1:
            waveforms = waveforms.unsqueeze(0)
        if waveforms.dim() != 2 or waveforms.shape[-1] < self.frame_length:
            raise ValueError(
                f"waveforms must be (batch, samples) with at least {self.frame_length} samples, got shape {tuple(waveforms.shape)}"
            )
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            frames = waveforms.float().unfold(-1, self.frame_length, self.hop_length)  # (batch, frames, frame_length)
            frames = frames - frames.mean(dim=-1, keepdim=True)
            frames = torch.cat(
                [frames[..., :1] * (1.0 - self.preemphasis), frames[..., 1:] - self.preemphasis * frames[..., :-1]], dim=-1
            )
            spectrum = torch.fft.rfft(frames * self.window, n=self.n_fft)
            power = spectrum.real.square() + spectrum.imag.square()
            fbank = torch.log(torch.clamp(power @ self.mel_filters, min=self.mel_floor))
            missing = self.max_length - fbank.shape[1]
            fbank = torch.nn.functional.pad(fbank, (0, 0, 0, missing)) if missing > 0 else fbank[:, : self.max_length]
            if self.do_normalize:
                fbank = (fbank - self.mean) / (2.0 * self.std)
            return fbank


# (time axis, frequency axis) of the features of each backbone input kind, batch first.
FEATURE_AXES = {"ast_fbank": (1, 2), "mel32k": (2, 1)}


def build_front_end(feature_extractor) -> torch.nn.Module:
    """The batched, device-side equivalent of a model's feature extractor (waveforms -> input_values)."""
    if hasattr(feature_extractor, "build_front_end"):  # HLPAudioFeatureExtractor -> MelFrontEnd
        return feature_extractor.build_front_end()
    if type(feature_extractor).__name__ == "ASTFeatureExtractor":
        return KaldiFbankFrontEnd.from_feature_extractor(feature_extractor)
    raise TypeError(f"no batched front end for {type(feature_extractor).__name__}")


# ------------------------------------------------------------------------------------ samplers
def class_balanced_weights(labels: pa.ListArray, num_classes: int, offset: float = 100.0) -> np.ndarray:
    """Sampling weight of each clip: sum over its labels of ``1000 / (offset + clips of that class)``.

    The PaSST / EfficientAT AudioSet recipe: rare classes are drawn more often, and ``offset``
    keeps the rarest ones from dominating. Clips without labels get weight 0.
    """
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    offsets, values = list_offsets_and_values(labels)
    counts = np.bincount(values, minlength=num_classes).astype(np.float64)
    per_class = 1000.0 / (offset + counts)
    rows = np.repeat(np.arange(len(labels)), np.diff(offsets))
    return np.bincount(rows, weights=per_class[values], minlength=len(labels))


class ShuffleSampler(torch.utils.data.Sampler):
    """A permutation of ``range(size)`` drawn from ``(seed, epoch)``; ``shuffle=False`` keeps the order.

    Stateless: the order depends only on the seed and the epoch set with :meth:`set_epoch`, so
    every process of a distributed run draws the same order (accelerate shards its batches) and a
    resumed run draws the same order as an uninterrupted one.
    """

    def __init__(self, size: int, *, shuffle: bool = True, seed: int = 0):
        self.size = int(size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch))

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.size))
        return iter(torch.randperm(self.size, generator=self._generator()).tolist())


class ClassBalancedSampler(ShuffleSampler):
    """Draw ``num_samples`` clips per epoch with probability proportional to ``weights``.

    Build the weights with :func:`class_balanced_weights`. ``replacement=False`` (EfficientAT's
    choice) never repeats a clip within an epoch; it needs ``num_samples`` <= the clips of nonzero
    weight.
    """

    def __init__(self, weights, num_samples: Optional[int] = None, *, replacement: bool = False, seed: int = 0):
        weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if weights.ndim != 1 or weights.numel() == 0:
            raise ValueError(f"weights must be a non-empty 1-D array, got shape {tuple(weights.shape)}")
        if not torch.isfinite(weights).all() or (weights < 0).any():
            raise ValueError("weights must be finite and >= 0")
        positive = int((weights > 0).sum())
        num_samples = positive if num_samples is None else int(num_samples)
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        if not replacement and num_samples > positive:
            raise ValueError(
                f"cannot draw {num_samples} clips without replacement: only {positive} have a nonzero weight"
            )
        super().__init__(num_samples, shuffle=True, seed=seed)
        self.weights = weights
        self.replacement = replacement

    def __iter__(self) -> Iterator[int]:
        drawn = torch.multinomial(self.weights, self.size, self.replacement, generator=self._generator())
        return iter(drawn.tolist())


# ------------------------------------------------------------------------------------ randomness
def _mix_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> 1)


def step_rng(seed: int, step: int, process_index: int = 0) -> np.random.Generator:
    """The augmentation RNG of one training step of one process (mixup, masks)."""
    return np.random.default_rng([int(seed), int(step), int(process_index), 0x6D6978])


def seed_everything_for_step(seed: int, step: int, process_index: int = 0) -> None:
    """Reseed torch's global RNGs (dropout, drop path, patchout) from the step number.

    A resumed run then draws exactly what an uninterrupted one draws at the same step.
    """
    torch.manual_seed(_mix_seed(seed, step, process_index, 0x746F7263))


# ------------------------------------------------------------------------------------ augmentation
def mixup(
    inputs: torch.Tensor, targets: torch.Tensor, alpha: float, rng: np.random.Generator
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mix each example with another of the batch: ``lam * x + (1 - lam) * x[perm]``, same for targets.

    ``lam ~ Beta(alpha, alpha)`` per example, folded to ``max(lam, 1 - lam)`` so that the first
    example dominates (EfficientAT / PaSST recipe). Works on waveforms or features (batch first).
    """
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    batch = inputs.shape[0]
    if targets.shape[0] != batch:
        raise ValueError(f"inputs have batch {batch} but targets have {targets.shape[0]}")
    lam = rng.beta(alpha, alpha, size=batch)
    lam = np.maximum(lam, 1.0 - lam)
    perm = torch.as_tensor(rng.permutation(batch), device=inputs.device)
    lam_x = torch.as_tensor(lam, dtype=inputs.dtype, device=inputs.device).reshape((batch,) + (1,) * (inputs.ndim - 1))
    lam_y = torch.as_tensor(lam, dtype=targets.dtype, device=targets.device).reshape((batch,) + (1,) * (targets.ndim - 1))
    mixed_inputs = inputs * lam_x + inputs[perm] * (1 - lam_x)
    mixed_targets = targets * lam_y + targets[perm] * (1 - lam_y)
    return mixed_inputs, mixed_targets


def mask_time_frequency(
    features: torch.Tensor,
    rng: np.random.Generator,
    *,
    time_axis: int,
    freq_axis: int,
    time_mask: int = 0,
    freq_mask: int = 0,
    num_time_masks: int = 1,
    num_freq_masks: int = 1,
    value: float = 0.0,
) -> torch.Tensor:
    """SpecAugment-style masking of a feature batch, vectorised over examples.

    Each example gets ``num_time_masks`` bands of width ``U{0..time_mask}`` frames and
    ``num_freq_masks`` bands of width ``U{0..freq_mask}`` bins, at uniform positions, filled with
    ``value``. Axes are those of ``features`` (batch first), e.g. ``time_axis=1, freq_axis=2`` for
    AST input (batch, time, mel) and ``time_axis=2, freq_axis=1`` for (batch, mel, frames).
    Returns a new tensor.
    """
    if features.ndim < 3:
        raise ValueError(f"features must be (batch, ..., ...), got shape {tuple(features.shape)}")
    time_axis, freq_axis = time_axis % features.ndim, freq_axis % features.ndim
    if 0 in (time_axis, freq_axis) or time_axis == freq_axis:
        raise ValueError(f"time_axis and freq_axis must be two distinct non-batch axes, got {time_axis}, {freq_axis}")
    mask = torch.zeros(features.shape, dtype=torch.bool, device=features.device)
    for axis, width, count in ((time_axis, time_mask, num_time_masks), (freq_axis, freq_mask, num_freq_masks)):
        if width <= 0 or count <= 0:
            continue
        band = _band_mask(features.shape[0], features.shape[axis], min(width, features.shape[axis]), count, rng, features.device)
        shape = [1] * features.ndim
        shape[0], shape[axis] = features.shape[0], features.shape[axis]
        mask |= band.reshape(shape)
    return features.masked_fill(mask, value)


def _band_mask(batch: int, size: int, max_width: int, count: int, rng, device) -> torch.Tensor:
    widths = rng.integers(0, max_width + 1, size=(batch, count))
    starts = (rng.random(size=(batch, count)) * (size - widths + 1)).astype(np.int64)
    position = torch.arange(size, device=device)
    starts = torch.as_tensor(starts, device=device)[..., None]
    ends = starts + torch.as_tensor(widths, device=device)[..., None]
    return ((position >= starts) & (position < ends)).any(dim=1)


# ------------------------------------------------------------------------------------ optimisation
def build_optimizer(
    model: torch.nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.0,
    betas: Tuple[float, float] = (0.9, 0.999),
    head_lr: Optional[float] = None,
    head_prefix: Optional[str] = None,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases, norms and other 1-D parameters get no decay.

    With ``head_prefix`` (e.g. ``"backbone.classifier."``) and ``head_lr``, the head gets its own
    learning rate (common when fine-tuning a pre-trained body).
    """
    groups: Dict[Tuple[bool, bool], List[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_head = bool(head_prefix) and name.startswith(head_prefix)
        decays = parameter.ndim > 1 and not name.endswith(".bias")
        groups.setdefault((is_head, decays), []).append(parameter)
    if not groups:
        raise ValueError("the model has no trainable parameter")
    param_groups = []
    for (is_head, decays), params in sorted(groups.items()):
        group = {"params": params, "weight_decay": weight_decay if decays else 0.0}
        if is_head and head_lr is not None:
            group["lr"] = head_lr
        param_groups.append(group)
    return torch.optim.AdamW(param_groups, lr=lr, betas=betas)


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0, then a half cosine down to ``min_lr_ratio`` * the peak (per group)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps, min_lr_rate=min_lr_ratio
    )


# ------------------------------------------------------------------------------------ models
def default_backbone_config(backbone_type: str, size: str) -> dict:
    """``default_<kind>_config(size)`` of a backbone type (``"ast"``, ``"efficientat"``, ``"passt"``)."""
    from .modeling import modeling_ast_backbone, modeling_efficientat, modeling_passt

    factories = {
        "ast": modeling_ast_backbone.default_ast_config,
        "efficientat": modeling_efficientat.default_efficientat_config,
        "passt": modeling_passt.default_passt_config,
    }
    if backbone_type not in factories:
        raise ValueError(f"unknown backbone_type {backbone_type!r}; available: {sorted(factories)}")
    return dict(factories[backbone_type](size))


def input_kind(config) -> str:
    """``"ast_fbank"`` or ``"mel32k"``: the features the config's backbone takes."""
    from .modeling.modeling_hlp_audio import BACKBONES

    return BACKBONES[config.backbone_type].input_kind


def feature_extractor_for(config):
    """A new feature extractor matching a model config (used when training from scratch)."""
    backbone = dict(config.backbone_config or {})
    if input_kind(config) == "ast_fbank":
        from transformers import ASTFeatureExtractor

        # ASTConfig's defaults (AST-base) are 128 mel bins and 1024 frames
        return ASTFeatureExtractor(num_mel_bins=backbone.get("num_mel_bins", 128), max_length=backbone.get("max_length", 1024))
    from .modeling.feature_extraction_hlp_audio import HLPAudioFeatureExtractor

    return HLPAudioFeatureExtractor(num_mel_bins=backbone.get("num_mel_bins", 128))


def build_model(
    *,
    ontology: Optional[Ontology] = None,
    model_name_or_path: Optional[PathLike] = None,
    backbone_type: Optional[str] = None,
    backbone_size: Optional[str] = None,
    backbone_overrides: Optional[dict] = None,
    post_hlp: bool = True,
    hlp_targets: bool = False,
):
    """An ``HLPAudioForAudioClassification`` to fine-tune, its feature extractor and its ontology.

    Either from a saved HLP tagger (``model_name_or_path``: e.g. a converted AST, PaSST or
    EfficientAT checkpoint) or from scratch (``backbone_type`` + ``backbone_size``). When
    ``ontology`` differs from the checkpoint's, the head's output layer is rebuilt for the new
    classes and freshly initialised; everything else keeps its pre-trained weights. ``backbone_overrides`` update the backbone config
    (e.g. PaSST's patchout or dropout rates). ``ontology`` defaults to the checkpoint's.
    """
    from .modeling.configuration_hlp_audio import HLPAudioConfig
    from .modeling.modeling_hlp_audio import HLPAudioForAudioClassification
    from .transformers_integration import register_with_transformers

    register_with_transformers()
    overrides = dict(backbone_overrides or {})
    if model_name_or_path is None:
        if backbone_type is None or backbone_size is None:
            raise ValueError("pass model_name_or_path, or backbone_type and backbone_size to train from scratch")
        if ontology is None:
            raise ValueError("training from scratch needs an ontology")
        config = HLPAudioConfig(
            ontology=ontology.to_dict(),
            post_hlp=post_hlp,
            hlp_targets=hlp_targets,
            backbone_type=backbone_type,
            backbone_config={**default_backbone_config(backbone_type, backbone_size), **overrides},
        )
        return HLPAudioForAudioClassification(config), feature_extractor_for(config), ontology

    from transformers import AutoFeatureExtractor

    saved = HLPAudioConfig.from_pretrained(model_name_or_path)
    saved_ontology = Ontology.from_dict(saved.ontology) if saved.ontology is not None else None
    if ontology is None:
        if saved_ontology is None:
            raise ValueError(f"{model_name_or_path} has no ontology in its config; pass one")
        ontology = saved_ontology
    # A new output layer only when the classes differ (ids and order); names alone do not matter.
    new_head = saved_ontology is None or saved_ontology.labels != ontology.labels
    config = HLPAudioConfig(
        ontology=ontology.to_dict(),
        post_hlp=post_hlp,
        hlp_targets=hlp_targets,
        backbone_type=saved.backbone_type,
        backbone_config={**(saved.backbone_config or {}), **overrides},
    )
    model = HLPAudioForAudioClassification.from_pretrained(
        model_name_or_path, config=config, ignore_mismatched_sizes=new_head, dtype=torch.float32
    )
    if new_head:
        _reset_output_layers(model.classifier, len(ontology))
        warnings.warn(
            f"{model_name_or_path}: its classes differ from the {len(ontology)} given ones; the output layer "
            "was re-initialised (the rest of the model keeps its pre-trained weights)"
        )
    return model, AutoFeatureExtractor.from_pretrained(model_name_or_path), ontology


def _reset_output_layers(head: torch.nn.Module, num_labels: int) -> None:
    """Re-initialise the head's output layers (those with ``num_labels`` outputs) for a new label set.

    ``ignore_mismatched_sizes`` already re-initialises them when the class count changes; with the
    same count the old weights, which score other classes, would load silently. The rest of the
    head (e.g. EfficientAT's hidden layer, AST's layer norm) keeps its pre-trained weights.
    """
    outputs = [m for m in head.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_labels]
    if not outputs:
        raise ValueError(f"the classifier head has no Linear layer with {num_labels} outputs to re-initialise")
    for layer in outputs:
        layer.reset_parameters()


class post_hlp_disabled:
    """Context manager: run a model without post-HLP (``config.post_hlp`` is read at every call)."""

    def __init__(self, model):
        self.config = model.config

    def __enter__(self):
        self.saved = self.config.post_hlp
        self.config.post_hlp = False
        return self

    def __exit__(self, *exc):
        self.config.post_hlp = self.saved
        return False


@torch.no_grad()
def predict(model, loader, front_end, accelerator=None, *, progress: bool = False, desc: str = "evaluating"):
    """Logits before post-HLP and targets of every clip of ``loader``: two (N, C) float32 arrays.

    With an ``accelerator`` the results of all processes are gathered (``gather_for_metrics``
    drops the duplicates that pad the last batch), so every process returns the whole set.
    """
    from tqdm.auto import tqdm

    unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
    was_training = model.training
    model.eval()
    logits, targets = [], []
    show = progress and (accelerator is None or accelerator.is_local_main_process)
    try:
        with post_hlp_disabled(unwrapped):
            for batch in tqdm(loader, desc=desc, disable=not show, leave=False):
                features = front_end(batch["waveform"])
                batch_logits = model(input_values=features).logits.float()
                batch_targets = batch["labels"].float()
                if accelerator is not None:
                    batch_logits, batch_targets = accelerator.gather_for_metrics((batch_logits, batch_targets))
                logits.append(batch_logits.cpu())
                targets.append(batch_targets.cpu())
    finally:
        model.train(was_training)
    num_classes = unwrapped.config.num_labels
    if not logits:
        return np.zeros((0, num_classes), np.float32), np.zeros((0, num_classes), np.float32)
    return torch.cat(logits).numpy(), torch.cat(targets).numpy()


class TrainingProgress:
    """Where a run stands; saved in every checkpoint (``accelerator.register_for_checkpointing``)."""

    def __init__(self):
        self.epoch = 0  # epochs completed
        self.batches_in_epoch = 0  # batches of the current epoch already trained on
        self.global_step = 0  # optimizer updates
        self.micro_step = 0  # batches trained on, all epochs (the key of per-step randomness)
        self.best_metric: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.history: List[dict] = []  # one entry of evaluation results per epoch

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        unknown = set(state) - set(self.__dict__)
        if unknown:
            raise ValueError(f"unknown training progress fields {sorted(unknown)}")
        self.__dict__.update(state)


# ------------------------------------------------------------------------------------ evaluation
# The four headline figures: (reference labels, post-HLP) -> key of the metrics dict.
HEADLINE_MAPS = {
    ("AS-Base", False): "map",
    ("AS-Base", True): "map_post",
    ("AS-HLP", False): "map_hlp",
    ("AS-HLP", True): "map_hlp_post",
}


def evaluation_metrics(logits, labels, ontology: Ontology, *, return_per_class: bool = False) -> Dict[str, object]:
    """mAP on the base and HLP references, with and without post-HLP, from raw logits and base labels.

    A call to :func:`hlp_audio.metrics.compute_hierarchical_map` (the implementation behind the
    ``hierarchical_map`` evaluate module): ``map``, ``map_post``, ``map_hlp``, ``map_hlp_post``,
    the same over the receiving classes, ``auc``, ``d_prime`` and counts (and per-class lists).
    """
    from .metrics import compute_hierarchical_map

    return compute_hierarchical_map(logits, labels, ontology, return_per_class=return_per_class)


def save_trained_model(accelerator, model, feature_extractor, folder: PathLike, *, args: dict, metrics=None, progress=None) -> None:
    """Save a model folder ready for ``from_pretrained`` and the Hub, from every process (main writes).

    Writes the safetensors weights, ``config.json`` (with the ontology), the remote code, the
    feature extractor, ``training_args.json`` and ``eval_results.json`` (the metrics of this model).
    """
    state_dict = accelerator.get_state_dict(model)  # a collective call under FSDP / DeepSpeed
    if accelerator.is_main_process:
        folder = Path(folder)
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(folder, state_dict=state_dict)
        feature_extractor.save_pretrained(folder)
        import json

        (folder / "training_args.json").write_text(json.dumps(args, indent=2, default=str))
        if metrics is not None:
            record = dict(metrics)
            if progress is not None:
                record.setdefault("epoch", progress.epoch)
                record.setdefault("step", progress.global_step)
            (folder / "eval_results.json").write_text(json.dumps(record, indent=2))
    accelerator.wait_for_everyone()


# ------------------------------------------------------------------------------------ Hub
BACKBONE_NAMES = {"ast": "AST", "efficientat": "EfficientAT (MobileNetV3)", "passt": "PaSST"}


def _looks_like_audioset(config) -> bool:
    labels = (config.ontology or {}).get("labels", [])
    return len(labels) == 527 and all(label.startswith(("/m/", "/t/", "/g/")) for label in labels)


def training_recipe(args: dict) -> Dict[str, str]:
    """The training recipe of a run, label -> text, from its ``training_args.json`` (for the model card)."""
    recipe: Dict[str, str] = {}
    if args.get("model_name_or_path"):
        recipe["Initialisation"] = f"`{args['model_name_or_path']}`"
    else:
        recipe["Initialisation"] = f"from scratch ({args.get('backbone_type')}, size {args.get('backbone_size')})"
    if args.get("freeze_body"):
        recipe["Trained parameters"] = "classifier head only (linear probing)"
    recipe["Training labels"] = "HLP-propagated (label pre-processing)" if args.get("hlp") else "original labels"
    if args.get("train_clips"):
        recipe["Training clips"] = f"{args['train_clips']:,}"
    recipe["Loss"] = "binary cross-entropy on the logits before post-HLP"
    processes = int(args.get("num_processes") or 1)
    effective = int(args.get("batch_size", 0)) * int(args.get("gradient_accumulation_steps", 1)) * processes
    recipe["Epochs"] = str(args.get("epochs"))
    recipe["Batch size"] = (
        f"{effective} ({args.get('batch_size')} per device x {args.get('gradient_accumulation_steps', 1)} accumulation "
        f"x {processes} process(es))"
    )
    recipe["Optimiser"] = f"AdamW, peak learning rate {args.get('lr')}, weight decay {args.get('weight_decay')} (none on biases and norms)"
    if args.get("head_lr"):
        recipe["Optimiser"] += f", head learning rate {args['head_lr']}"
    warmup = f"{args['warmup_steps']} steps" if args.get("warmup_steps") is not None else f"{args.get('warmup_ratio')} of the steps"
    recipe["Schedule"] = f"linear warmup ({warmup}), cosine decay to {args.get('min_lr_ratio')} x the peak"
    if args.get("max_grad_norm"):
        recipe["Gradient clipping"] = f"norm {args['max_grad_norm']}"
    augmentation = []
    if args.get("mixup"):
        augmentation.append(f"mixup (alpha {args['mixup']})")
    if args.get("time_mask"):
        augmentation.append(f"{args.get('num_time_masks', 1)} time mask(s) up to {args['time_mask']} frames")
    if args.get("freq_mask"):
        augmentation.append(f"{args.get('num_freq_masks', 1)} frequency mask(s) up to {args['freq_mask']} bins")
    augmentation.append(f"random crop / pad to {args.get('clip_seconds')} s")
    recipe["Augmentation"] = ", ".join(augmentation)
    if args.get("balanced_sampler"):
        size = args.get("epoch_size") or "all"
        recipe["Sampling"] = f"class-balanced (weights 1000 / ({args.get('sampler_offset')} + class count)), {size} clips per epoch"
    else:
        recipe["Sampling"] = "uniform, shuffled every epoch"
    patchout = {key: (args.get("backbone_config") or {}).get(key) for key in ("s_patchout_t", "s_patchout_f", "u_patchout")}
    if any(value is not None for value in patchout.values()):
        recipe["Patchout"] = ", ".join(f"{key} {value}" for key, value in patchout.items() if value is not None)
    recipe["Precision"] = str(args.get("mixed_precision") or "fp32 (accelerate default)")
    recipe["Seed"] = str(args.get("seed"))
    return recipe


def prepare_hub_folder(
    model_dir: PathLike,
    folder: PathLike,
    *,
    repo_id: str,
    base_model: Optional[str] = None,
    ontology_name: Optional[str] = None,
    backbone: Optional[str] = None,
) -> Path:
    """Write a Hub-ready copy of a trained model folder: weights (safetensors), config, feature
    extractor, remote code, ``eval_results.json`` and a ``README.md`` model card.

    The card's ``model-index`` holds the four mAPs of ``model_dir/eval_results.json`` (AS-Base and
    AS-HLP, post-HLP off and on) and its training section the recipe of ``training_args.json``.
    """
    import json

    from transformers import AutoFeatureExtractor

    from .model_card import HLPModelCard, MAPResult
    from .modeling.modeling_hlp_audio import HLPAudioForAudioClassification
    from .transformers_integration import register_with_transformers

    register_with_transformers()
    model_dir, folder = Path(model_dir), Path(folder)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a saved model folder (no config.json)")
    model = HLPAudioForAudioClassification.from_pretrained(model_dir)
    feature_extractor = AutoFeatureExtractor.from_pretrained(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)  # safetensors + config + the modeling files (remote code)
    feature_extractor.save_pretrained(folder)

    args = json.loads((model_dir / "training_args.json").read_text()) if (model_dir / "training_args.json").is_file() else {}
    args.pop("hub_token", None)
    metrics = json.loads((model_dir / "eval_results.json").read_text()) if (model_dir / "eval_results.json").is_file() else {}
    results = [
        MAPResult(labels, post_hlp=post, value=metrics[key])
        for (labels, post), key in HEADLINE_MAPS.items()
        if metrics.get(key) is not None
    ]
    if metrics:
        (folder / "eval_results.json").write_text(json.dumps(metrics, indent=2))
    if args:
        (folder / "training_args.json").write_text(json.dumps(args, indent=2))
    config = model.config
    if base_model is None:
        source = args.get("model_name_or_path")
        # a Hub id ("owner/name") links on the Hub; a local folder does not
        if source and not os.path.exists(source) and source.count("/") == 1:
            base_model = source
    if backbone is None:
        backbone = BACKBONE_NAMES.get(config.backbone_type, config.backbone_type)
        if args.get("backbone_size"):
            backbone += f" {args['backbone_size']}"
    card = HLPModelCard.from_model(
        model,
        repo_id.split("/")[-1],
        feature_extractor=feature_extractor,
        backbone=backbone,
        repo_id=repo_id,
        results=results,
        training=training_recipe(args) if args else {},
        base_model=base_model,
        ontology_name=ontology_name or ("AudioSet" if _looks_like_audioset(config) else "custom"),
    )
    card.save(folder)
    return folder


def publish_model(
    model_dir: PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: Optional[str] = None,
    api=None,
    commit_message: Optional[str] = None,
    **card_fields,
):
    """Push a trained model folder to the Hub in one commit (see :func:`prepare_hub_folder`).

    ``api`` is an ``HfApi`` or a fake with ``create_repo`` / ``upload_folder`` (tests). Returns
    what ``upload_folder`` returns.
    """
    import tempfile

    from .hub import push_folder

    with tempfile.TemporaryDirectory(prefix="hlp_audio_push_") as tmp:
        folder = prepare_hub_folder(model_dir, Path(tmp) / "repo", repo_id=repo_id, **card_fields)
        return push_folder(
            folder,
            repo_id,
            private=private,
            token=token,
            api=api,
            commit_message=commit_message or f"Upload HLP audio tagger from {Path(model_dir).name}",
        )
