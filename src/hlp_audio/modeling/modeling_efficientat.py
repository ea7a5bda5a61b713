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

This file imports only torch, so that it can travel to the Hub as remote code
next to ``modeling_hlp_audio.py``. The backbone follows the contract of that wrapper: it maps mel
spectrograms ``(batch, mel_bins, frames)`` (from ``HLPAudioFeatureExtractor``) to logits
``(batch, num_labels)`` before post-HLP, and its head is the ``classifier`` attribute.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

import torch
from torch import nn


__all__ = [
    "EfficientATBackbone",
    "EfficientATBlockSpec",
    "default_efficientat_config",
    "efficientat_block_specs",
    "make_divisible",
    "convert_original_state_dict",
    "MOBILENET_V3_LARGE_BLOCKS",
    "EFFICIENTAT_AUDIOSET_MAP",
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

_SIZE_PATTERN = re.compile(r"^mn(\d\d)$")
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


def efficientat_block_specs(backbone_config: Dict[str, Any]) -> List[EfficientATBlockSpec]:
    """The scaled block table of a backbone config (see :func:`default_efficientat_config`)."""
    width_mult = float(backbone_config["width_mult"])
    rows = backbone_config.get("block_settings")
    if rows is None:
        strides = list(backbone_config.get("strides", (2, 2, 2, 2)))
        if len(strides) != 4:
            raise ValueError(f"strides must have 4 entries (stages C1..C4), got {strides}")
        divider = 2 if backbone_config.get("reduced_tail", False) else 1
        dilation = 2 if backbone_config.get("dilated", False) else 1
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


def default_efficientat_config(size: str = "mn04") -> Dict[str, Any]:
    """Backbone config of a named size: ``"mn01"`` ... ``"mn40"`` (width = digits / 10) or ``"tiny"``.

    ``"tiny"`` is a three-block toy for tests (no expansion + residual, expansion + SE + stride,
    Hardswish + SE + residual). Real sizes reproduce ``get_model(width_mult=W, head_type="mlp",
    strides=(2, 2, 2, 2))`` of EfficientAT.
    """
    config: Dict[str, Any] = {
        "width_mult": 1.0,
        "strides": [2, 2, 2, 2],
        "dilated": False,
        "reduced_tail": False,
        "block_settings": None,
        "in_channels": 1,
        "stem_kernel_size": 3,
        "stem_stride": 2,
        "last_conv_expansion": 6,
        "last_channel": None,
        "head_type": "mlp",
        "head_dropout": 0.2,
        "se_reduction": 4,
        "batch_norm_eps": 1e-3,
        "batch_norm_momentum": 0.01,
        "num_mel_bins": 128,
    }
    if size == "tiny":
        config.update(
            width_mult=0.5,
            block_settings=[
                [16, 3, 16, 16, False, "RE", 1, 1],
                [16, 3, 64, 24, True, "RE", 2, 1],
                [24, 5, 72, 24, True, "HS", 1, 1],
            ],
            last_channel=32,
            num_mel_bins=16,
        )
        return config
    match = _SIZE_PATTERN.match(size)
    if match is None or not 1 <= int(match.group(1)) <= 40:
        raise ValueError(f"unknown EfficientAT size {size!r}; expected 'tiny' or 'mn01' ... 'mn40' (width x0.1 ... x4.0)")
    config["width_mult"] = int(match.group(1)) / 10
    return config


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


class EfficientATBackbone(nn.Module):
    """EfficientAT MobileNetV3 tagger body + ``mlp`` head, mapping mel spectrograms to logits.

    Args:
        backbone_config: a dict as returned by :func:`default_efficientat_config`.
        num_labels: number of output logits.

    ``forward(input_values)`` takes ``(batch, mel_bins, frames)`` (or ``(batch, 1, mel_bins,
    frames)``) float mel spectrograms from ``HLPAudioFeatureExtractor`` and returns logits
    ``(batch, num_labels)``, before post-HLP. Any number of frames works (global pooling); the
    number of mel bins must be the config's ``num_mel_bins`` (128 for the released checkpoints).
    """

    input_kind = "mel32k"

    def __init__(self, backbone_config: Dict[str, Any], num_labels: int):
        super().__init__()
        config = dict(default_efficientat_config("mn10"), **(backbone_config or {}))
        head_type = config["head_type"]
        if head_type != "mlp":
            raise ValueError(f"EfficientAT head_type {head_type!r} is not supported; only 'mlp' (the AudioSet checkpoints' head)")
        if num_labels < 1:
            raise ValueError(f"num_labels must be positive, got {num_labels}")
        self.config = config
        self.in_channels = int(config["in_channels"])
        self.num_mel_bins = int(config["num_mel_bins"])
        norm = dict(eps=float(config["batch_norm_eps"]), momentum=float(config["batch_norm_momentum"]))
        specs = efficientat_block_specs(config)
        self.stem = EfficientATConvLayer(
            self.in_channels,
            specs[0].input_channels,
            int(config["stem_kernel_size"]),
            stride=int(config["stem_stride"]),
            activation=nn.Hardswish,
            **norm,
        )
        self.blocks = nn.ModuleList(
            EfficientATInvertedResidual(spec, se_reduction=int(config["se_reduction"]), **norm) for spec in specs
        )
        body_channels = int(config["last_conv_expansion"]) * specs[-1].output_channels
        self.final_conv = EfficientATConvLayer(specs[-1].output_channels, body_channels, 1, activation=nn.Hardswish, **norm)
        last_channel = config["last_channel"]
        if last_channel is None:
            divider = 2 if config.get("reduced_tail", False) and config.get("block_settings") is None else 1
            last_channel = make_divisible(_LAST_CHANNEL // divider * float(config["width_mult"]))
        self.num_features = body_channels
        self.classifier = EfficientATMLPHead(body_channels, int(last_channel), num_labels, float(config["head_dropout"]))
        self.init_weights()

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

    @staticmethod
    def init_module_weights(module: nn.Module) -> None:
        """EfficientAT's initialisation of one module (conv: Kaiming fan-out, norm: 1/0, linear: N(0, 0.01)).

        Uses ``torch.nn.init`` looked up at call time on purpose: inside transformers'
        ``initialize_weights`` these functions skip the tensors ``from_pretrained`` loaded, and under
        ``no_init_weights`` they do nothing.
        """
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            nn.init.zeros_(module.running_mean)
            nn.init.ones_(module.running_var)
            nn.init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise every submodule (tensors already loaded by ``from_pretrained`` are skipped)."""
        for module in self.modules():
            self.init_module_weights(module)


_CONV_LAYER_KEYS = (
    ("0.weight", "convolution.weight"),
    ("1.weight", "normalization.weight"),
    ("1.bias", "normalization.bias"),
    ("1.running_mean", "normalization.running_mean"),
    ("1.running_var", "normalization.running_var"),
    ("1.num_batches_tracked", "normalization.num_batches_tracked"),
)


def convert_original_state_dict(original: Dict[str, torch.Tensor], backbone: "EfficientATBackbone") -> Dict[str, torch.Tensor]:
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
