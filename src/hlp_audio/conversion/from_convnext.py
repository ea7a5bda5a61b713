"""Conversion of the audio ConvNeXt AudioSet checkpoints of Pellegrini et al. (github.com/topel/audioset-convnext-inf, MIT).

The checkpoint is a training checkpoint ``{"model": state_dict, ...}`` (the public ``convnext_tiny_471mAP.pth``,
Zenodo record 8020843) with the reference's names: ``bn0.*``, ``downsample_layers.0.{0,1}`` (stem convolution
and its LayerNorm), ``downsample_layers.{1,2,3}.{0,1}`` (LayerNorm, 2x2 convolution), ``stages.{i}.{j}.*``
(``dwconv``, ``norm``, ``pwconv1``, ``pwconv2``, ``gamma``), ``norm.*``, ``head_audioset.*``, and the frozen
torchlibrosa front end, which must be that of ``HLPAudioFeatureExtractor(front_end="panns", num_mel_bins=224)``.

The size (``tiny`` or ``nano``: depths and widths) is given; the stem is read from the stem weight's kernel
(:data:`~hlp_audio.modeling.modeling_convnext.CONVNEXT_STEMS`: (18, 4) is ``after_stem_dim`` [56], (4, 4) is
[252, 56], the public Tiny's; [504, 56] has the same kernel with another stride and must be asked for). Every
other tensor is renamed onto :class:`~hlp_audio.modeling.modeling_convnext.ConvNeXtBackbone` (the first missing,
unexpected or differently shaped key is an error); the saved folder is reloaded and must give the same logits.
The converted logits are the reference's ``clipwise_logits`` (before its sigmoid); this is checked against an
independent implementation of the reference forward on a state dict with the original layout
(``tests/test_convnext.py``), not yet against the real file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from ..modeling.modeling_convnext import CONVNEXT_STEMS, ConvNeXtBackbone, ConvNeXtConfig
from .common import (
    CheckpointError,
    check_published_digest,
    convert_torchlibrosa_checkpoint,
    load_state_dict_file,
    rename_by_rules,
    unwrap_state_dict,
)

__all__ = [
    "CONVNEXT_PUBLISHED",
    "ConvNeXtCheckpointError",
    "convert_convnext",
    "convnext_config_from_state_dict",
    "convnext_original_key",
    "load_convnext_checkpoint",
]

#: The published audio ConvNeXt checkpoint: file name -> (hashlib algorithm, digest), and its mAP.
CONVNEXT_PUBLISHED = {"convnext_tiny_471mAP.pth": ("md5", "e069ecd1c7b880268331119521c549f2")}
CONVNEXT_PUBLISHED_MAP = {"convnext_tiny_471mAP.pth": 0.471}
STEM_KEY = "downsample_layers.0.0.weight"

_BLOCK_NAMES = {
    "depthwise_convolution": "dwconv",
    "norm": "norm",
    "pointwise_expand": "pwconv1",
    "pointwise_project": "pwconv2",
}
# backbone key -> original key
_KEY_RULES = (
    (r"input_norm\.(.+)", lambda m: f"bn0.{m[1]}"),
    (r"stem\.convolution\.(weight|bias)", lambda m: f"downsample_layers.0.0.{m[1]}"),
    (r"stem\.norm\.(weight|bias)", lambda m: f"downsample_layers.0.1.{m[1]}"),
    (r"stages\.(\d+)\.downsample\.norm\.(weight|bias)", lambda m: f"downsample_layers.{m[1]}.0.{m[2]}"),
    (r"stages\.(\d+)\.downsample\.convolution\.(weight|bias)", lambda m: f"downsample_layers.{m[1]}.1.{m[2]}"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.layer_scale", lambda m: f"stages.{m[1]}.{m[2]}.gamma"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.(\w+)\.(weight|bias)", lambda m: f"stages.{m[1]}.{m[2]}.{_BLOCK_NAMES[m[3]]}.{m[4]}"),
    (r"norm\.(weight|bias)", lambda m: f"norm.{m[1]}"),
    (r"classifier\.(weight|bias)", lambda m: f"head_audioset.{m[1]}"),
)


class ConvNeXtCheckpointError(CheckpointError):
    """The file is not an audio ConvNeXt checkpoint of the given size; the message names the file and the key at fault."""


def convnext_original_key(key: str) -> str:
    """The reference's name of a ``ConvNeXtBackbone`` state-dict key (``stages.1.blocks.0.layer_scale`` ->
    ``stages.1.0.gamma``)."""
    return rename_by_rules(key, _KEY_RULES, "ConvNeXt")


def load_convnext_checkpoint(path) -> Dict[str, torch.Tensor]:
    """The bare state dict of an audio ConvNeXt checkpoint (``weights_only=True``): unwraps ``{"model": ...}`` or
    ``{"state_dict": ...}`` and a ``module.`` prefix."""
    return unwrap_state_dict(
        load_state_dict_file(path, ConvNeXtCheckpointError),
        required=(STEM_KEY, "head_audioset.weight"),
        model_name="an audio ConvNeXt checkpoint (topel/audioset-convnext-inf)",
        source=str(path),
        error=ConvNeXtCheckpointError,
    )


def convnext_config_from_state_dict(
    state_dict, size: str, *, after_stem_dim: Optional[Sequence[int]] = None, source: str = "checkpoint"
) -> ConvNeXtConfig:
    """The config of ``size`` with the stem of the checkpoint: ``after_stem_dim`` when given, else the stem whose
    kernel is that of the stem weight (the first of :data:`CONVNEXT_STEMS` with it)."""
    config = ConvNeXtBackbone.default_config(size)
    if after_stem_dim is not None:
        return config.replace(after_stem_dim=list(after_stem_dim))
    kernel = tuple(state_dict[STEM_KEY].shape[-2:])
    for stem, (stem_kernel, _, _) in CONVNEXT_STEMS.items():
        if tuple(stem_kernel) == kernel:
            return config.replace(after_stem_dim=list(stem))
    raise ConvNeXtCheckpointError(
        f"{source}: {STEM_KEY!r} has kernel {kernel}, which is none of the reference's stems "
        f"({', '.join(f'{list(stem)}: {kernels[0]}' for stem, kernels in CONVNEXT_STEMS.items())})"
    )


def convert_convnext(
    checkpoint,
    size: str,
    out,
    *,
    after_stem_dim: Optional[Sequence[int]] = None,
    post_hlp: bool = True,
    audioset_dir=None,
    check_files: Sequence = (),
    top_k: int = 3,
    repo_id: Optional[str] = None,
) -> Path:
    """Convert the audio ConvNeXt ``checkpoint`` of ``size`` (``"tiny"``, ``"nano"``) and save the model folder to
    ``out``; returns ``out``.

    A file named like the published checkpoint (:data:`CONVNEXT_PUBLISHED`) must have its published md5.
    ``repo_id`` is the Hub id written in the card's usage example (default: the model name).
    """
    checkpoint = Path(checkpoint)
    if size not in ConvNeXtBackbone.sizes:
        raise ValueError(f"unknown convnext size {size!r}; known sizes: {sorted(ConvNeXtBackbone.sizes)}")
    published = check_published_digest(checkpoint, CONVNEXT_PUBLISHED, ConvNeXtCheckpointError)
    original = load_convnext_checkpoint(checkpoint)
    config = convnext_config_from_state_dict(original, size, after_stem_dim=after_stem_dim, source=str(checkpoint))
    return convert_torchlibrosa_checkpoint(
        original,
        "convnext",
        config,
        out,
        original_key=convnext_original_key,
        head_key="head_audioset.weight",
        source=f"{checkpoint} (--size {size})",
        hint=f"; expected an audio ConvNeXt with depths {list(config.depths)}, widths {list(config.widths)}, "
        f"the {list(config.after_stem_dim)} stem and {config.num_mel_bins} mel bins",
        error=ConvNeXtCheckpointError,
        card=dict(
            model_name=f"convnext-{size}-as-hlp",
            backbone=f"Audio ConvNeXt-{size}, stem {list(config.after_stem_dim)}",
            repo_id=repo_id,
            published_map=CONVNEXT_PUBLISHED_MAP[checkpoint.name] if published else None,
            source_name="audioset-convnext-inf (published, not re-measured here)",
            source_url="https://github.com/topel/audioset-convnext-inf",
            origin=f"audioset-convnext-inf (github.com/topel/audioset-convnext-inf, MIT) AudioSet checkpoint "
            f"`{checkpoint.name}` (Pellegrini, Khalfaoui-Hassani, Labbé, Masquelier, Interspeech 2023)",
            conversion="hlp-audio scripts/convert_convnext.py (weights unchanged, keys renamed; torchlibrosa front end "
            "re-implemented with torch.stft; logits are the original's before its sigmoid)",
            license="mit",
        ),
        post_hlp=post_hlp,
        audioset_dir=audioset_dir,
        check_files=check_files,
        top_k=top_k,
    )
