"""Streaming clips: a split read shard by shard, split over processes and DataLoader workers, resumable.

**Readers.** Every DataLoader worker of every accelerate process is one reader ``c`` of
``C = processes x workers``. In pass ``p`` (one pass = the whole split once) the shards are ordered
(permuted from ``(seed, p)`` when shuffling) and reader ``c`` takes shards ``c, c + C, ...`` of that
order; with fewer shards than readers, every reader reads every shard and keeps the rows ``r`` with
``(r + shard) % C == c``. Either way each clip of a pass goes to exactly one reader.

**Blocks.** A reader reads a shard in blocks of ``block_size`` rows (``IterableDataset.iter``) and,
when shuffling, gives a block's clips in an order drawn from ``(seed, pass, shard, first row)``: a
shuffle buffer of one block (plus the shard order). Labels are read once per block (one Arrow
kernel call, HLP included); audio is decoded clip by clip, in the worker.

**Positions.** Each item carries its reader's position after it: the pass, the slot of the shard in the
reader's list, the shard's ``datasets`` ``state_dict`` before the block, the block's first row, and how
many of the block's clips were given. That is enough to continue exactly: reopen the shard, load the
state, re-read that one block, skip what was given. :class:`StreamLoader` keeps the position of the last
batch consumed from each worker and starts every epoch (and a resumed run) from there, so that a run
continues where its stream stopped instead of re-reading it from the start; with the same numbers of
processes and workers the batches are exactly those of an uninterrupted run.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterator, Optional

import numpy as np
import pyarrow as pa
import torch

from ..propagation import propagate_labels
from .clips import clip_item, collate_clips
from .columns import SourceError, audio_value, feature_of
from .manifests import _label_indices, multi_hot
from .sources import StreamSource, check_tar_end

__all__ = ["ClipStream", "StreamLoader", "StreamCheckpoint"]


def _cells(block: dict, name: str) -> list:
    """Column ``name`` (dotted: a struct field) of a block of rows in python form."""
    if name in block:
        return block[name]
    head, _, field = name.partition(".")
    return [None if value is None else value.get(field) for value in block[head]]


def _arrow_type(features, name: str):
    import datasets

    return datasets.Features({"column": feature_of(features, name)}).arrow_schema.field("column").type


class ClipStream(torch.utils.data.IterableDataset):
    """Clips of a :class:`~hlp_audio.training.sources.StreamSource`, one reader per DataLoader worker.

    Items are those of :class:`~hlp_audio.training.clips.AudioClipDataset` plus ``stream_state``. With
    ``passes=None`` the stream never ends (pass after pass, each reshuffled): training takes a fixed
    number of batches per epoch from it. ``process_index`` / ``num_processes``: this accelerate process.
    """

    def __init__(
        self,
        source: StreamSource,
        ontology,
        *,
        sampling_rate: int,
        clip_seconds: Optional[float],
        random_crop: bool = False,
        shuffle: bool = False,
        block_size: int = 256,
        seed: int = 0,
        hlp: bool = False,
        passes: Optional[int] = 1,
        process_index: int = 0,
        num_processes: int = 1,
        skip_bad_audio: bool = False,
        decode: Optional[Callable] = None,
    ):
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.source, self.ontology = source, ontology
        self.sampling_rate = int(sampling_rate)
        self.clip_samples = None if clip_seconds is None else int(round(clip_seconds * sampling_rate))  # None: whole clips
        self.random_crop, self.shuffle, self.block_size, self.seed, self.hlp = random_crop, shuffle, int(block_size), int(seed), hlp
        self.passes, self.process_index, self.num_processes = passes, int(process_index), int(num_processes)
        self.skip_bad_audio, self.decode = skip_bad_audio, decode
        self.labels_type = _arrow_type(source.features, source.labels_column)
        self.positions: Dict[int, dict] = {}  # role -> position to start from (see StreamLoader)
        self.role_offset = 0

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        role = (worker + self.role_offset) % workers
        readers = self.num_processes * workers
        return self._read(role, self.process_index * workers + role, readers, self.positions.get(role))

    def plan(self, pass_index: int, reader: int, readers: int):
        """``(shards, keep)``: the shard numbers reader ``reader`` reads in this pass, and its row filter or None."""
        shards = np.arange(len(self.source))
        if self.shuffle:
            shards = np.random.default_rng([self.seed, pass_index, 0x73686172]).permutation(shards)
        if len(shards) >= readers:
            return shards[reader::readers].tolist(), None
        return shards.tolist(), (reader, readers)

    def _read(self, role: int, reader: int, readers: int, position: Optional[dict]) -> Iterator[dict]:
        pass_index = position["pass"] if position else 0
        while self.passes is None or pass_index < self.passes:
            shards, keep = self.plan(pass_index, reader, readers)
            given, whole_pass = 0, position is None
            for slot in range(position["slot"] if position else 0, len(shards)):
                for item in self._read_shard(role, pass_index, slot, shards[slot], keep, position):
                    given += 1
                    yield item
                position = None
            if given == 0 and whole_pass and self.passes is None:  # an endless stream giving this reader nothing would hang
                raise SourceError(
                    f"{self.source.where}: reader {reader} of {readers} (processes x DataLoader workers) got no clip in "
                    "a whole pass: the split has fewer clips than readers; use fewer --num-workers"
                )
            position = None
            pass_index += 1

    def _read_shard(self, role, pass_index, slot, shard, keep, position) -> Iterator[dict]:
        dataset = self.source.shard(shard)
        name = self.source.shard_name(shard)
        where = f"{self.source.where}, {name}"
        state, row, skip = (position["state"], position["row"], position["done"]) if position else (None, 0, 0)
        if state is not None:
            dataset.load_state_dict(state)
        blocks = dataset.iter(batch_size=self.block_size)
        while True:
            try:
                block = next(blocks)
            except StopIteration:
                break
            except Exception as err:  # a truncated or corrupt shard
                raise SourceError(f"{where}: unreadable after row {row}: {type(err).__name__}: {err}") from err
            after = dataset.state_dict()  # the shard's state after this block: where the next one starts
            size = len(block[self.source.audio_column.partition(".")[0]])
            rows = np.arange(row, row + size)
            if keep is not None:
                rows = rows[(rows + shard) % keep[1] == keep[0]]
            if self.shuffle:
                rows = np.random.default_rng([self.seed, pass_index, shard, row]).permutation(rows)
            targets = self._block_targets(block, row, where)
            audio, ids = _cells(block, self.source.audio_column), None
            if self.source.id_column:
                ids = _cells(block, self.source.id_column)
            for done, absolute in enumerate(rows.tolist(), 1):
                if done <= skip:
                    continue
                local = absolute - row
                clip = ids[local] if ids is not None and ids[local] is not None else f"shard {shard} row {absolute}"
                item = clip_item(
                    audio_value(audio[local]),
                    targets[local],
                    index=absolute,
                    clip_id=str(clip),
                    where=f"{where}, row {absolute} (id {clip})",
                    sampling_rate=self.sampling_rate,
                    clip_samples=self.clip_samples,
                    rng=np.random.default_rng([self.seed, pass_index, shard, absolute]) if self.random_crop else None,
                    decode=self.decode,
                    skip_bad_audio=self.skip_bad_audio,
                )
                last = done == len(rows)
                item["stream_state"] = (role, {
                    "pass": pass_index, "slot": slot, "state": after if last else state,
                    "row": row + size if last else row, "done": 0 if last else done,
                })
                yield item
            skip, state, row = 0, after, row + size
        url = self.source.shard_file(shard)
        if url is not None and url.endswith(".tar"):  # a tar cut at a member boundary reads as a shorter one
            problem = check_tar_end(url)
            if problem:
                raise SourceError(f"{where}: {problem} (after row {row - 1})")

    def _block_targets(self, block: dict, row: int, where: str) -> np.ndarray:
        """(rows, C) float32 multi-hot targets of the block's labels (HLP-propagated with ``hlp``); errors name the row."""
        cells = _cells(block, self.source.labels_column)
        try:
            column = pa.array(cells, type=self.labels_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise SourceError(f"{where}, rows {row}-{row + len(cells) - 1}: unreadable labels ({err})") from None
        labels = _label_indices(
            column, self.ontology, where, None, self.source.labels_column, self.source.label_separator,
            self.source.class_names, self.source.label_format, row_offset=row,
        )
        if self.hlp:
            labels = propagate_labels(labels, self.ontology)
        return multi_hot(labels, len(self.ontology))


class StreamLoader:
    """The batches of a :class:`ClipStream` for one process, moved to its device.

    Iterating gives one epoch: ``batches_per_epoch`` batches of an endless stream, continuing where the
    last epoch stopped (the position of the last batch consumed from each worker is remembered, and
    saved by :meth:`state_dict` for a resumed run); or all the batches of a finite stream (``passes``),
    from its start every time (evaluation). Every process reads its own clips, so results are
    gathered after the loop (not per batch).
    """

    def __init__(
        self,
        stream: ClipStream,
        *,
        batch_size: int,
        num_workers: int = 0,
        device=None,
        pin_memory: bool = False,
        batches_per_epoch: Optional[int] = None,
    ):
        self.stream, self.batch_size, self.num_workers = stream, int(batch_size), int(num_workers)
        self.device, self.pin_memory, self.batches_per_epoch = device, pin_memory, batches_per_epoch
        self.positions: Dict[int, dict] = {}
        self.role_offset = 0

    def __len__(self) -> int:
        if self.batches_per_epoch is None:
            raise TypeError("a finite stream has no length before it is read")
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[dict]:
        if self.stream.passes is not None:  # a finite stream is read whole, from its start
            self.positions, self.role_offset = {}, 0
        return self.batches(self.batches_per_epoch)

    def batches(self, limit: Optional[int] = None) -> Iterator[dict]:
        """Up to ``limit`` batches (all when None), continuing from the remembered positions."""
        if limit is not None and limit <= 0:
            return
        self.stream.positions, self.stream.role_offset = dict(self.positions), self.role_offset
        loader = torch.utils.data.DataLoader(
            self.stream, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate_clips,
            pin_memory=self.pin_memory,
        )
        count = 0
        for batch in loader:
            role, position = batch.pop("stream_state")
            self.positions[role] = position
            self.role_offset = (role + 1) % max(1, self.num_workers)
            if self.device is not None and "waveform" in batch:
                batch["waveform"] = batch["waveform"].to(self.device, non_blocking=True)
                batch["labels"] = batch["labels"].to(self.device, non_blocking=True)
            yield batch
            count += 1
            if limit is not None and count >= limit:
                return

    def state_dict(self) -> dict:
        return {"positions": self.positions, "role_offset": self.role_offset, "num_workers": self.num_workers}

    def load_state_dict(self, state: dict) -> None:
        if state["num_workers"] != self.num_workers:
            raise ValueError(
                f"the stream was saved with {state['num_workers']} DataLoader workers per process and is resumed with "
                f"{self.num_workers}: each worker reads its own shards, so resume with --num-workers {state['num_workers']}"
            )
        self.positions = {int(role): position for role, position in state["positions"].items()}
        self.role_offset = int(state["role_offset"])


class StreamCheckpoint:
    """The stream positions of every process, saved in accelerate checkpoints (``register_for_checkpointing``).

    Call :meth:`gather` on every process before ``save_state``: the main process writes the file.
    """

    def __init__(self, loader: StreamLoader, process_index: int, num_processes: int):
        self.loader, self.process_index, self.num_processes = loader, process_index, num_processes
        self._gathered = None

    def gather(self, accelerator) -> None:
        from accelerate.utils import gather_object

        self._gathered = gather_object([self.loader.state_dict()]) if self.num_processes > 1 else [self.loader.state_dict()]

    def state_dict(self) -> dict:
        return {"processes": self._gathered or [self.loader.state_dict()]}

    def load_state_dict(self, state: dict) -> None:
        processes = state["processes"]
        if len(processes) != self.num_processes:
            raise ValueError(
                f"the stream was saved by {len(processes)} processes and is resumed by {self.num_processes}: "
                "resume with the same number of processes"
            )
        self.loader.load_state_dict(processes[self.process_index])
