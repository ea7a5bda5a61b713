"""Training and evaluation of HLP taggers with accelerate (``scripts/train.py``, ``scripts/evaluate_model.py``).

By concept:

- :mod:`.manifests`: audio files + labels (CSV / TSV / parquet / ``datasets``) -> :class:`Manifest`;
- :mod:`.clips`: :class:`AudioClipDataset`, decoding in DataLoader workers, crop / pad;
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
from .clips import AudioClipDataset, crop_or_pad
from .evaluation import build_evaluate_parser, evaluate_model, markdown_table, per_class_rows, plot_ap_change, predict_saved_model
from .manifests import Manifest, ManifestError, add_manifest_arguments, manifest_options, multi_hot, read_manifest
from .models import build_front_end, build_model, feature_axes, predict
from .optimization import build_lr_scheduler, build_optimizer
from .sampling import ClassBalancedSampler, ShuffleSampler, class_balanced_weights, seed_everything_for_step, step_rng
from .trainer import train

__all__ = [
    "AudioClipDataset",
    "ClassBalancedSampler",
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
