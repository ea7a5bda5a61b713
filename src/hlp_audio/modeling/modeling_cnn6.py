"""PANNs CNN6: a small VGG-like tagger on decibel log-mel spectrograms, as an HLP audio backbone.

CNN6 (Kong, Cao, Iqbal, Wang, Wang, Plumbley, "PANNs: Large-Scale Pretrained Audio Neural Networks
for Audio Pattern Recognition", IEEE/ACM TASLP 2020; code: github.com/qiuqiangkong/audioset_tagging_cnn,
MIT) is the smallest model of the HLP paper (4.8 M parameters; AudioSet mAP .343 as released, 31.1 ->
34.2 when the paper trains it without / with HLP labels).

Architecture (``Cnn6`` and ``ConvBlock5x5`` of ``pytorch/models.py``):

- the input, log-mel ``(batch, frames, 64)`` in dB from ``HLPAudioFeatureExtractor(front_end="panns")``,
  is normalised by a ``BatchNorm2d`` over the mel bins (``bn0``, part of the model);
- four blocks: 5x5 convolution without bias (padding 2), BatchNorm, ReLU, 2x2 average pooling, then
  dropout 0.2; channels 1 -> 64 -> 128 -> 256 -> 512;
- mean over frequency, then max + mean over time; dropout 0.5; Linear 512 -> 512 and ReLU (the clip
  embedding); the head, Linear 512 -> classes, reads the embedding *without* dropout (the original
  drops out a copy of the embedding that it returns, and classifies the embedding itself);
- the original applies a sigmoid inside ``forward``; this backbone returns the logits before it.

This file imports only torch, transformers and its siblings, so that it travels to the Hub as remote
code next to ``modeling_hlp_audio.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init

from .backbone import BackboneConfig, HLPBackbone
from .panns_input import MelBatchNorm, as_spectrogram_image

__all__ = ["CNN6Backbone", "CNN6Config", "CNN6ConvBlock"]


@dataclasses.dataclass
class CNN6Config(BackboneConfig):
    """Architecture of a CNN6; the defaults are PANNs' ``Cnn6`` (AudioSet: 64 mel bins, 4 blocks up to 512 channels).

    ``channels`` lists the output channels of the blocks (one block each); the embedding layer keeps the
    width of the last block.
    """

    num_mel_bins: int = 64
    channels: List[int] = dataclasses.field(default_factory=lambda: [64, 128, 256, 512])
    kernel_size: int = 5
    block_dropout: float = 0.2
    embedding_dropout: float = 0.5

    def __post_init__(self):
        positive = {"num_mel_bins": self.num_mel_bins, "kernel_size": self.kernel_size}
        positive.update({f"channels[{index}]": value for index, value in enumerate(self.channels)})
        for key, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CNN6 backbone_config[{key!r}] must be a positive int, got {value!r}")
        if not self.channels:
            raise ValueError("CNN6 backbone_config['channels'] must list at least one block")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"CNN6 backbone_config['kernel_size'] must be odd (same padding), got {self.kernel_size}")
        for key in ("block_dropout", "embedding_dropout"):
            if not 0.0 <= float(getattr(self, key)) < 1.0:
                raise ValueError(f"CNN6 backbone_config[{key!r}] must be in [0, 1), got {getattr(self, key)!r}")
        if self.num_mel_bins < 2 ** len(self.channels):
            raise ValueError(
                f"CNN6 num_mel_bins={self.num_mel_bins} is too few for {len(self.channels)} 2x2 poolings "
                f"(at least {2 ** len(self.channels)})"
            )


class CNN6ConvBlock(nn.Module):
    """PANNs' ``ConvBlock5x5``: convolution (no bias, same padding), BatchNorm, ReLU, 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5):
        super().__init__()
        self.convolution = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.normalization = nn.BatchNorm2d(out_channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.normalization(self.convolution(hidden_states))), kernel_size=2)


class CNN6Backbone(HLPBackbone):
    """PANNs CNN6 body + head, mapping decibel log-mel spectrograms to logits (before post-HLP).

    ``forward(input_values)`` takes ``(batch, frames, num_mel_bins)`` (or ``(batch, 1, frames, num_mel_bins)``)
    features of ``HLPAudioFeatureExtractor(front_end="panns")`` and returns ``(batch, num_labels)`` logits.
    Any number of frames from ``2 ** len(channels)`` on works (global pooling over time).
    """

    backbone_type = "cnn6"
    display_name = "PANNs CNN6"
    config_class = CNN6Config
    front_end = "panns"
    time_axis, freq_axis = 1, 2
    sizes: Dict[str, Dict[str, Any]] = {
        "base": {},  # PANNs' Cnn6 (AudioSet, 4,837,455 parameters with 527 classes)
        "tiny": {"num_mel_bins": 16, "channels": [8, 16]},  # for tests
    }

    def __init__(self, config: CNN6Config, num_labels: int):
        super().__init__(config, num_labels)
        self.num_mel_bins = int(config.num_mel_bins)
        self.min_frames = 2 ** len(config.channels)
        self.input_norm = MelBatchNorm(self.num_mel_bins)
        widths = [1] + list(config.channels)
        self.blocks = nn.ModuleList(
            CNN6ConvBlock(widths[index], widths[index + 1], int(config.kernel_size)) for index in range(len(config.channels))
        )
        self.block_dropout = nn.Dropout(float(config.block_dropout))
        self.embedding_dropout = nn.Dropout(float(config.embedding_dropout))
        self.embedding = nn.Linear(widths[-1], widths[-1])
        self.classifier = nn.Linear(widths[-1], num_labels)

    def forward_features(self, input_values: torch.Tensor) -> torch.Tensor:
        """The clip embedding ``(batch, channels[-1])`` (after the ReLU, before the head)."""
        hidden_states = self.input_norm(as_spectrogram_image(input_values, self.num_mel_bins, "CNN6"))
        if hidden_states.shape[2] < self.min_frames:
            raise ValueError(
                f"CNN6 needs at least {self.min_frames} frames for its {len(self.blocks)} 2x2 poolings, got input_values "
                f"of shape {tuple(input_values.shape)}"
            )
        for block in self.blocks:
            hidden_states = self.block_dropout(block(hidden_states))
        hidden_states = hidden_states.mean(dim=3)  # (batch, channels, frames')
        pooled = hidden_states.amax(dim=2) + hidden_states.mean(dim=2)
        return F.relu(self.embedding(self.embedding_dropout(pooled)))

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(input_values))

    @torch.no_grad()
    def init_module_weights(self, module: nn.Module) -> None:
        """PANNs' initialisation: Xavier-uniform convolutions and linear layers with zero biases, unit batch norms."""
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            self.init_batch_norm(module)
