"""Batched augmentation on the accelerator: mixup and SpecAugment-style time / frequency masks."""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

__all__ = ["mixup", "mask_time_frequency"]


def mixup(
    inputs: torch.Tensor, targets: torch.Tensor, alpha: float, rng: np.random.Generator
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mix each example with another of the batch: ``lam * x + (1 - lam) * x[perm]``, same for targets.

    ``lam ~ Beta(alpha, alpha)`` per example, folded to ``max(lam, 1 - lam)`` so that the first
    example dominates (EfficientAT / PaSST recipe). Works on waveforms or features (batch first).
    """
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    batch = inputs.shape[0]
    if targets.shape[0] != batch:
        raise ValueError(f"inputs have batch {batch} but targets have {targets.shape[0]}")
    lam = rng.beta(alpha, alpha, size=batch)
    lam = np.maximum(lam, 1.0 - lam)
    perm = torch.as_tensor(rng.permutation(batch), device=inputs.device)
    lam_x = torch.as_tensor(lam, dtype=inputs.dtype, device=inputs.device).reshape((batch,) + (1,) * (inputs.ndim - 1))
    lam_y = torch.as_tensor(lam, dtype=targets.dtype, device=targets.device).reshape((batch,) + (1,) * (targets.ndim - 1))
    mixed_inputs = inputs * lam_x + inputs[perm] * (1 - lam_x)
    mixed_targets = targets * lam_y + targets[perm] * (1 - lam_y)
    return mixed_inputs, mixed_targets


def mask_time_frequency(
    features: torch.Tensor,
    rng: np.random.Generator,
    *,
    time_axis: int,
    freq_axis: int,
    time_mask: int = 0,
    freq_mask: int = 0,
    num_time_masks: int = 1,
    num_freq_masks: int = 1,
    value: float = 0.0,
) -> torch.Tensor:
    """SpecAugment-style masking of a feature batch, vectorised over examples.

    Each example gets ``num_time_masks`` bands of width ``U{0..time_mask}`` frames and
    ``num_freq_masks`` bands of width ``U{0..freq_mask}`` bins, at uniform positions, filled with
    ``value``. Axes are those of ``features`` (batch first), e.g. ``time_axis=1, freq_axis=2`` for
    AST input (batch, time, mel) and ``time_axis=2, freq_axis=1`` for (batch, mel, frames).
    Returns a new tensor.
    """
    if features.ndim < 3:
        raise ValueError(f"features must be (batch, ..., ...), got shape {tuple(features.shape)}")
    time_axis, freq_axis = time_axis % features.ndim, freq_axis % features.ndim
    if 0 in (time_axis, freq_axis) or time_axis == freq_axis:
        raise ValueError(f"time_axis and freq_axis must be two distinct non-batch axes, got {time_axis}, {freq_axis}")
    mask = torch.zeros(features.shape, dtype=torch.bool, device=features.device)
    for axis, width, count in ((time_axis, time_mask, num_time_masks), (freq_axis, freq_mask, num_freq_masks)):
        if width <= 0 or count <= 0:
            continue
        band = _band_mask(features.shape[0], features.shape[axis], min(width, features.shape[axis]), count, rng, features.device)
        shape = [1] * features.ndim
        shape[0], shape[axis] = features.shape[0], features.shape[axis]
        mask |= band.reshape(shape)
    return features.masked_fill(mask, value)


def _band_mask(batch: int, size: int, max_width: int, count: int, rng, device) -> torch.Tensor:
    widths = rng.integers(0, max_width + 1, size=(batch, count))
    starts = (rng.random(size=(batch, count)) * (size - widths + 1)).astype(np.int64)
    position = torch.arange(size, device=device)
    starts = torch.as_tensor(starts, device=device)[..., None]
    ends = starts + torch.as_tensor(widths, device=device)[..., None]
    return ((position >= starts) & (position < ends)).any(dim=1)
