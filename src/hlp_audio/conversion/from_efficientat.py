"""Conversion of the original EfficientAT "mn" AudioSet checkpoints (github.com/fschmid56/EfficientAT, MIT).

The checkpoint is the plain state dict that EfficientAT releases (``mn04_as_mAP_432.pt`` ...), built
by ``get_model(width_mult=W, head_type="mlp", strides=(2, 2, 2, 2), num_classes=527)``. The saved
folder holds an ``HLPAudioForAudioClassification`` (backbone ``"efficientat"``, the AudioSet ontology,
post-HLP on), the ``HLPAudioFeatureExtractor`` of EfficientAT's front end (32 kHz, 128 Kaldi mel
bands up to 15 kHz, n_fft 1024, window 800, hop 320), the model files as remote code and a card.
Every checkpoint tensor is mapped onto a backbone tensor and vice versa (``strict=True``); the saved
folder is reloaded and must give the same logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from ..modeling.modeling_efficientat import EfficientATBackbone, EfficientATConfig
from .common import (
    CheckpointError,
    audioset_tagger,
    load_state_dict_file,
    published_checkpoint_card,
    save_converted,
    unwrap_state_dict,
)

__all__ = [
    "EFFICIENTAT_AUDIOSET_MAP",
    "EfficientATCheckpointError",
    "convert_original_state_dict",
    "load_efficientat_checkpoint",
    "size_name",
    "convert_efficientat",
]

# AudioSet mAP of the released EfficientAT "mn*_as" checkpoints (single models, from the
# EfficientAT README), keyed by size name; used for model cards.
EFFICIENTAT_AUDIOSET_MAP = {
    "mn01": 0.298,
    "mn02": 0.378,
    "mn04": 0.432,
    "mn05": 0.443,
    "mn10": 0.471,
    "mn20": 0.478,
    "mn30": 0.482,
    "mn40": 0.484,
}


_CONV_LAYER_KEYS = (
    ("0.weight", "convolution.weight"),
    ("1.weight", "normalization.weight"),
    ("1.bias", "normalization.bias"),
    ("1.running_mean", "normalization.running_mean"),
    ("1.running_var", "normalization.running_var"),
    ("1.num_batches_tracked", "normalization.num_batches_tracked"),
)


def convert_original_state_dict(original: Dict[str, torch.Tensor], backbone: EfficientATBackbone) -> Dict[str, torch.Tensor]:
    """Rename an original EfficientAT ``mn`` state dict (``features.*``, ``classifier.*``) to the
    keys of ``backbone`` (timm's ``checkpoint_filter_fn`` idea).

    The original layout is positional: ``features.0`` is the stem, ``features.1..N`` the blocks
    (inside each, ``block.<k>`` counts the expansion if present, the depthwise conv, the SE layer
    if present and the projection), ``features.N+1`` the last 1x1 convolution; ``classifier.2`` and
    ``classifier.5`` are the two Linear layers of the ``mlp`` head. ``backbone`` supplies which
    blocks have an expansion and an SE layer, so the result loads with ``strict=True``.

    Raises ``KeyError`` naming the keys that are missing from ``original`` or left unused, and
    ``ValueError`` naming a key whose shape differs (e.g. a wrong ``width_mult``).
    """
    mapping: Dict[str, str] = {}

    def conv_layer(old_prefix: str, new_prefix: str) -> None:
        for old_suffix, new_suffix in _CONV_LAYER_KEYS:
            mapping[f"{new_prefix}.{new_suffix}"] = f"{old_prefix}.{old_suffix}"

    conv_layer("features.0", "stem")
    for index, block in enumerate(backbone.blocks):
        old = f"features.{index + 1}.block"
        position = 0
        if block.expand is not None:
            conv_layer(f"{old}.{position}", f"blocks.{index}.expand")
            position += 1
        conv_layer(f"{old}.{position}", f"blocks.{index}.depthwise")
        position += 1
        if block.squeeze_excitation is not None:
            for old_name, new_name in (("fc1", "reduce"), ("fc2", "expand")):
                for kind in ("weight", "bias"):
                    mapping[f"blocks.{index}.squeeze_excitation.{new_name}.{kind}"] = (
                        f"{old}.{position}.conc_se_layers.0.{old_name}.{kind}"
                    )
            position += 1
        conv_layer(f"{old}.{position}", f"blocks.{index}.project")
    conv_layer(f"features.{len(backbone.blocks) + 1}", "final_conv")
    for old_name, new_name in (("classifier.2", "classifier.dense"), ("classifier.5", "classifier.output")):
        for kind in ("weight", "bias"):
            mapping[f"{new_name}.{kind}"] = f"{old_name}.{kind}"

    expected = backbone.state_dict()
    if set(mapping) != set(expected):  # the mapping must cover the backbone exactly
        raise AssertionError(f"internal: key mapping and backbone differ on {sorted(set(mapping) ^ set(expected))[:5]}")
    missing = sorted(old for old in mapping.values() if old not in original)
    unused = sorted(set(original) - set(mapping.values()))
    if missing or unused:
        raise KeyError(
            f"the checkpoint does not match this EfficientAT config: {len(missing)} keys missing (e.g. {missing[:4]}), "
            f"{len(unused)} keys unused (e.g. {unused[:4]}); check width_mult, head_type and the block table"
        )
    converted = {}
    for new, old in mapping.items():
        tensor = original[old]
        if tuple(tensor.shape) != tuple(expected[new].shape):
            raise ValueError(
                f"checkpoint key {old!r} has shape {tuple(tensor.shape)} but {new!r} expects {tuple(expected[new].shape)}; "
                "check width_mult and num_labels"
            )
        converted[new] = tensor
    return converted


class EfficientATCheckpointError(CheckpointError):
    """The file is not an EfficientAT mn state dict; the message names the file and the key at fault."""


def load_efficientat_checkpoint(path) -> Dict[str, torch.Tensor]:
    """Load an EfficientAT checkpoint (``weights_only=True``) and return its bare state dict.

    Accepts the released plain state dicts, ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers and
    keys prefixed by ``module.`` (DDP), ``net.`` or ``model.`` (training frameworks).
    """
    checkpoint = load_state_dict_file(path, EfficientATCheckpointError)
    return unwrap_state_dict(
        checkpoint,
        required=("features.0.0.weight", "classifier.5.weight"),
        model_name="an EfficientAT mn checkpoint with the 'mlp' head",
        source=str(path),
        error=EfficientATCheckpointError,
    )


def size_name(width_mult: float) -> str:
    """``0.4`` -> ``"mn04"`` (EfficientAT's naming); other widths get ``"mn_w<width>"``."""
    tenths = width_mult * 10
    if abs(tenths - round(tenths)) < 1e-9 and 1 <= round(tenths) <= 99:
        return f"mn{round(tenths):02d}"
    return f"mn_w{width_mult:g}"


def _model_card(model, extractor, *, name: str, width_mult: float, checkpoint: Path, repo_id: Optional[str]):
    """The model card of the converted checkpoint, with EfficientAT's published mAP."""
    return published_checkpoint_card(
        model,
        extractor,
        model_name=f"efficientat-{name}-as-hlp",
        backbone=f"EfficientAT MobileNetV3 {name} (width x{width_mult:g})",
        repo_id=repo_id,
        published_map=EFFICIENTAT_AUDIOSET_MAP.get(name),
        source_name="EfficientAT (published, not re-measured here)",
        source_url="https://github.com/fschmid56/EfficientAT",
        origin=f"EfficientAT (github.com/fschmid56/EfficientAT, MIT) AudioSet checkpoint `{checkpoint.name}`, "
        "trained by Knowledge Distillation from PaSST ensembles (Schmid, Koutini, Widmer, ICASSP 2023)",
        conversion="hlp-audio scripts/convert_efficientat.py (weights unchanged; front end re-implemented in torch)",
        license="mit",
    )


def convert_efficientat(
    checkpoint,
    width_mult: float,
    out,
    *,
    post_hlp: bool = True,
    audioset_dir=None,
    check_files: Sequence = (),
    top_k: int = 3,
    repo_id: Optional[str] = None,
) -> Path:
    """Convert ``checkpoint`` and save the model folder to ``out``; returns ``out``.

    ``repo_id`` is the Hub id written in the card's usage example (default: the model name).
    """
    from ..modeling.feature_extraction_hlp_audio import HLPAudioFeatureExtractor

    checkpoint, out = Path(checkpoint), Path(out)
    original = load_efficientat_checkpoint(checkpoint)
    model = audioset_tagger(
        "efficientat",
        EfficientATConfig(width_mult=float(width_mult)).to_dict(),
        num_outputs=original["classifier.5.weight"].shape[0],
        post_hlp=post_hlp,
        audioset_dir=audioset_dir,
        source=f"{checkpoint}: 'classifier.5.weight'",
        error=EfficientATCheckpointError,
    )
    try:
        converted = convert_original_state_dict(original, model.backbone)
    except (KeyError, ValueError) as error:
        raise EfficientATCheckpointError(f"{checkpoint} with --width-mult {width_mult:g}: {error.args[0]}") from None
    model.backbone.load_state_dict(converted, strict=True)

    name = size_name(width_mult)
    extractor = HLPAudioFeatureExtractor()
    card = _model_card(model, extractor, name=name, width_mult=width_mult, checkpoint=checkpoint, repo_id=repo_id)
    return save_converted(model, extractor, card, out, (2, 128, 300), check_files=check_files, top_k=top_k)
