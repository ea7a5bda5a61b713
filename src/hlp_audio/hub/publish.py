"""Publishing a trained model folder (``scripts/train.py`` output) on the Hub with its model card, in one commit."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Dict, Optional, Union

from .model_card import HEADLINE_MAPS, HLPModelCard, MAPResult
from .push import push_folder

__all__ = ["training_recipe", "prepare_hub_folder", "publish_model"]

PathLike = Union[str, "os.PathLike[str]"]


def _looks_like_audioset(config) -> bool:
    labels = (config.ontology or {}).get("labels", [])
    return len(labels) == 527 and all(label.startswith(("/m/", "/t/", "/g/")) for label in labels)


def training_recipe(args: dict) -> Dict[str, str]:
    """The training recipe of a run, label -> text, from its ``training_args.json`` (for the model card)."""
    recipe: Dict[str, str] = {}
    source = args.get("model_name_or_path")
    if source:
        recipe["Initialisation"] = (
            f"[`{source}`](https://huggingface.co/{source})" if _is_hub_id(source) else "a checkpoint given as a local folder"
        )
    else:
        recipe["Initialisation"] = f"from scratch ({args.get('backbone_type')}, size {args.get('backbone_size')})"
    if args.get("freeze_body"):
        recipe["Trained parameters"] = "classifier head only (linear probing)"
    recipe["Training labels"] = "HLP-propagated (label pre-processing)" if args.get("hlp") else "original labels"
    if args.get("train_clips"):
        recipe["Training clips"] = f"{args['train_clips']:,}"
    recipe["Loss"] = "binary cross-entropy on the logits before post-HLP"
    if args.get("loss_on_annotated_classes"):
        recipe["Loss"] += (
            f", over the {len(args.get('annotated_classes') or [])} classes the training labels annotate only "
            "(partial labels: every other class is unknown, not negative)"
        )
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


def _is_hub_id(source: str) -> bool:
    """A Hub id (``owner/name``) links on the Hub; a local folder does not (and is not named on a card)."""
    return not os.path.exists(source) and source.count("/") == 1 and not source.startswith((".", "/", "~"))


def prepare_hub_folder(
    model_dir: PathLike,
    folder: PathLike,
    *,
    repo_id: str,
    license: Optional[str] = None,
    base_model: Optional[str] = None,
    ontology_name: Optional[str] = None,
    backbone: Optional[str] = None,
    eval_name: Optional[str] = None,
) -> Path:
    """Write a Hub-ready copy of a trained model folder: weights (safetensors), config, feature
    extractor, remote code, ``eval_results.json`` and a ``README.md`` model card.

    The card's ``model-index`` holds the four mAPs of ``model_dir/eval_results.json`` (AS-Base and
    AS-HLP, post-HLP off and on) on the evaluation set named ``eval_name`` (default: the one the
    training run recorded), and its training section the recipe of ``training_args.json``.
    ``license`` is required (the card claims no licence by default); ``base_model`` defaults to the
    run's initialisation when that is a Hub id.
    """
    from transformers import AutoFeatureExtractor

    from ..modeling.modeling_hlp_audio import HLPAudioForAudioClassification, backbone_class

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
    eval_name = eval_name or args.get("eval_name") or "the evaluation set of the training run"
    results = [
        MAPResult(labels, post_hlp=post, value=metrics[key], dataset_name=eval_name, num_clips=metrics.get("num_samples"))
        for (labels, post), key in HEADLINE_MAPS.items()
        if metrics.get(key) is not None
    ]
    if metrics:
        (folder / "eval_results.json").write_text(json.dumps(metrics, indent=2))
    if args:
        (folder / "training_args.json").write_text(json.dumps(args, indent=2))
    config = model.config
    if base_model is None and args.get("model_name_or_path") and _is_hub_id(args["model_name_or_path"]):
        base_model = args["model_name_or_path"]
    if backbone is None:
        backbone = backbone_class(config.backbone_type).display_name
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
        trained_with_hlp=bool(args["hlp"]) if "hlp" in args else None,
        base_model=base_model,
        license=license,
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
