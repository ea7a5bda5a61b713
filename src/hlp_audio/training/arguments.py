"""The command-line options of ``scripts/train.py`` (:func:`parse_train_args`), checked before anything runs."""

from __future__ import annotations

import argparse
import json
from typing import List, Optional

from ..metrics import RESULT_KEYS
from ..modeling.modeling_hlp_audio import BACKBONES
from .data import SOURCE_HELP, add_data_arguments

__all__ = ["build_train_parser", "parse_train_args", "SELECTABLE_METRICS"]

# Evaluation figures that can select the best epoch (higher is better).
SELECTABLE_METRICS = tuple(key for key in RESULT_KEYS if key.startswith("map") or key in ("auc", "d_prime"))


def _size_names(backbone) -> list:
    """The named sizes of a backbone, a long numbered family shortened (mn01 ... mn40)."""
    names = list(backbone.sizes)
    return names if len(names) <= 8 else [*names[:1], "...", *names[-3:]]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to an option's help only where the help does not say it already, and never "None"."""

    def _get_help_string(self, action):
        if action.default is None or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def build_train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Fine-tune an HLP audio tagger with or without HLP labels (CPU, one GPU or many with accelerate).",
        formatter_class=_HelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--train-data", "--train-manifest", dest="train_data", required=True, metavar="SOURCE", help="training clips: " + SOURCE_HELP)
    data.add_argument("--train-config", metavar="NAME", help="config of a Hub repo / folder of shards (e.g. balanced, full, 20k)")
    data.add_argument("--train-split", metavar="SPLIT", help="split for training; a+b joins splits (e.g. bal_train+unbal_train)")
    data.add_argument(
        "--eval-data", "--eval-manifest", dest="eval_data", metavar="SOURCE",
        help="evaluation clips, evaluated after every epoch (default with --eval-split: the training source)",
    )
    data.add_argument("--eval-config", metavar="NAME", help="config of the evaluation source (default: --train-config for the same source)")
    data.add_argument("--eval-split", metavar="SPLIT", help="split for evaluation")
    add_data_arguments(data)
    data.add_argument(
        "--ontology",
        help="'audioset' or an Ontology JSON file (Ontology.to_json); default: the checkpoint's, else AudioSet",
    )
    data.add_argument("--audioset-dir", help="folder of the AudioSet metadata (default: $HLP_AUDIOSET_DIR, else download)")
    data.add_argument("--clip-seconds", type=float, default=10.0, help="training clip length (random crop / pad)")
    data.add_argument("--eval-clip-seconds", type=float, help="evaluation clip length (default: --clip-seconds)")

    model = parser.add_argument_group("model")
    model.add_argument("--model-name-or-path", help="a saved HLP tagger folder (e.g. a converted AST / PaSST / EfficientAT)")
    model.add_argument("--backbone-type", choices=sorted(BACKBONES), help="train from scratch: backbone")
    sizes = "; ".join(f"{name}: {', '.join(_size_names(backbone))}" for name, backbone in sorted(BACKBONES.items()))
    model.add_argument("--backbone-size", help=f"train from scratch: the backbone's size ({sizes})")
    model.add_argument("--backbone-config", type=_json_object, default={}, help="JSON object of backbone config overrides, e.g. '{\"drop_path_rate\": 0.1}'")
    model.add_argument("--s-patchout-t", type=int, help="PaSST: time columns dropped by structured patchout")
    model.add_argument("--s-patchout-f", type=int, help="PaSST: frequency rows dropped by structured patchout")
    model.add_argument("--u-patchout", type=int, help="PaSST: patches dropped by unstructured patchout")
    model.add_argument("--no-post-hlp", dest="post_hlp", action="store_false", help="save the model with post-HLP off")
    model.add_argument("--freeze-body", action="store_true", help="linear probing: train the classifier head only")

    recipe = parser.add_argument_group("recipe")
    recipe.add_argument("--hlp", action="store_true", help="train on HLP-propagated labels (label pre-processing)")
    recipe.add_argument(
        "--loss-on-annotated-classes", action="store_true",
        help="partial labels: take the loss only over the classes the training labels annotate (a positive in the "
        "training manifest; with --hlp, after propagation, so their ancestors too); every other class is unknown, "
        "not negative, and its head row gets no gradient (AdamW's weight decay still shrinks it: --weight-decay 0 "
        "leaves it exactly as it was)",
    )
    recipe.add_argument("--epochs", type=int, default=10)
    recipe.add_argument("--batch-size", type=int, default=32, help="per device")
    recipe.add_argument("--eval-batch-size", type=int, help="per device (default: --batch-size)")
    recipe.add_argument("--gradient-accumulation-steps", type=int, default=1)
    recipe.add_argument("--lr", type=float, default=1e-5, help="peak learning rate")
    recipe.add_argument("--head-lr", type=float, help="peak learning rate of the classifier head (default: --lr)")
    recipe.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW decay (not on biases and norms)")
    recipe.add_argument("--warmup-steps", type=int, help="linear warmup in optimizer steps (default: --warmup-ratio)")
    recipe.add_argument("--warmup-ratio", type=float, default=0.05, help="warmup as a share of all optimizer steps")
    recipe.add_argument("--min-lr-ratio", type=float, default=0.01, help="cosine floor, as a share of the peak")
    recipe.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0: off)")
    recipe.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA", help="mixup Beta(alpha, alpha) (0: off)")
    recipe.add_argument("--time-mask", type=int, default=0, help="max width of a time mask in frames (0: off)")
    recipe.add_argument("--freq-mask", type=int, default=0, help="max width of a frequency mask in bins (0: off)")
    recipe.add_argument("--num-time-masks", type=int, default=1)
    recipe.add_argument("--num-freq-masks", type=int, default=1)
    recipe.add_argument("--balanced-sampler", action="store_true", help="class-balanced weighted sampling of clips")
    recipe.add_argument(
        "--epoch-size", type=int,
        help="clips per epoch of the balanced sampler or of a stream (default: all; a stream: the split size of its dataset card)",
    )
    recipe.add_argument("--sampler-offset", type=float, default=100.0, help="balanced sampler: 1000 / (offset + class count)")
    recipe.add_argument("--sampler-replacement", action="store_true", help="balanced sampler: draw with replacement")
    recipe.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], help="default: accelerate config")
    recipe.add_argument("--seed", type=int, default=0)
    recipe.add_argument("--best-metric", help="metric selecting the best epoch (default: map_hlp with --hlp, else map; '_post' if post-HLP)")

    output = parser.add_argument_group("output")
    output.add_argument("--output-dir", required=True)
    output.add_argument("--checkpointing-steps", type=int, help="also save a checkpoint every N optimizer steps")
    output.add_argument("--checkpoints-total-limit", type=int, default=2, help="checkpoints kept (oldest removed)")
    output.add_argument("--resume", nargs="?", const="latest", help="resume from a checkpoint folder, or the latest one")
    output.add_argument("--stop-after-steps", type=int, help="save a checkpoint and stop after N optimizer steps (for time-limited jobs)")
    output.add_argument("--logging-steps", type=int, default=50)
    output.add_argument("--report-to", choices=["auto", "tensorboard", "none"], default="auto")
    output.add_argument("--no-progress", action="store_true", help="no progress bars")
    output.add_argument("--push-to-hub", metavar="REPO_ID", help="publish the best model (or the last) to this Hub repo")
    output.add_argument("--hub-private", action="store_true")
    output.add_argument("--hub-token")
    output.add_argument("--hub-license", help="licence of the published model, written on its card (required with --push-to-hub)")
    output.add_argument(
        "--eval-name",
        help="the evaluation set as the model card names it, e.g. 'AudioSet eval' (default: the eval manifest's name and split)",
    )
    return parser


def parse_train_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = build_train_parser()
    args = parser.parse_args(argv)
    if args.model_name_or_path is None and (args.backbone_type is None or args.backbone_size is None):
        parser.error("pass --model-name-or-path, or --backbone-type and --backbone-size to train from scratch")
    if args.model_name_or_path is not None and args.backbone_size is not None:
        parser.error("--backbone-size is for training from scratch; drop it or --model-name-or-path")
    for name in ("epochs", "batch_size", "gradient_accumulation_steps", "logging_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.mixup < 0:
        parser.error("--mixup must be >= 0")
    if args.epoch_size is not None and not (args.balanced_sampler or args.streaming):
        parser.error("--epoch-size applies to --balanced-sampler and --streaming")
    if args.epoch_size is not None and args.epoch_size < 1:
        parser.error("--epoch-size must be >= 1")
    if args.shuffle_buffer < 1:
        parser.error("--shuffle-buffer must be >= 1")
    if args.eval_split and not args.eval_data:  # --eval-split alone: another split of the training source
        args.eval_data = args.train_data
    if args.eval_data == args.train_data and args.eval_config is None:
        args.eval_config = args.train_config
    if args.stop_after_steps is not None and args.stop_after_steps < 1:
        parser.error("--stop-after-steps must be >= 1")
    for name in ("s_patchout_t", "s_patchout_f", "u_patchout"):
        if getattr(args, name) is not None:
            args.backbone_config[name] = getattr(args, name)
    if args.push_to_hub and not args.hub_license:
        parser.error("--push-to-hub needs --hub-license: the card states the model's licence, which depends on its data")
    if args.best_metric is not None and args.best_metric not in SELECTABLE_METRICS:
        parser.error(f"--best-metric must be one of {', '.join(SELECTABLE_METRICS)}")
    args.eval_batch_size = args.eval_batch_size or args.batch_size
    args.eval_clip_seconds = args.eval_clip_seconds or args.clip_seconds
    return args


