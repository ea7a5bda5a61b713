"""Training and evaluation of HLP taggers with accelerate (``scripts/train.py``, ``scripts/evaluate_model.py``).

By concept:

- :mod:`.manifests`: audio (files or encoded bytes) + labels (CSV / TSV / parquet / ``datasets``) -> :class:`Manifest`;
- :mod:`.columns`: which columns hold the audio, labels and clip ids; :class:`AudioColumn` (encoded files in a column);
- :mod:`.sources`: what ``load_dataset`` takes (Hub repos, folders of parquet / WebDataset shards) -> a
  :class:`Manifest` or a :class:`StreamSource`;
- :mod:`.streaming`: :class:`ClipStream` / :class:`StreamLoader`: shards split over processes and workers, resumable;
- :mod:`.clips`: :class:`AudioClipDataset`, decoding in DataLoader workers, crop / pad, :func:`collate_clips`;
- :mod:`.audio_check`: every clip's file or header checked before training; :mod:`.skipped`: clips left out, reported;
- :mod:`.data`: the training / evaluation data of a run, read whole or streamed, behind one interface;
- :mod:`.sampling`: epoch-seeded samplers and per-step random generators (exact resumption);
- :mod:`.augmentation`: mixup and time / frequency masks, batched on the accelerator;
- :mod:`.optimization`: AdamW and the warmup-cosine schedule;
- :mod:`.models`: building a model (from scratch or a checkpoint), its batched front end, predictions;
- :mod:`.checkpoints`: training progress and saved model folders;
- :mod:`.arguments` / :mod:`.trainer`: the options and the loop of ``scripts/train.py`` (:func:`train`);
- :mod:`.evaluation`: ``scripts/evaluate_model.py`` (:func:`evaluate_model`).
"""

from .arguments import SELECTABLE_METRICS, build_train_parser, parse_train_args
from .augmentation import mask_time_frequency, mixup
from .checkpoints import TrainingProgress, save_trained_model
from .audio_check import audio_problems, checked_manifest
from .clips import AudioClipDataset, collate_clips, crop_or_pad
from .columns import AudioColumn, SourceError
from .evaluation import (
    build_evaluate_parser,
    evaluate_model,
    markdown_table,
    per_class_rows,
    plot_ap_change,
    predict_saved_model,
)
from .manifests import Manifest, ManifestError, add_manifest_arguments, manifest_options, multi_hot, read_manifest
from .models import build_front_end, build_model, feature_axes, predict
from .optimization import build_lr_scheduler, build_optimizer
from .sampling import ClassBalancedSampler, ShuffleSampler, class_balanced_weights, seed_everything_for_step, step_rng
from .sources import StreamSource, open_source
from .streaming import ClipStream, StreamLoader
from .trainer import train

__all__ = [
    "AudioClipDataset",
    "AudioColumn",
    "ClassBalancedSampler",
    "ClipStream",
    "SourceError",
    "StreamLoader",
    "StreamSource",
    "audio_problems",
    "checked_manifest",
    "collate_clips",
    "open_source",
    "Manifest",
    "ManifestError",
    "SELECTABLE_METRICS",
    "ShuffleSampler",
    "TrainingProgress",
    "add_manifest_arguments",
    "build_evaluate_parser",
    "build_front_end",
    "build_lr_scheduler",
    "build_model",
    "build_optimizer",
    "build_train_parser",
    "class_balanced_weights",
    "crop_or_pad",
    "evaluate_model",
    "feature_axes",
    "manifest_options",
    "markdown_table",
    "mask_time_frequency",
    "mixup",
    "multi_hot",
    "parse_train_args",
    "per_class_rows",
    "plot_ap_change",
    "predict",
    "predict_saved_model",
    "read_manifest",
    "save_trained_model",
    "seed_everything_for_step",
    "step_rng",
    "train",
]
