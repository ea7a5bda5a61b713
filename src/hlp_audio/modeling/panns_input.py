"""The input of the PANNs-family backbones (CNN6, the audio ConvNeXt): decibel log-mel features as a
one-channel image, and PANNs' first layer, a batch norm over the mel bins (``bn0``).

Both backbones read ``HLPAudioFeatureExtractor(front_end="panns")`` features ``(batch, frames, mel_bins)``
(torchlibrosa's layout without its channel axis). This file imports only torch (it travels to the Hub
as remote code with the model files).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MelBatchNorm", "as_spectrogram_image"]


def as_spectrogram_image(input_values: torch.Tensor, num_mel_bins: int, model: str) -> torch.Tensor:
    """``(batch, frames, mel_bins)`` or ``(batch, 1, frames, mel_bins)`` features as a one-channel image
    ``(batch, 1, frames, mel_bins)``; any other shape is an error naming the expected layout."""
    given = tuple(input_values.shape)
    if input_values.dim() == 3:
        input_values = input_values.unsqueeze(1)
    if input_values.dim() != 4 or input_values.shape[1] != 1 or input_values.shape[-1] != num_mel_bins:
        raise ValueError(
            f"{model} expects input_values of shape (batch, frames, {num_mel_bins} mel bins) or (batch, 1, frames, "
            f"{num_mel_bins}) from HLPAudioFeatureExtractor(front_end='panns'), got {given}"
        )
    return input_values


class MelBatchNorm(nn.BatchNorm2d):
    """PANNs' ``bn0``: a ``BatchNorm2d`` whose channels are the mel bins of a ``(batch, 1, frames, mel_bins)``
    image (the original transposes the image, normalises, and transposes back)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return super().forward(image.transpose(1, 3)).transpose(1, 3)
