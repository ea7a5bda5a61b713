"""The audio ConvNeXt of Pellegrini et al. as an HLP audio backbone.

Pellegrini, Khalfaoui-Hassani, Labbé, Masquelier, "Adapting a ConvNeXt model to audio classification on
AudioSet", Interspeech 2023 (code: github.com/topel/audioset-convnext-inf, MIT): ConvNeXt (Liu et al.,
2022) on PANNs' decibel log-mel spectrograms with 224 mel bins. The HLP paper uses ConvNeXt-nano (trained
from scratch; post-HLP alone slightly hurts it, 41.2 -> 41.0 mAP); the public checkpoint is ConvNeXt-Tiny
(``convnext_tiny_471mAP.pth``, AudioSet mAP .471).

Architecture (``ConvNeXt`` of ``src/audioset_convnext_inf/pytorch/convnext.py``):

- the input, log-mel ``(batch, frames, 224)`` in dB from ``HLPAudioFeatureExtractor(front_end="panns")``,
  is normalised by a ``BatchNorm2d`` over the mel bins (``bn0``) and read as a one-channel image
  ``(batch, 1, frames, mel_bins)``;
- a one-channel stem, a strided convolution whose shape the reference chooses by ``after_stem_dim`` (the
  (time, mel) size of its output for a 10 s clip, see :data:`CONVNEXT_STEMS`), then a channels-first
  LayerNorm;
- four stages of ConvNeXt blocks (depthwise 7x7 convolution, LayerNorm, Linear to 4x width, GELU, Linear
  back, layer scale, stochastic depth rising linearly from 0 to ``drop_path_rate`` over all blocks, residual);
  stages 2-4 start with a channels-first LayerNorm and a 2x2 convolution of stride 2;
- mean over frequency, then max + mean over time, a final LayerNorm (the clip embedding), and the
  Linear head. The original applies a sigmoid after the head; this backbone returns the logits before it.

This file imports only torch, transformers and its siblings, so that it travels to the Hub as remote
code next to ``modeling_hlp_audio.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Tuple

import torch
from torch import nn
from transformers import initialization as init

from .backbone import BackboneConfig, HLPBackbone, drop_path
from .panns_input import MelBatchNorm, as_spectrogram_image

__all__ = [
    "CONVNEXT_STEMS",
    "ConvNeXtBackbone",
    "ConvNeXtBlock",
    "ConvNeXtConfig",
    "ChannelsFirstLayerNorm",
]

# The reference's stems, by ``after_stem_dim``: (kernel, stride, padding), each (time, mel). For a 10 s clip
# (1,001 frames) and 224 mel bins, [56] gives a 56 x 56 map and [252, 56] a 252 x 56 one (the public Tiny).
CONVNEXT_STEMS: Dict[Tuple[int, ...], Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]] = {
    (56,): ((18, 4), (18, 4), (9, 0)),
    (112,): ((9, 2), (9, 2), (4, 0)),
    (252, 56): ((4, 4), (4, 4), (4, 0)),
    (504, 28): ((4, 8), (2, 8), (5, 0)),
    (504, 56): ((4, 4), (2, 4), (5, 0)),
}
_DOWNSAMPLINGS = 3  # 2x2 stride-2 convolutions between the four stages


@dataclasses.dataclass
class ConvNeXtConfig(BackboneConfig):
    """Architecture of an audio ConvNeXt; the defaults are ConvNeXt-Tiny with the stem of the public checkpoint.

    ``after_stem_dim`` is the reference's name for the stem (a key of :data:`CONVNEXT_STEMS`);
    ``drop_path_rate`` 0.1 is the reference's training default; ``layer_scale_init_value`` 0 means no layer scale.
    """

    num_mel_bins: int = 224
    depths: List[int] = dataclasses.field(default_factory=lambda: [3, 3, 9, 3])
    widths: List[int] = dataclasses.field(default_factory=lambda: [96, 192, 384, 768])
    after_stem_dim: List[int] = dataclasses.field(default_factory=lambda: [252, 56])
    drop_path_rate: float = 0.1
    layer_scale_init_value: float = 1e-6
    layer_norm_eps: float = 1e-6

    def __post_init__(self):
        for key in ("depths", "widths"):
            values = getattr(self, key)
            if len(values) != _DOWNSAMPLINGS + 1 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"ConvNeXt backbone_config[{key!r}] must be 4 positive ints (one per stage), got {values!r}")
        if tuple(self.after_stem_dim) not in CONVNEXT_STEMS:
            raise ValueError(
                f"ConvNeXt backbone_config['after_stem_dim'] {self.after_stem_dim!r} is not one of the reference's stems "
                f"{[list(key) for key in CONVNEXT_STEMS]}"
            )
        if not 0.0 <= float(self.drop_path_rate) < 1.0:
            raise ValueError(f"ConvNeXt backbone_config['drop_path_rate'] must be in [0, 1), got {self.drop_path_rate!r}")
        if float(self.layer_scale_init_value) < 0.0:
            raise ValueError(f"ConvNeXt backbone_config['layer_scale_init_value'] must be >= 0, got {self.layer_scale_init_value!r}")
        (_, mel_kernel), (_, mel_stride), (_, mel_padding) = self.stem
        mel_positions = (self.num_mel_bins + 2 * mel_padding - mel_kernel) // mel_stride + 1
        if mel_positions < 2 ** _DOWNSAMPLINGS:
            raise ValueError(
                f"ConvNeXt num_mel_bins={self.num_mel_bins} gives {mel_positions} mel positions after the "
                f"{list(self.after_stem_dim)} stem, fewer than the {2 ** _DOWNSAMPLINGS} its downsamplings need"
            )

    @property
    def stem(self) -> Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]:
        """(kernel, stride, padding) of the stem convolution, each (time, mel)."""
        return CONVNEXT_STEMS[tuple(self.after_stem_dim)]


class ChannelsFirstLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a ``(batch, channels, time, mel)`` map (the reference's ``channels_first``)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden_states.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 convolution, LayerNorm, Linear (4x), GELU, Linear, layer scale, stochastic depth, residual."""

    def __init__(self, width: int, *, drop_path_rate: float, layer_scale_init_value: float, eps: float):
        super().__init__()
        self.depthwise_convolution = nn.Conv2d(width, width, kernel_size=7, padding=3, groups=width)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.pointwise_expand = nn.Linear(width, 4 * width)
        self.activation = nn.GELU()
        self.pointwise_project = nn.Linear(4 * width, width)
        self.layer_scale_init_value = float(layer_scale_init_value)
        self.layer_scale = (
            nn.Parameter(torch.full((width,), self.layer_scale_init_value)) if self.layer_scale_init_value > 0 else None
        )
        self.drop_path_rate = float(drop_path_rate)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.depthwise_convolution(hidden_states).permute(0, 2, 3, 1)  # channels last
        hidden_states = self.pointwise_project(self.activation(self.pointwise_expand(self.norm(hidden_states))))
        if self.layer_scale is not None:
            hidden_states = self.layer_scale * hidden_states
        hidden_states = hidden_states.permute(0, 3, 1, 2)
        return residual + drop_path(hidden_states, self.drop_path_rate, self.training)


class ConvNeXtStem(nn.Module):
    """The one-channel stem: a strided convolution (see :data:`CONVNEXT_STEMS`), then a channels-first LayerNorm."""

    def __init__(self, config: ConvNeXtConfig):
        super().__init__()
        kernel, stride, padding = config.stem
        self.convolution = nn.Conv2d(1, config.widths[0], kernel_size=kernel, stride=stride, padding=padding)
        self.norm = ChannelsFirstLayerNorm(config.widths[0], eps=config.layer_norm_eps)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.norm(self.convolution(image))


class ConvNeXtDownsample(nn.Module):
    """Between stages: a channels-first LayerNorm, then a 2x2 convolution of stride 2."""

    def __init__(self, in_width: int, out_width: int, eps: float):
        super().__init__()
        self.norm = ChannelsFirstLayerNorm(in_width, eps=eps)
        self.convolution = nn.Conv2d(in_width, out_width, kernel_size=2, stride=2)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.convolution(self.norm(hidden_states))


class ConvNeXtStage(nn.Module):
    """An optional downsampling, then blocks of one width."""

    def __init__(self, blocks: List[ConvNeXtBlock], downsample: ConvNeXtDownsample | None = None):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            hidden_states = self.downsample(hidden_states)
        for block in self.blocks:
            hidden_states = block(hidden_states)
        return hidden_states


class ConvNeXtBackbone(HLPBackbone):
    """Audio ConvNeXt body + head, mapping decibel log-mel spectrograms to logits (before post-HLP).

    ``forward(input_values)`` takes ``(batch, frames, num_mel_bins)`` (or ``(batch, 1, frames, num_mel_bins)``)
    features of ``HLPAudioFeatureExtractor(front_end="panns", num_mel_bins=224)`` and returns
    ``(batch, num_labels)`` logits. Any number of frames that survives the stem and three downsamplings works.
    """

    backbone_type = "convnext"
    display_name = "Audio ConvNeXt"
    config_class = ConvNeXtConfig
    front_end = "panns"
    time_axis, freq_axis = 1, 2
    sizes: Dict[str, Dict[str, Any]] = {
        "tiny": {},  # ConvNeXt-Tiny (the public AudioSet checkpoint's architecture)
        "nano": {"depths": [2, 2, 8, 2], "widths": [80, 160, 320, 640]},  # the HLP paper's ConvNeXt-nano
        "toy": {"num_mel_bins": 32, "depths": [1, 1, 1, 1], "widths": [8, 16, 24, 32]},  # for tests
    }

    def __init__(self, config: ConvNeXtConfig, num_labels: int):
        super().__init__(config, num_labels)
        self.num_mel_bins = int(config.num_mel_bins)
        self.input_norm = MelBatchNorm(self.num_mel_bins)
        self.stem = ConvNeXtStem(config)
        eps = float(config.layer_norm_eps)
        rates = torch.linspace(0.0, float(config.drop_path_rate), sum(config.depths)).tolist()
        stages = []
        for index, (depth, width) in enumerate(zip(config.depths, config.widths)):
            blocks = [
                ConvNeXtBlock(width, drop_path_rate=rates.pop(0), layer_scale_init_value=config.layer_scale_init_value, eps=eps)
                for _ in range(depth)
            ]
            downsample = ConvNeXtDownsample(config.widths[index - 1], width, eps) if index else None
            stages.append(ConvNeXtStage(blocks, downsample))
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(config.widths[-1], eps=eps)
        self.classifier = nn.Linear(config.widths[-1], num_labels)

    def min_frames(self) -> int:
        """The fewest input frames that leave at least one time position after the stem and the downsamplings."""
        (kernel, _), (stride, _), (padding, _) = self.config.stem
        return max(1, (2 ** _DOWNSAMPLINGS - 1) * stride + kernel - 2 * padding)

    def forward_features(self, input_values: torch.Tensor) -> torch.Tensor:
        """The clip embedding ``(batch, widths[-1])``: max + mean over time of the frequency means, LayerNorm."""
        image = as_spectrogram_image(input_values, self.num_mel_bins, "ConvNeXt")
        if image.shape[2] < self.min_frames():
            raise ValueError(
                f"ConvNeXt with the {list(self.config.after_stem_dim)} stem needs at least {self.min_frames()} frames, "
                f"got input_values of shape {tuple(input_values.shape)}"
            )
        hidden_states = self.stem(self.input_norm(image))
        for stage in self.stages:
            hidden_states = stage(hidden_states)
        hidden_states = hidden_states.mean(dim=3)  # (batch, channels, time)
        return self.norm(hidden_states.amax(dim=2) + hidden_states.mean(dim=2))

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(input_values))

    @torch.no_grad()
    def init_module_weights(self, module: nn.Module) -> None:
        """The reference's initialisation: truncated normal (std 0.02, cut at +-2) convolutions and linear layers
        with zero biases, unit norms, layer scales at ``layer_scale_init_value``."""
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            self.init_batch_norm(module)
        elif isinstance(module, ConvNeXtBlock) and module.layer_scale is not None:
            init.constant_(module.layer_scale, module.layer_scale_init_value)
