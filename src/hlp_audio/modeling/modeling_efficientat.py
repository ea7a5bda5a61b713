"""EfficientAT "mn" taggers: MobileNetV3 on log-mel spectrograms, as an HLP audio backbone.

EfficientAT (Schmid, Koutini, Widmer, "Efficient Large-Scale Audio Tagging via Transformer-to-CNN
Knowledge Distillation", ICASSP 2023; code: github.com/fschmid56/EfficientAT, MIT) trains
MobileNetV3 models on AudioSet by distillation from PaSST ensembles. The "mn" family differs only
in the width multiplier: mn01 (x0.1) ... mn10 (x1.0) ... mn40 (x4.0), AudioSet mAP .298 to .487.

Architecture (the MobileNetV3-Large table of Howard et al., 2019, on a 1-channel mel "image"):

- a stem: 3x3 convolution, stride 2, BatchNorm, Hardswish;
- 15 inverted-residual blocks: optional 1x1 expansion, depthwise kxk convolution, optional
  channel squeeze-excitation (ReLU bottleneck of ``channels // 4`` rounded to a multiple of 8,
  then a *sigmoid* gate, unlike torchvision's hard-sigmoid), 1x1 projection without activation,
  and a residual connection when the shape is unchanged;
- a 1x1 convolution to 6x the last block width, BatchNorm, Hardswish;
- the ``mlp`` head: global average pooling over frequency and time, Linear, Hardswish, Dropout,
  Linear to the logits.

Every channel count is ``make_divisible(channels * width_mult, 8)``. BatchNorm uses eps=1e-3 and
momentum=0.01, as in the original training.

This file imports only torch, transformers and its siblings, so that it can travel to the Hub as remote code
next to ``modeling_hlp_audio.py``. The backbone follows the contract of that wrapper: it maps mel
spectrograms ``(batch, mel_bins, frames)`` (from ``HLPAudioFeatureExtractor``) to logits
``(batch, num_labels)`` before post-HLP, and its head is the ``classifier`` attribute.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

import torch
from torch import nn
from transformers import initialization as init

from .backbone import BackboneConfig, HLPBackbone


__all__ = [
    "EfficientATBackbone",
    "EfficientATConfig",
    "EfficientATBlockSpec",
    "efficientat_block_specs",
    "make_divisible",
    "MOBILENET_V3_LARGE_BLOCKS",
]

# MobileNetV3-Large bottleneck table, at width 1.0. Columns: input channels, kernel, expanded
# channels, output channels, squeeze-excitation, activation ("RE" ReLU / "HS" Hardswish), stride.
# A stride of ``None`` marks the four downsampling stages (C1..C4) whose stride is configurable
# (EfficientAT's ``strides`` argument); the last three rows form the "tail" that ``reduced_tail``
# halves and ``dilated`` dilates.
MOBILENET_V3_LARGE_BLOCKS = (
    (16, 3, 16, 16, False, "RE", 1),
    (16, 3, 64, 24, False, "RE", None),  # C1
    (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", None),  # C2
    (40, 5, 120, 40, True, "RE", 1),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", None),  # C3
    (80, 3, 200, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 480, 112, True, "HS", 1),
    (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", None),  # C4
    (160, 5, 960, 160, True, "HS", 1),
    (160, 5, 960, 160, True, "HS", 1),
)
_TAIL_ROWS = 3
_LAST_CHANNEL = 1280

_ACTIVATIONS = {"RE": nn.ReLU, "HS": nn.Hardswish}


def make_divisible(value: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``min_value``), never going
    more than 10 % below it: the channel rounding of the TensorFlow MobileNet reference."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class EfficientATBlockSpec:
    """One inverted-residual block after width scaling (channel counts are final)."""

    __slots__ = ("input_channels", "kernel_size", "expanded_channels", "output_channels", "use_se", "activation", "stride", "dilation")

    def __init__(self, input_channels, kernel_size, expanded_channels, output_channels, use_se, activation, stride, dilation):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(_ACTIVATIONS)}")
        if stride not in (1, 2):
            raise ValueError(f"block stride must be 1 or 2, got {stride}")
        self.input_channels = int(input_channels)
        self.kernel_size = int(kernel_size)
        self.expanded_channels = int(expanded_channels)
        self.output_channels = int(output_channels)
        self.use_se = bool(use_se)
        self.activation = activation
        self.stride = int(stride)
        self.dilation = int(dilation)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"EfficientATBlockSpec({fields})"


def efficientat_block_specs(config: "EfficientATConfig") -> List[EfficientATBlockSpec]:
    """The scaled block table of a config (see :class:`EfficientATConfig`)."""
    width_mult = float(config.width_mult)
    rows = config.block_settings
    if rows is None:
        strides = list(config.strides)
        if len(strides) != 4:
            raise ValueError(f"strides must have 4 entries (stages C1..C4), got {strides}")
        divider = 2 if config.reduced_tail else 1
        dilation = 2 if config.dilated else 1
        stage_strides = iter(strides)
        first_tail_row = len(MOBILENET_V3_LARGE_BLOCKS) - _TAIL_ROWS
        rows = []
        for index, (cin, kernel, cexp, cout, use_se, act, stride) in enumerate(MOBILENET_V3_LARGE_BLOCKS):
            in_tail = index >= first_tail_row
            if index == first_tail_row:  # reads the unreduced body: only its output is reduced
                cout = cout // divider
            elif in_tail:
                cin, cexp, cout = cin // divider, cexp // divider, cout // divider
            stride = next(stage_strides) if stride is None else stride
            rows.append((cin, kernel, cexp, cout, use_se, act, stride, dilation if in_tail else 1))
    specs = []
    for row_index, row in enumerate(rows):
        if len(row) != 8:
            raise ValueError(
                f"block_settings[{row_index}] = {row!r}: expected 8 entries (input, kernel, expanded, output, "
                "use_se, activation, stride, dilation)"
            )
        cin, kernel, cexp, cout, use_se, act, stride, dil = row
        specs.append(
            EfficientATBlockSpec(
                make_divisible(cin * width_mult),
                kernel,
                make_divisible(cexp * width_mult),
                make_divisible(cout * width_mult),
                use_se,
                act,
                stride,
                dil,
            )
        )
    for previous, current in zip(specs, specs[1:]):
        if previous.output_channels != current.input_channels:
            raise ValueError(
                f"block_settings do not chain: a block outputs {previous.output_channels} channels but the next "
                f"one expects {current.input_channels}"
            )
    return specs


@dataclasses.dataclass
class EfficientATConfig(BackboneConfig):
    """Architecture of an EfficientAT ``mn`` tagger; the defaults are mn10 (width 1.0), ``get_model(width_mult=W,
    head_type="mlp", strides=(2, 2, 2, 2))`` of EfficientAT.

    ``block_settings`` replaces the MobileNetV3-Large table with explicit rows (input, kernel, expanded, output,
    use_se, activation, stride, dilation) at width 1.0; ``last_channel`` ``None`` derives the head width.
    """

    width_mult: float = 1.0
    strides: List[int] = dataclasses.field(default_factory=lambda: [2, 2, 2, 2])
    dilated: bool = False
    reduced_tail: bool = False
    block_settings: Optional[List[List[Any]]] = None
    in_channels: int = 1
    stem_kernel_size: int = 3
    stem_stride: int = 2
    last_conv_expansion: int = 6
    last_channel: Optional[int] = None
    head_type: str = "mlp"
    head_dropout: float = 0.2
    se_reduction: int = 4
    batch_norm_eps: float = 1e-3
    batch_norm_momentum: float = 0.01
    num_mel_bins: int = 128

    def __post_init__(self):
        if self.head_type != "mlp":
            raise ValueError(
                f"EfficientAT head_type {self.head_type!r} is not supported; only 'mlp' (the AudioSet checkpoints' head)"
            )
        if not float(self.width_mult) > 0:
            raise ValueError(f"EfficientAT width_mult must be positive, got {self.width_mult!r}")


def _efficientat_sizes() -> Dict[str, Dict[str, Any]]:
    """``"mn01"`` ... ``"mn40"`` (width = digits / 10) and ``"tiny"``, a three-block toy for tests (no expansion +
    residual, expansion + SE + stride, Hardswish + SE + residual)."""
    sizes: Dict[str, Dict[str, Any]] = {f"mn{width:02d}": {"width_mult": width / 10} for width in range(1, 41)}
    sizes["tiny"] = dict(
        width_mult=0.5,
        block_settings=[
            [16, 3, 16, 16, False, "RE", 1, 1],
            [16, 3, 64, 24, True, "RE", 2, 1],
            [24, 5, 72, 24, True, "HS", 1, 1],
        ],
        last_channel=32,
        num_mel_bins=16,
    )
    return sizes


class EfficientATConvLayer(nn.Module):
    """Convolution (no bias), BatchNorm, optional activation; "same" padding for odd kernels."""

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, dilation=1, groups=1, activation=None, eps=1e-3, momentum=0.01):
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.convolution = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=False
        )
        self.normalization = nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum)
        self.activation = activation() if activation is not None else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.normalization(self.convolution(hidden_states)))


class EfficientATSqueezeExcitation(nn.Module):
    """Channel squeeze-excitation: mean over (frequency, time), ReLU bottleneck, sigmoid gate."""

    def __init__(self, channels: int, squeeze_channels: int):
        super().__init__()
        self.reduce = nn.Linear(channels, squeeze_channels)
        self.expand = nn.Linear(squeeze_channels, channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        scale = hidden_states.mean(dim=(2, 3))
        scale = torch.sigmoid(self.expand(torch.relu(self.reduce(scale))))
        return hidden_states * scale[:, :, None, None]


class EfficientATInvertedResidual(nn.Module):
    """MobileNetV3 bottleneck: [1x1 expand] -> depthwise kxk -> [SE] -> 1x1 project (+ residual)."""

    def __init__(self, spec: EfficientATBlockSpec, *, se_reduction: int = 4, eps: float = 1e-3, momentum: float = 0.01):
        super().__init__()
        activation = _ACTIVATIONS[spec.activation]
        norm = dict(eps=eps, momentum=momentum)
        self.use_residual = spec.stride == 1 and spec.input_channels == spec.output_channels
        self.expand = (
            EfficientATConvLayer(spec.input_channels, spec.expanded_channels, 1, activation=activation, **norm)
            if spec.expanded_channels != spec.input_channels
            else None
        )
        # As in EfficientAT (and torchvision), a dilated block does not downsample.
        self.depthwise = EfficientATConvLayer(
            spec.expanded_channels,
            spec.expanded_channels,
            spec.kernel_size,
            stride=1 if spec.dilation > 1 else spec.stride,
            dilation=spec.dilation,
            groups=spec.expanded_channels,
            activation=activation,
            **norm,
        )
        self.squeeze_excitation = (
            EfficientATSqueezeExcitation(spec.expanded_channels, make_divisible(spec.expanded_channels // se_reduction, 8))
            if spec.use_se
            else None
        )
        self.project = EfficientATConvLayer(spec.expanded_channels, spec.output_channels, 1, activation=None, **norm)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = hidden_states
        if self.expand is not None:
            hidden_states = self.expand(hidden_states)
        hidden_states = self.depthwise(hidden_states)
        if self.squeeze_excitation is not None:
            hidden_states = self.squeeze_excitation(hidden_states)
        hidden_states = self.project(hidden_states)
        if self.use_residual:
            hidden_states = hidden_states + residual
        return hidden_states


class EfficientATMLPHead(nn.Module):
    """EfficientAT's ``mlp`` head: global average pool, Linear, Hardswish, Dropout, Linear."""

    def __init__(self, in_channels: int, hidden_size: int, num_labels: int, dropout: float = 0.2):
        super().__init__()
        self.dense = nn.Linear(in_channels, hidden_size)
        self.activation = nn.Hardswish()
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size, num_labels)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        pooled = feature_map.mean(dim=(2, 3))
        return self.output(self.dropout(self.activation(self.dense(pooled))))


class EfficientATBackbone(HLPBackbone):
    """EfficientAT MobileNetV3 tagger body + ``mlp`` head, mapping mel spectrograms to logits.

    ``forward(input_values)`` takes ``(batch, mel_bins, frames)`` (or ``(batch, 1, mel_bins,
    frames)``) float mel spectrograms from ``HLPAudioFeatureExtractor`` and returns logits
    ``(batch, num_labels)``, before post-HLP. Any number of frames works (global pooling); the
    number of mel bins must be the config's ``num_mel_bins`` (128 for the released checkpoints).
    """

    backbone_type = "efficientat"
    display_name = "EfficientAT (MobileNetV3)"
    config_class = EfficientATConfig
    time_axis, freq_axis = 2, 1
    sizes = _efficientat_sizes()

    def __init__(self, config: EfficientATConfig, num_labels: int):
        super().__init__(config, num_labels)
        self.in_channels = int(config.in_channels)
        self.num_mel_bins = int(config.num_mel_bins)
        norm = dict(eps=float(config.batch_norm_eps), momentum=float(config.batch_norm_momentum))
        specs = efficientat_block_specs(config)
        self.stem = EfficientATConvLayer(
            self.in_channels,
            specs[0].input_channels,
            int(config.stem_kernel_size),
            stride=int(config.stem_stride),
            activation=nn.Hardswish,
            **norm,
        )
        self.blocks = nn.ModuleList(
            EfficientATInvertedResidual(spec, se_reduction=int(config.se_reduction), **norm) for spec in specs
        )
        body_channels = int(config.last_conv_expansion) * specs[-1].output_channels
        self.final_conv = EfficientATConvLayer(specs[-1].output_channels, body_channels, 1, activation=nn.Hardswish, **norm)
        last_channel = config.last_channel
        if last_channel is None:
            divider = 2 if config.reduced_tail and config.block_settings is None else 1
            last_channel = make_divisible(_LAST_CHANNEL // divider * float(config.width_mult))
        self.num_features = body_channels
        self.classifier = EfficientATMLPHead(body_channels, int(last_channel), num_labels, float(config.head_dropout))

    def forward_features(self, input_values: torch.Tensor) -> torch.Tensor:
        """Feature map of the body, ``(batch, num_features, freq', time')``."""
        given_shape = tuple(input_values.shape)
        if input_values.dim() == 3:
            if self.in_channels != 1:
                raise ValueError(
                    f"input_values of shape {given_shape} has no channel axis but the backbone expects "
                    f"{self.in_channels} input channels"
                )
            input_values = input_values.unsqueeze(1)
        elif input_values.dim() != 4 or input_values.shape[1] != self.in_channels:
            raise ValueError(
                f"input_values must be (batch, mel_bins, frames) or (batch, {self.in_channels}, mel_bins, frames) "
                f"mel spectrograms, got shape {given_shape}"
            )
        if input_values.shape[-2] != self.num_mel_bins:
            raise ValueError(
                f"input_values of shape {given_shape} has {input_values.shape[-2]} mel bins on axis -2 "
                f"but the backbone expects {self.num_mel_bins}: pass (batch, mel_bins, frames) from "
                "HLPAudioFeatureExtractor (ASTFeatureExtractor gives (batch, frames, mel_bins))"
            )
        hidden_states = self.stem(input_values)
        for block in self.blocks:
            hidden_states = block(hidden_states)
        return self.final_conv(hidden_states)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(input_values))

    @torch.no_grad()
    def init_module_weights(self, module: nn.Module) -> None:
        """EfficientAT's initialisation of one module (conv: Kaiming fan-out, norm: 1/0, linear: N(0, 0.01))."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            self.init_batch_norm(module)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=0.01)
            if module.bias is not None:
                init.zeros_(module.bias)
