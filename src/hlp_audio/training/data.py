"""The data of a run: a source read whole (map-style, memory-mapped) or streamed, behind one interface.

:func:`train_data` gives the training batches of each epoch (:class:`MapTrainData`: a sampler over a
:class:`Manifest`, batches sharded by accelerate; :class:`StreamTrainData`: a :class:`ClipStream` read by
every process and worker, a fixed number of batches per epoch); :func:`eval_loader` the evaluation
batches of this process (every clip once over all processes: no padding duplicates).
Manifests are checked before anything runs (:mod:`.audio_check`); skipped clips are reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from .audio_check import audio_problems, checked_manifest
from .clips import AudioClipDataset, collate_clips
from .columns import SourceError
from .manifests import Manifest, add_manifest_arguments, manifest_options
from .sampling import ClassBalancedSampler, ShuffleSampler, class_balanced_weights
from .sources import open_source
from .streaming import ClipStream, StreamCheckpoint, StreamLoader

__all__ = [
    "add_data_arguments", "train_data", "eval_loader", "check_clip_count", "MapTrainData", "StreamTrainData", "shard_for_process",
]

SOURCE_HELP = (
    "a Hub dataset repo id or a local folder of parquet / WebDataset shards (read with datasets.load_dataset), "
    "a save_to_disk folder, or a CSV / TSV / parquet manifest of audio files"
)


def add_data_arguments(parser) -> None:
    """The data flags shared by ``scripts/train.py``, ``scripts/evaluate_model.py`` and ``scripts/prepare_data.py`` (columns,
    DataLoader workers, streaming, checks)."""
    add_manifest_arguments(parser)
    parser.add_argument(
        "--streaming", action="store_true",
        help="read Hub repos / folders of shards as streams (split over processes and DataLoader workers) instead of "
        "preparing them whole in the datasets cache",
    )
    parser.add_argument("--num-workers", type=int, default=4, help="DataLoader workers decoding audio")
    parser.add_argument("--shuffle-buffer", type=int, default=256, help="streaming: clips per shuffle block of each reader")
    parser.add_argument("--cache-dir", help="datasets cache folder (default: datasets' own)")
    parser.add_argument(
        "--skip-bad-audio", action="store_true",
        help="leave out clips that cannot be decoded instead of stopping: each is logged by id, counted and listed in "
        "OUTPUT_DIR/skipped_clips.jsonl",
    )
    parser.add_argument(
        "--no-audio-check", action="store_true",
        help="do not check every file (or encoded clip's header) of a source read whole before starting",
    )


def _open(data, config, split, args, ontology, accelerator, report: Optional[Path]):
    """A checked :class:`Manifest` or a :class:`StreamSource` (the main process checks; the others get its result)."""
    readers = accelerator.num_processes * max(1, args.num_workers)
    source = open_source(
        data, ontology, config=config, split=split, streaming=args.streaming, cache_dir=args.cache_dir,
        min_shards=readers, **manifest_options(args),
    )
    if isinstance(source, Manifest) and not args.no_audio_check:
        problems = [None]
        if accelerator.is_main_process:
            accelerator.print(f"checking the audio of {len(source)} clips of {source.source} ...")
            problems = [audio_problems(source)]
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(problems)
        source = checked_manifest(
            source, problems=problems[0], skip=args.skip_bad_audio, report=report if accelerator.is_main_process else None,
            log=accelerator.print,
        )
    return source


class MapTrainData:
    """Training batches of a :class:`Manifest`: a seeded sampler, batches sharded over processes by accelerate.

    ``annotated_classes``: with ``--loss-on-annotated-classes``, the (C,) bool mask of the classes the training
    labels annotate (after HLP with ``--hlp``), the partial-label loss mask; else None.
    """

    checkpoint = None

    def __init__(self, manifest: Manifest, args, ontology, sampling_rate: int, pin_memory: bool):
        sampling_labels = manifest.labels  # weights from the original labels: runs with and without --hlp draw the same clips
        if args.hlp:  # before mixup: a mix of propagated labels, not a propagated mix
            manifest = manifest.with_hlp(ontology)
        self.clips = len(manifest)
        self.annotated_classes = None
        if args.loss_on_annotated_classes:  # checked before the sampler, which has nothing to draw without labels either
            self.annotated_classes = manifest.annotated_classes()
            if not self.annotated_classes.any():
                raise ValueError(f"--loss-on-annotated-classes: {manifest.source} has no label at all")
        self.dataset = AudioClipDataset(
            manifest, sampling_rate=sampling_rate, clip_seconds=args.clip_seconds, random_crop=True, seed=args.seed,
            skip_bad_audio=args.skip_bad_audio,
        )
        if args.balanced_sampler:
            weights = class_balanced_weights(sampling_labels, len(ontology), offset=args.sampler_offset)
            self.sampler = ClassBalancedSampler(weights, args.epoch_size, replacement=args.sampler_replacement, seed=args.seed)
        else:
            self.sampler = ShuffleSampler(len(self.dataset), seed=args.seed)
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=args.batch_size, sampler=self.sampler, drop_last=True, collate_fn=collate_clips,
            num_workers=args.num_workers, pin_memory=pin_memory,
        )
        if len(self.loader) == 0:
            raise ValueError(f"{len(self.dataset)} training clips make no full batch of {args.batch_size}")

    def prepare(self, accelerator) -> None:
        self.loader = accelerator.prepare(self.loader)

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int, skip: int, accelerator):
        # accelerate's loader re-sets the epoch of the sampler (and data set) from its own counter at
        # every iteration: set that counter too, or a resumed run would redraw epoch 0's order
        self.loader.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        return accelerator.skip_first_batches(self.loader, skip) if skip else self.loader

    def before_checkpoint(self, accelerator) -> None:
        pass


class StreamTrainData:
    """Training batches of a stream: each process reads its own shards; ``epoch_size`` clips make an epoch."""

    annotated_classes = None  # a stream does not know them before it is read: --loss-on-annotated-classes is an error

    def __init__(self, source, args, ontology, sampling_rate: int, accelerator):
        if args.balanced_sampler:
            raise SourceError(
                f"{source.where}: --balanced-sampler draws clips at random and needs the split read whole; drop "
                "--streaming (the split is then prepared once and memory-mapped) or train without it"
            )
        epoch_size = args.epoch_size or source.num_examples
        if not epoch_size:
            raise SourceError(
                f"{source.where}: its dataset card does not give the number of clips; pass --epoch-size (clips per epoch) with --streaming"
            )
        per_update = args.batch_size * accelerator.num_processes * args.gradient_accumulation_steps
        updates = epoch_size // per_update
        if updates == 0:
            raise ValueError(f"an epoch of {epoch_size} clips makes no optimizer step of {per_update} clips")
        if args.loss_on_annotated_classes:
            raise SourceError(
                f"{source.where}: --loss-on-annotated-classes needs the classes the training labels annotate, which a "
                "stream does not know before it is read: drop --streaming (the split is then prepared once and "
                "memory-mapped)"
            )
        self.clips = epoch_size
        stream = ClipStream(
            source, ontology, sampling_rate=sampling_rate, clip_seconds=args.clip_seconds, random_crop=True,
            shuffle=True, block_size=args.shuffle_buffer, seed=args.seed, hlp=args.hlp, passes=None,
            process_index=accelerator.process_index, num_processes=accelerator.num_processes,
            skip_bad_audio=args.skip_bad_audio,
        )
        self.loader = StreamLoader(
            stream, batch_size=args.batch_size, num_workers=args.num_workers, device=accelerator.device,
            pin_memory=accelerator.device.type == "cuda", batches_per_epoch=updates * args.gradient_accumulation_steps,
        )
        self.checkpoint = StreamCheckpoint(self.loader, accelerator.process_index, accelerator.num_processes)

    def prepare(self, accelerator) -> None:
        pass

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int, skip: int, accelerator):
        return self.loader.batches(len(self.loader) - skip)  # the positions already stand after the skipped batches

    def before_checkpoint(self, accelerator) -> None:
        self.checkpoint.gather(accelerator)


def train_data(args, ontology, sampling_rate: int, accelerator, report: Optional[Path] = None):
    """:class:`MapTrainData` or :class:`StreamTrainData` of ``--train-data`` (see the module docstring)."""
    source = _open(args.train_data, args.train_config, args.train_split, args, ontology, accelerator, report)
    if isinstance(source, Manifest):
        return MapTrainData(source, args, ontology, sampling_rate, accelerator.device.type == "cuda")
    return StreamTrainData(source, args, ontology, sampling_rate, accelerator)


def shard_for_process(manifest: Manifest, process_index: int, num_processes: int) -> Manifest:
    """The contiguous part of the clips that one process evaluates (every clip once over all processes)."""
    import numpy as np

    bounds = np.linspace(0, len(manifest), num_processes + 1).astype(np.int64)
    return manifest.select(np.arange(bounds[process_index], bounds[process_index + 1]))


def eval_loader(
    data, config, split, args, ontology, sampling_rate: int, clip_seconds: float, batch_size: int, accelerator,
    report: Optional[Path] = None,
):
    """This process's evaluation batches of a source: each clip once over all processes, cropped from its start."""
    source = _open(data, config, split, args, ontology, accelerator, report)
    if isinstance(source, Manifest):
        manifest = shard_for_process(source, accelerator.process_index, accelerator.num_processes)
        dataset = AudioClipDataset(
            manifest, sampling_rate=sampling_rate, clip_seconds=clip_seconds, skip_bad_audio=args.skip_bad_audio
        )
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_clips, num_workers=args.num_workers,
            pin_memory=accelerator.device.type == "cuda",
        )
        loader.clips, loader.description = len(source), source.source
        return loader
    stream = ClipStream(
        source, ontology, sampling_rate=sampling_rate, clip_seconds=clip_seconds, passes=1,
        process_index=accelerator.process_index, num_processes=accelerator.num_processes,
        skip_bad_audio=args.skip_bad_audio, block_size=args.shuffle_buffer,
    )
    loader = StreamLoader(
        stream, batch_size=batch_size, num_workers=args.num_workers, device=accelerator.device,
        pin_memory=accelerator.device.type == "cuda",
    )
    loader.clips, loader.description = source.num_examples, source.where
    return loader


def check_clip_count(loader, read: int, skipped: int) -> None:
    """An evaluation must have met every clip of its source: a missing shard is an error, not a smaller set."""
    expected = getattr(loader, "clips", None)
    if expected is not None and read + skipped != expected:
        raise SourceError(
            f"{loader.description}: {read} clips read{f' and {skipped} skipped' if skipped else ''}, but it has {expected} "
            "(its dataset card says so): a shard is missing or ended early"
        )
