"""Data sources of ``scripts/train.py`` and ``scripts/evaluate_model.py``: whatever ``datasets.load_dataset`` takes.

:func:`open_source` reads

- a manifest file (``.csv`` / ``.tsv`` / ``.parquet``) or a ``save_to_disk`` folder: :func:`read_manifest`;
- a Hub dataset repo id (``agkphysics/AudioSet``, ``confit/audioset-16khz-wds``) or a local folder of
  parquet or WebDataset shards (with a ``README.md`` declaring its configs, or plain shard files), with a
  config name and a split (``a+b`` joins splits): ``datasets.load_dataset``, whole (a memory-mapped
  :class:`Manifest`) or, with ``streaming=True``, as a :class:`StreamSource` of shards for
  :class:`~hlp_audio.training.streaming.ClipStream`.

Audio columns are never decoded by ``datasets`` (its ``Audio`` feature needs torchcodec): parquet
``Audio`` columns are cast to ``Audio(decode=False)`` and WebDataset audio fields are read as binary;
the bytes are decoded in DataLoader workers with soundfile. Errors name the source, config and split
(and, for streams, the shard and the row).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import List, Optional, Union

from .columns import SourceError, feature_of, resolve_columns
from .manifests import Manifest, class_label_names, read_manifest

__all__ = ["SourceError", "StreamSource", "open_source", "source_kind", "load_split", "check_tar_end", "describe_source"]

_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def source_kind(source) -> str:
    """``"manifest"`` (a file), ``"saved"`` (a ``save_to_disk`` folder), ``"shards"`` (a folder of shards) or ``"hub"``."""
    path = Path(os.fspath(source))
    if path.is_file():
        return "manifest"
    if path.is_dir():
        saved = ("dataset_info.json", "state.json", "dataset_dict.json")
        return "saved" if any((path / name).is_file() for name in saved) else "shards"
    if _REPO_ID.match(os.fspath(source)) and not os.fspath(source).startswith((".", "/")):
        return "hub"
    raise FileNotFoundError(f"data source {source}: no such file or folder (and not a Hub repo id like org/name)")


def describe_source(source, config: Optional[str], split: Optional[str]) -> str:
    """``agkphysics/AudioSet [balanced/train]``: how messages name a split of a source."""
    return f"{os.fspath(source)} [{config or 'default'}/{split}]"


def load_split(source, config: Optional[str], split: str, *, streaming: bool, cache_dir: Optional[str] = None):
    """One split of a Hub repo or folder of shards, with its audio left encoded (see the module docstring)."""
    import datasets

    where = describe_source(source, config, split)
    try:
        probe = datasets.load_dataset(os.fspath(source), config, split=split, streaming=True, cache_dir=cache_dir)
        features = probe.features
        audio = [name for name, feature in (features or {}).items() if isinstance(feature, datasets.Audio)]
        if audio and probe.info.builder_name == "webdataset":
            # the WebDataset builder encodes Audio fields with torchcodec: read the files as bytes instead
            features = datasets.Features({**features, **{name: datasets.Value("binary") for name in audio}})
            dataset = datasets.load_dataset(
                os.fspath(source), config, split=split, streaming=streaming, features=features, cache_dir=cache_dir
            )
        else:
            dataset = probe if streaming else datasets.load_dataset(os.fspath(source), config, split=split, cache_dir=cache_dir)
            for name in audio:
                dataset = dataset.cast_column(name, datasets.Audio(decode=False))
    except (ValueError, FileNotFoundError, KeyError) as err:
        raise SourceError(f"{where}: cannot be loaded: {type(err).__name__}: {err}") from err
    except Exception as err:  # a shard that cannot be read while preparing: find and name it
        bad = _find_bad_shard(source, config, split)
        raise SourceError(f"{where}: cannot be prepared{': ' + bad if bad else ''} ({type(err).__name__}: {err})") from err
    return dataset


def data_files(source, config: Optional[str], split: str) -> List[str]:
    """The shard files of a split, in the order ``datasets`` reads them (empty if they cannot be listed)."""
    import datasets

    try:
        files = datasets.load_dataset_builder(os.fspath(source), config).config.data_files
    except Exception:  # only used to name shards in messages
        return []
    return [str(name) for name in (files or {}).get(split, [])]


def check_tar_end(url: str) -> Optional[str]:
    """None if the tar file ends with its end-of-archive marker (two zero blocks), else what is wrong.

    A tar cut at a member boundary reads as a shorter, valid archive: only the missing marker tells.
    """
    from datasets.utils.file_utils import xopen

    with xopen(url, "rb") as handle:
        size = handle.seek(0, 2)
        if size < 1024:
            return f"{size} bytes: too short for a tar archive"
        handle.seek(size - 1024)
        if handle.read(1024).strip(b"\0"):
            return "no end-of-archive marker: the file is truncated (it ends early)"
    return None


def _find_bad_shard(source, config, split) -> Optional[str]:
    """Which shard of a split cannot be read (parquet footer, tar end marker); None if none is found."""
    for url in data_files(source, config, split):
        try:
            if url.endswith(".tar"):
                problem = check_tar_end(url)
            elif url.endswith(".parquet"):
                import pyarrow.parquet as pq
                from datasets.utils.file_utils import xopen

                with xopen(url, "rb") as handle:
                    pq.ParquetFile(handle)
                problem = None
            else:
                continue
        except Exception as err:
            problem = f"{type(err).__name__}: {err}"
        if problem:
            return f"shard {url}: {problem}"
    return None


class StreamSource:
    """A split (or splits joined with ``+``) of a Hub repo or folder of shards, read shard by shard.

    Holds one streaming ``datasets.IterableDataset`` per split (picklable: it travels to DataLoader
    workers) and the list of shards ``(part, index)``; :meth:`shard` opens one shard as its own
    iterable dataset, whose ``state_dict`` says where a reader stands in it. Columns are resolved
    once (:func:`~hlp_audio.training.columns.resolve_columns`), the label form from the column type.
    """

    def __init__(
        self,
        source,
        config: Optional[str],
        split: str,
        *,
        cache_dir: Optional[str] = None,
        audio_column: Optional[str] = None,
        labels_column: Optional[str] = None,
        label_format: Optional[str] = None,
        label_separator: str = ",",
        min_shards: int = 1,
    ):
        self.source, self.config, self.split = os.fspath(source), config, split
        self.where = describe_source(source, config, split)
        self.splits = split.split("+")
        self.parts = [load_split(source, config, name, streaming=True, cache_dir=cache_dir) for name in self.splits]
        self.files = [data_files(source, config, name) for name in self.splits]
        if sum(part.num_shards for part in self.parts) < min_shards:  # parquet: one shard per row group
            try:
                self.parts = [part.reshard() for part in self.parts]
            except Exception as err:  # reading the row groups of a damaged file
                bad = next(filter(None, (_find_bad_shard(source, config, name) for name in self.splits)), None)
                raise SourceError(f"{self.where}: cannot be split into row groups{': ' + bad if bad else ''} ({type(err).__name__}: {err})") from err
        features = self.parts[0].features
        for name, part in zip(self.splits[1:], self.parts[1:]):
            if part.features != features:
                raise SourceError(f"{self.where}: split {name!r} has other columns than {self.splits[0]!r}")
        self.features = features
        self.audio_column, self.labels_column, self.id_column = resolve_columns(
            features.arrow_schema, features, audio_column=audio_column, labels_column=labels_column, where=self.where
        )
        self.class_names = class_label_names(feature_of(features, self.labels_column))
        self.label_format, self.label_separator = label_format, label_separator
        self.shards = [(part, index) for part, dataset in enumerate(self.parts) for index in range(dataset.num_shards)]
        if not self.shards:
            raise SourceError(f"{self.where}: no shard to read")
        sizes = [_split_size(dataset) for dataset in self.parts]
        self.num_examples = sum(sizes) if all(size is not None for size in sizes) else None

    def __len__(self) -> int:
        """The number of shards."""
        return len(self.shards)

    def shard(self, number: int):
        """Shard ``number`` of :attr:`shards` as a one-shard ``IterableDataset``."""
        part, index = self.shards[number]
        dataset = self.parts[part]
        return dataset.shard(num_shards=dataset.num_shards, index=index, contiguous=True)

    def shard_name(self, number: int) -> str:
        """``shard 3 (.../data/bal_train/00003.parquet)``, or ``shard 3 of split train`` when files are unknown."""
        part, index = self.shards[number]
        url = self.shard_file(number)
        return f"shard {index} ({url})" if url is not None else f"shard {index} of split {self.splits[part]!r}"

    def shard_file(self, number: int) -> Optional[str]:
        """The file of shard ``number``, or None when the files of its split cannot be matched to its shards."""
        part, index = self.shards[number]
        files = self.files[part]
        return files[index] if len(files) == self.parts[part].num_shards else None


def _split_size(dataset) -> Optional[int]:
    """The split's number of examples from the dataset card (``dataset_info``), if it states one."""
    splits = dataset.info.splits or {}
    info = splits.get(str(dataset.split)) if dataset.split is not None else None
    return int(info.num_examples) if info is not None and info.num_examples else None


def open_source(
    source,
    ontology,
    *,
    config: Optional[str] = None,
    split: Optional[str] = None,
    streaming: bool = False,
    cache_dir: Optional[str] = None,
    min_shards: int = 1,
    audio_column: Optional[str] = None,
    labels_column: Optional[str] = None,
    audio_root=None,
    label_separator: str = ",",
    label_format: Optional[str] = None,
) -> Union[Manifest, StreamSource]:
    """A :class:`Manifest` (read whole) or, for ``streaming`` Hub repos / folders of shards, a :class:`StreamSource`.

    ``split`` is required for Hub repos and folders of shards (``"a+b"`` joins splits); ``config``
    names their configuration (``balanced``, ``full``, ``20k``, ...). ``min_shards``: a stream with fewer
    shards than this (its readers) is resharded where the format allows (parquet row groups).
    """
    kind = source_kind(source)
    columns = dict(audio_column=audio_column, labels_column=labels_column, label_format=label_format, label_separator=label_separator)
    if kind in ("manifest", "saved"):
        if streaming:
            warnings.warn(
                f"{source}: a manifest or a save_to_disk folder is read whole (memory-mapped); --streaming applies to Hub "
                "repos and folders of parquet / WebDataset shards"
            )
        if config:
            raise SourceError(f"{source}: a config name applies to Hub repos and folders of shards, not to a {kind} source")
        return read_manifest(source, ontology, split=split, audio_root=audio_root, **columns)
    if not split:
        raise SourceError(f"{describe_source(source, config, split)}: pass a split (e.g. train, test, or a+b)")
    if streaming:
        return StreamSource(source, config, split, cache_dir=cache_dir, min_shards=min_shards, **columns)
    import datasets

    parts = [load_split(source, config, name, streaming=False, cache_dir=cache_dir) for name in split.split("+")]
    for name in split.split("+"):
        tars = [url for url in data_files(source, config, name) if url.endswith(".tar")]
        for url in tars:  # a tar cut at a member boundary loads as a shorter split: check each one's end
            problem = check_tar_end(url)
            if problem:
                raise SourceError(f"{describe_source(source, config, name)}, shard {url}: {problem}")
    dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    return read_manifest(dataset, ontology, name=describe_source(source, config, split), audio_root=audio_root, **columns)
