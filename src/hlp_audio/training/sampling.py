"""Epoch-seeded samplers and per-step random generators.

Every source of randomness is keyed by explicit integers (seed, epoch, step, clip index, process
index) instead of a global RNG stream, so that a run interrupted at any step and resumed gives the
same batches, crops, mixup coefficients and masks as an uninterrupted run, whatever the number of
DataLoader workers; and every process of a distributed run draws the same order (accelerate then
shards the batches).
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import torch

from ..labels import list_offsets_and_values

__all__ = [
    "class_balanced_weights",
    "ShuffleSampler",
    "ClassBalancedSampler",
    "mix_seed",
    "step_rng",
    "seed_everything_for_step",
]


def class_balanced_weights(labels: pa.ListArray, num_classes: int, offset: float = 100.0) -> np.ndarray:
    """Sampling weight of each clip: sum over its labels of ``1000 / (offset + clips of that class)``.

    The PaSST / EfficientAT AudioSet recipe: rare classes are drawn more often, and ``offset``
    keeps the rarest ones from dominating. Clips without labels get weight 0.
    """
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    offsets, values = list_offsets_and_values(labels)
    values = values.to_numpy(zero_copy_only=False).astype(np.int64)
    counts = np.bincount(values, minlength=num_classes).astype(np.float64)
    per_class = 1000.0 / (offset + counts)
    rows = np.repeat(np.arange(len(labels)), np.diff(offsets))
    return np.bincount(rows, weights=per_class[values], minlength=len(labels))


class ShuffleSampler(torch.utils.data.Sampler):
    """A permutation of ``range(size)`` drawn from ``(seed, epoch)``; ``shuffle=False`` keeps the order.

    Stateless: the order depends only on the seed and the epoch set with :meth:`set_epoch`, so
    every process of a distributed run draws the same order (accelerate shards its batches) and a
    resumed run draws the same order as an uninterrupted one.
    """

    def __init__(self, size: int, *, shuffle: bool = True, seed: int = 0):
        self.size = int(size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.size))
        return iter(torch.randperm(self.size, generator=self._generator()).tolist())


class ClassBalancedSampler(ShuffleSampler):
    """Draw ``num_samples`` clips per epoch with probability proportional to ``weights``.

    Build the weights with :func:`class_balanced_weights`. ``replacement=False`` (EfficientAT's
    choice) never repeats a clip within an epoch; it needs ``num_samples`` <= the clips of nonzero
    weight.
    """

    def __init__(self, weights, num_samples: Optional[int] = None, *, replacement: bool = False, seed: int = 0):
        weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if weights.ndim != 1 or weights.numel() == 0:
            raise ValueError(f"weights must be a non-empty 1-D array, got shape {tuple(weights.shape)}")
        if not torch.isfinite(weights).all() or (weights < 0).any():
            raise ValueError("weights must be finite and >= 0")
        positive = int((weights > 0).sum())
        if positive == 0:
            raise ValueError(f"every one of the {weights.numel()} sampling weights is 0 (no clip has a label): nothing to draw")
        num_samples = positive if num_samples is None else int(num_samples)
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        if not replacement and num_samples > positive:
            raise ValueError(
                f"cannot draw {num_samples} clips without replacement: only {positive} have a nonzero weight"
            )
        super().__init__(num_samples, shuffle=True, seed=seed)
        self.weights = weights
        self.replacement = replacement

    def __iter__(self) -> Iterator[int]:
        drawn = torch.multinomial(self.weights, self.size, self.replacement, generator=self._generator())
        return iter(drawn.tolist())


def mix_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> 1)


def step_rng(seed: int, step: int, process_index: int = 0) -> np.random.Generator:
    """The augmentation RNG of one training step of one process (mixup, masks)."""
    return np.random.default_rng([int(seed), int(step), int(process_index), 0x6D6978])


def seed_everything_for_step(seed: int, step: int, process_index: int = 0) -> None:
    """Reseed torch's global RNGs (dropout, drop path, patchout) from the step number.

    A resumed run then draws exactly what an uninterrupted one draws at the same step.
    """
    torch.manual_seed(mix_seed(seed, step, process_index, 0x746F7263))
