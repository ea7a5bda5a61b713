"""Conversion of PaSST checkpoints (kkoutini/PaSST release or ``hear21passt`` layout, Apache-2.0).

The saved folder holds an ``HLPAudioForAudioClassification`` (backbone ``"passt"``) with the AudioSet
ontology in its config, and the ``HLPAudioFeatureExtractor`` config of PaSST's front end (32 kHz, 128
mel bands, n_fft 1024, window 800, hop 320). The key mapping is a pure renaming (shapes are the same);
PaSST's ``head_dist`` is dropped because PaSST's own ``forward`` never uses it (logits come from
``head`` applied to the mean of the class and distillation tokens).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..modeling.modeling_passt import PASST_SIZES, PaSSTConfig, passt_grid_size
from .common import (
    CheckpointError,
    audioset_tagger,
    load_state_dict_file,
    published_checkpoint_card,
    save_converted,
    unwrap_state_dict,
)

__all__ = [
    "PaSSTCheckpointError",
    "published_map",
    "convert_passt",
    "convert_passt_state_dict",
    "load_passt_checkpoint",
    "passt_config_from_state_dict",
    "import_hear21passt",
]

# Original PaSST key (regex, anchored) -> backbone key. \1 is the block index.
_KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embeddings.\1"),
    (r"cls_token", "embeddings.cls_token"),
    (r"dist_token", "embeddings.distillation_token"),
    (r"new_pos_embed", "embeddings.token_position_embeddings"),
    (r"freq_new_pos_embed", "embeddings.frequency_position_embeddings"),
    (r"time_new_pos_embed", "embeddings.time_position_embeddings"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"layers.\1.layernorm_before.\2"),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"layers.\1.attention.qkv.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"layers.\1.attention.output.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"layers.\1.layernorm_after.\2"),
    (r"blocks\.(\d+)\.mlp\.fc([12])\.(weight|bias)", r"layers.\1.mlp.fc\2.\3"),
    (r"norm\.(weight|bias)", r"layernorm.\1"),
    (r"head\.0\.(weight|bias)", r"classifier.layernorm.\1"),
    (r"head\.1\.(weight|bias)", r"classifier.dense.\1"),
)
_UNUSED_KEYS = re.compile(r"head_dist\.(weight|bias)")


class PaSSTCheckpointError(CheckpointError):
    """A checkpoint does not have the PaSST layout; the message names the file and key at fault."""


def _rename(key: str) -> str | None:
    for pattern, replacement in _KEY_RULES:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def convert_passt_state_dict(
    state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Rename a PaSST state dict to ``PaSSTBackbone`` keys (without the wrapper's ``backbone.`` prefix).

    Raises:
        PaSSTCheckpointError: on a key that PaSST-S does not have (e.g. ImageNet ``pos_embed`` or a
            ``pre_logits`` layer), or on a patch embedding that is not a convolution weight.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if _UNUSED_KEYS.fullmatch(key):
            continue
        new_key = _rename(key)
        if new_key is None:
            raise PaSSTCheckpointError(f"{source}: unexpected key {key!r} (shape {tuple(value.shape)}) for PaSST")
        converted[new_key] = value
    weight = converted.get("embeddings.patch_embeddings.weight")
    if weight is None or weight.ndim != 4:
        shape = None if weight is None else tuple(weight.shape)
        raise PaSSTCheckpointError(f"{source}: 'patch_embed.proj.weight' must be a 4-d conv weight, got shape {shape}")
    return converted


def passt_config_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    base_config: Mapping[str, Any] | None = None,
    *,
    num_attention_heads: int | None = None,
    source: str = "checkpoint",
) -> dict[str, Any]:
    """Backbone config matching a converted (``convert_passt_state_dict``) state dict.

    Sizes readable from shapes (hidden size, depth, MLP width, patch size, positional grid) are taken from the
    weights. Strides and the training length are not: they come from ``base_config``, or, when it is None, from
    the public variant of :data:`PASST_SIZES` whose positional grid matches. The number of heads cannot be read
    from the weights either; it defaults to ``hidden_size // 64`` (every public PaSST model has 64-dim heads).
    """
    try:
        hidden = state_dict["embeddings.cls_token"].shape[-1]
        grid = tuple(state_dict["embeddings.frequency_position_embeddings"].shape[2:3]) + tuple(
            state_dict["embeddings.time_position_embeddings"].shape[3:4]
        )
        patch_size = state_dict["embeddings.patch_embeddings.weight"].shape[-1]
        intermediate = state_dict["layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as error:
        raise PaSSTCheckpointError(f"{source}: missing PaSST tensor {error.args[0]!r}") from None
    depth = 1 + max(int(key.split(".")[1]) for key in state_dict if key.startswith("layers."))

    if base_config is None:
        matches = [
            name
            for name, sizes in PASST_SIZES.items()
            if name.startswith("passt-") and passt_grid_size(PaSSTConfig.from_dict(sizes)) == grid
        ]
        if len(matches) != 1:
            raise PaSSTCheckpointError(
                f"{source}: positional grid {grid} (frequency x time) matches PaSST variants {matches}; "
                f"pass --variant with one of {sorted(n for n in PASST_SIZES if n.startswith('passt-'))}"
            )
        base_config = PASST_SIZES[matches[0]]
    config = PaSSTConfig.from_dict(base_config).to_dict()
    heads = num_attention_heads or (config["num_attention_heads"] if config["hidden_size"] == hidden else hidden // 64)
    config.update(
        hidden_size=hidden,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        patch_size=patch_size,
    )
    if passt_grid_size(PaSSTConfig.from_dict(config)) != grid:
        raise PaSSTCheckpointError(
            f"{source}: positional grid {grid} does not match the config's {passt_grid_size(PaSSTConfig.from_dict(config))} "
            f"(frequency_stride={config['frequency_stride']}, time_stride={config['time_stride']}, "
            f"max_length={config['max_length']})"
        )
    return config


def load_passt_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a PaSST checkpoint file (tensors only, ``weights_only=True``) and return its bare state dict.

    Accepts a plain state dict (the release ``.pt`` files), ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers,
    and keys prefixed by ``net.`` or ``module.``.
    """
    return unwrap_state_dict(
        load_state_dict_file(path, PaSSTCheckpointError),
        required=("time_new_pos_embed",),
        model_name="a PaSST checkpoint",
        source=str(path),
        prefixes=("net.", "module."),
        error=PaSSTCheckpointError,
    )


def published_map(checkpoint: Path) -> float | None:
    """The AudioSet mAP that PaSST's release names put in the file name (``...-ap.476-swa.pt`` -> 0.476)."""
    match = re.search(r"ap\.?(\d{2,4})", checkpoint.name)
    return float(f"0.{match.group(1)}") if match else None


def _model_card(model, extractor, *, name: str, checkpoint: Path, repo_id: str | None):
    """The model card of the converted checkpoint, with the mAP of the release's file name."""
    config = model.config.backbone_config
    patchout = ", ".join(f"{key}={config[key]}" for key in ("s_patchout_t", "s_patchout_f", "u_patchout"))
    return published_checkpoint_card(
        model,
        extractor,
        model_name=f"{name}-as-hlp",
        backbone=f"PaSST {name} (patch {config['patch_size']}, stride {config['frequency_stride']})",
        repo_id=repo_id,
        published_map=published_map(checkpoint),
        source_name="PaSST release file name (published, not re-measured here)",
        source_url="https://github.com/kkoutini/PaSST",
        origin=f"PaSST (github.com/kkoutini/PaSST, Apache-2.0) AudioSet checkpoint `{checkpoint.name}` "
        "(Koutini, Schlüter, Eghbal-zadeh, Widmer, Interspeech 2022)",
        conversion="hlp-audio scripts/convert_passt.py (weights unchanged, keys renamed; head_dist dropped, "
        "as PaSST's forward never uses it)",
        training={"patchout for fine-tuning (training mode only)": patchout},
        license="apache-2.0",
    )


def convert_passt(
    checkpoint: str | Path,
    out: str | Path,
    *,
    variant: str | None = None,
    num_attention_heads: int | None = None,
    post_hlp: bool = True,
    audioset_dir: str | Path | None = None,
    check_files: Sequence[str | Path] = (),
    top_k: int = 3,
    repo_id: str | None = None,
) -> Path:
    """Convert the PaSST ``checkpoint`` and save the model folder to ``out``; returns ``out``.

    The saved folder is reloaded and must reproduce the converted logits exactly. ``repo_id`` is the Hub id written
    in the card's usage example (default: the model name).
    """
    from ..modeling.feature_extraction_hlp_audio import HLPAudioFeatureExtractor
    from ..modeling.modeling_passt import PaSSTBackbone

    checkpoint, out = Path(checkpoint), Path(out)
    source = str(checkpoint)
    state_dict = convert_passt_state_dict(load_passt_checkpoint(checkpoint), source=source)
    base = PaSSTBackbone.default_config(variant).to_dict() if variant else None
    backbone_config = passt_config_from_state_dict(
        state_dict, base, num_attention_heads=num_attention_heads, source=source
    )
    model = audioset_tagger(
        "passt",
        backbone_config,
        num_outputs=state_dict["classifier.dense.weight"].shape[0],
        post_hlp=post_hlp,
        audioset_dir=audioset_dir,
        source=f"{source}: 'head.1.weight'",
        error=PaSSTCheckpointError,
    )
    model.backbone.load_state_dict(state_dict, strict=True)

    extractor = HLPAudioFeatureExtractor()  # its defaults are PaSST's front end
    name = variant or _variant_name(backbone_config)
    card = _model_card(model, extractor, name=name, checkpoint=checkpoint, repo_id=repo_id)
    probe_shape = (2, backbone_config["num_mel_bins"], 300)
    return save_converted(model, extractor, card, out, probe_shape, check_files=check_files, top_k=top_k)


def _variant_name(config: Mapping[str, Any]) -> str:
    for name, sizes in PASST_SIZES.items():
        candidate = PaSSTConfig.from_dict(sizes).to_dict()
        if name.startswith("passt-") and all(candidate[key] == config[key] for key in candidate):
            return name
    return "passt-custom"


def import_hear21passt():
    """``hear21passt.models.passt``, the reference PaSST implementation, to check conversions against.

    It needs ``pip install --no-deps hear21passt==0.0.26`` (the test extra installs it).

    hear21passt 0.0.26 imports ``timm.models._hub.download_cached_file`` only to download pretrained weights, and
    timm itself needs torchvision, which is not installed here. For the import, a stand-in ``timm`` whose download
    function refuses to run replaces any real one; ``sys.modules`` is restored right after.
    """
    cached = sys.modules.get("hear21passt.models.passt")
    if cached is not None:
        return cached

    def download_cached_file(*args, **kwargs):
        raise RuntimeError("timm stand-in: downloads are disabled (build models with pretrained=False)")

    hub = types.ModuleType("timm.models._hub")
    hub.download_cached_file = download_cached_file
    models = types.ModuleType("timm.models")
    models._hub = hub
    timm = types.ModuleType("timm")
    timm.models = models
    stand_ins = {"timm": timm, "timm.models": models, "timm.models._hub": hub}
    previous = {name: sys.modules[name] for name in stand_ins if name in sys.modules}
    sys.modules.update(stand_ins)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return importlib.import_module("hear21passt.models.passt")
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)
        sys.modules.update(previous)
