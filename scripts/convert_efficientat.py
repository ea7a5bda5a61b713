#!/usr/bin/env python
"""Convert an original EfficientAT "mn" AudioSet checkpoint into an HLP-audio model folder.

Usage::

    python scripts/convert_efficientat.py ../shared/data/models/efficientat_mn04_as/mn04_as_mAP_432.pt \\
        --width-mult 0.4 --out mn04-as-hlp [--check speech.wav ...] [--push-to-hub user/mn04-as-hlp]

The checkpoint is the plain state dict that EfficientAT releases (``mn04_as_mAP_432.pt`` ...), built
by ``get_model(width_mult=W, head_type="mlp", strides=(2, 2, 2, 2), num_classes=527)``. The output
folder holds, timm-style, everything a Hub repository needs:

- ``model.safetensors`` + ``config.json``: an ``HLPAudioForAudioClassification`` with backbone_type
  ``"efficientat"``, the AudioSet ontology (527 classes, class_labels_indices order) and post-HLP on;
- ``preprocessor_config.json``: the ``HLPAudioFeatureExtractor`` of EfficientAT's front end (32 kHz,
  128 Kaldi mel bands up to 15 kHz, n_fft 1024, window 800, hop 320);
- the model files as remote code (``trust_remote_code=True`` loads them without hlp-audio);
- ``README.md``: the model card.

Every checkpoint tensor is mapped onto a backbone tensor and vice versa (``strict=True``); the
saved folder is reloaded and must give the same logits as the converted model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from hlp_audio.conversion import print_top_tags, save_and_verify
from hlp_audio.modeling.modeling_efficientat import (
    EFFICIENTAT_AUDIOSET_MAP,
    convert_original_state_dict,
    default_efficientat_config,
)

__all__ = ["EfficientATCheckpointError", "load_efficientat_checkpoint", "size_name", "convert", "main"]

_WRAPPER_KEYS = ("state_dict", "model")
_WRAPPER_PREFIXES = ("module.", "net.", "model.")


class EfficientATCheckpointError(ValueError):
    """The file is not an EfficientAT mn state dict; the message names the file and the key at fault."""


def load_efficientat_checkpoint(path: "str | Path") -> Dict[str, torch.Tensor]:
    """Load an EfficientAT checkpoint (``weights_only=True``) and return its bare state dict.

    Accepts the released plain state dicts, ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers and
    keys prefixed by ``module.`` (DDP), ``net.`` or ``model.`` (training frameworks).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EfficientAT checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types for corrupt or non-torch files
        raise EfficientATCheckpointError(f"{path}: cannot be read as a torch checkpoint ({error})") from error
    if not isinstance(checkpoint, Mapping):
        raise EfficientATCheckpointError(f"{path}: expected a state dict, got {type(checkpoint).__name__}")
    for wrapper in _WRAPPER_KEYS:
        if isinstance(checkpoint.get(wrapper), Mapping):
            checkpoint = checkpoint[wrapper]
    state_dict = dict(checkpoint)
    for prefix in _WRAPPER_PREFIXES:
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
    if "features.0.0.weight" not in state_dict or "classifier.5.weight" not in state_dict:
        raise EfficientATCheckpointError(
            f"{path}: no 'features.0.0.weight' / 'classifier.5.weight' keys; this is not an EfficientAT mn checkpoint "
            f"with the 'mlp' head (first keys: {sorted(state_dict)[:5]})"
        )
    return state_dict


def size_name(width_mult: float) -> str:
    """``0.4`` -> ``"mn04"`` (EfficientAT's naming); other widths get ``"mn_w<width>"``."""
    tenths = width_mult * 10
    if abs(tenths - round(tenths)) < 1e-9 and 1 <= round(tenths) <= 99:
        return f"mn{round(tenths):02d}"
    return f"mn_w{width_mult:g}"


def _model_card(model, extractor, *, name: str, width_mult: float, checkpoint: Path, repo_id: Optional[str]):
    """The model card (``hlp_audio.model_card.HLPModelCard`` on ``hub_cards/model_card.md``)."""
    from hlp_audio.model_card import HLPModelCard, MAPResult

    model_name = f"efficientat-{name}-as-hlp"
    num_parameters = sum(p.numel() for p in model.parameters())
    published_map = EFFICIENTAT_AUDIOSET_MAP.get(name)
    return HLPModelCard.from_model(
        model,
        model_name,
        feature_extractor=extractor,
        backbone=f"EfficientAT MobileNetV3 {name} (width x{width_mult:g}, {num_parameters:,} parameters)",
        repo_id=repo_id or model_name,
        # The mAP published by EfficientAT for these weights (original labels, no post-processing).
        results=[
            MAPResult(
                "AS-Base",
                post_hlp=False,
                value=published_map,
                source_name="EfficientAT (published, not re-measured here)",
                source_url="https://github.com/fschmid56/EfficientAT",
            )
        ]
        if published_map
        else [],
        hlp_targets=False,  # the card describes these weights: EfficientAT trained them on the original labels
        training={
            "origin": f"EfficientAT (github.com/fschmid56/EfficientAT, MIT) AudioSet checkpoint `{checkpoint.name}`, "
            "trained by Knowledge Distillation from PaSST ensembles (Schmid, Koutini, Widmer, ICASSP 2023)",
            "conversion": "hlp-audio scripts/convert_efficientat.py (weights unchanged; front end re-implemented in torch)",
            "evaluation": "AudioSet mAP as published by EfficientAT for this checkpoint" if published_map else "none",
        },
        license="mit",
    )


def convert(
    checkpoint: "str | Path",
    width_mult: float,
    out: "str | Path",
    *,
    post_hlp: bool = True,
    audioset_dir: Optional["str | Path"] = None,
    check_files: Sequence["str | Path"] = (),
    top_k: int = 3,
    repo_id: Optional[str] = None,
) -> Path:
    """Convert ``checkpoint`` and save the model folder to ``out``; returns ``out``.

    ``repo_id`` is the Hub id written in the card's usage example (default: the model name).
    """
    from hlp_audio import Ontology
    from hlp_audio.modeling.configuration_hlp_audio import HLPAudioConfig
    from hlp_audio.modeling.feature_extraction_hlp_audio import HLPAudioFeatureExtractor
    from hlp_audio.modeling.modeling_hlp_audio import HLPAudioForAudioClassification

    checkpoint, out = Path(checkpoint), Path(out)
    original = load_efficientat_checkpoint(checkpoint)
    ontology = Ontology.from_audioset(audioset_dir=audioset_dir)
    num_outputs = original["classifier.5.weight"].shape[0]
    if num_outputs != len(ontology):
        raise EfficientATCheckpointError(
            f"{checkpoint}: 'classifier.5.weight' has {num_outputs} outputs but the AudioSet ontology has "
            f"{len(ontology)} classes"
        )
    name = size_name(width_mult)
    backbone_config = dict(default_efficientat_config("mn10"), width_mult=float(width_mult))
    config = HLPAudioConfig(
        ontology=ontology.to_dict(), post_hlp=post_hlp, backbone_type="efficientat", backbone_config=backbone_config
    )
    model = HLPAudioForAudioClassification(config).eval()
    try:
        converted = convert_original_state_dict(original, model.backbone)
    except (KeyError, ValueError) as error:
        raise EfficientATCheckpointError(f"{checkpoint} with --width-mult {width_mult:g}: {error.args[0]}") from None
    model.backbone.load_state_dict(converted, strict=True)

    extractor = HLPAudioFeatureExtractor()
    card = _model_card(model, extractor, name=name, width_mult=width_mult, checkpoint=checkpoint, repo_id=repo_id)
    reloaded = save_and_verify(model, extractor, card, out, probe_shape=(2, 128, 300))
    print(f"saved {card.backbone}, post_hlp={post_hlp}, to {out}")
    if check_files:
        print_top_tags(reloaded, extractor, check_files, top_k)
    return out


def main(argv: Optional[List[str]] = None, *, api: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="original EfficientAT state dict, e.g. mn04_as_mAP_432.pt")
    parser.add_argument("--width-mult", type=float, required=True, help="width multiplier of the checkpoint (mn04: 0.4)")
    parser.add_argument("--out", type=Path, required=True, help="output model folder")
    parser.add_argument("--no-post-hlp", dest="post_hlp", action="store_false", help="save with post_hlp=False")
    parser.add_argument("--audioset-dir", default=None, help="AudioSet metadata folder (default: $HLP_AUDIOSET_DIR, else download)")
    parser.add_argument("--check", nargs="*", default=[], metavar="AUDIO", help="audio files to tag with the converted model")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="upload the folder to this Hub model repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    args = parser.parse_args(argv)
    if not 0.0 < args.width_mult <= 4.0:
        parser.error(f"--width-mult must be in (0, 4], got {args.width_mult}")
    if not args.checkpoint.is_file():
        parser.error(f"checkpoint {args.checkpoint} does not exist")
    try:
        out = convert(
            args.checkpoint,
            args.width_mult,
            args.out,
            post_hlp=args.post_hlp,
            audioset_dir=args.audioset_dir,
            check_files=args.check,
            repo_id=args.push_to_hub,
        )
    except EfficientATCheckpointError as error:
        print(f"convert_efficientat: error: {error}", file=sys.stderr)
        return 2
    if args.push_to_hub:
        from hlp_audio.hub import push_folder

        push_folder(
            out,
            args.push_to_hub,
            commit_message=f"Add EfficientAT {size_name(args.width_mult)} converted with hlp-audio",
            private=args.private,
            api=api,
        )
        print(f"pushed {out} to {args.push_to_hub}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
