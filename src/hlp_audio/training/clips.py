"""Clip data sets: audio decoded in DataLoader workers, cropped or padded to a fixed length, with targets."""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
import torch

from ..labels import list_offsets_and_values
from .manifests import Manifest

__all__ = ["crop_or_pad", "AudioClipDataset"]


def crop_or_pad(waveform: np.ndarray, length: int, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Fit a mono waveform to ``length`` samples.

    Longer clips are cropped, shorter ones zero-padded. With ``rng`` the crop start (or the position
    of a short clip inside the padded window) is drawn uniformly; without it the clip starts at 0,
    as in evaluation.
    """
    size = waveform.shape[-1]
    if size == length:
        return waveform
    offset = 0 if rng is None else int(rng.integers(0, abs(size - length) + 1))
    if size > length:
        return waveform[..., offset : offset + length]
    out = np.zeros(waveform.shape[:-1] + (length,), dtype=waveform.dtype)
    out[..., offset : offset + size] = waveform
    return out


class AudioClipDataset(torch.utils.data.Dataset):
    """Clips of a :class:`Manifest`, decoded on access (in DataLoader workers).

    Each item is ``{"waveform": float32 (clip_samples,), "labels": float32 (C,), "index": int}``.
    In training (``random_crop=True``) the crop is drawn from ``(seed, epoch, index)``: the same
    item in the same epoch gets the same crop in every run, whatever the worker that loads it.
    Call :meth:`set_epoch` before iterating each epoch.

    ``decode(path, sampling_rate) -> np.ndarray`` decodes one file to mono float32 at the rate;
    it defaults to :func:`hlp_audio.audio_loading.load_audio`.
    """

    def __init__(
        self,
        manifest: Manifest,
        *,
        sampling_rate: int,
        clip_seconds: float,
        random_crop: bool = False,
        seed: int = 0,
        decode: Optional[Callable[[str, int], np.ndarray]] = None,
    ):
        if sampling_rate <= 0 or clip_seconds <= 0:
            raise ValueError(f"sampling_rate and clip_seconds must be positive, got {sampling_rate}, {clip_seconds}")
        self.audio = manifest.audio
        self.source = manifest.source
        self.num_classes = manifest.num_classes
        self._label_offsets, self._label_values = list_offsets_and_values(manifest.labels)
        self.sampling_rate = int(sampling_rate)
        self.clip_samples = int(round(clip_seconds * sampling_rate))
        self.random_crop = random_crop
        self.seed = int(seed)
        self.epoch = 0
        self.decode = decode

    def __len__(self) -> int:
        return len(self.audio)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def target(self, index: int) -> np.ndarray:
        out = np.zeros(self.num_classes, dtype=np.float32)
        out[self._label_values[self._label_offsets[index] : self._label_offsets[index + 1]]] = 1.0
        return out

    def __getitem__(self, index: int) -> Dict[str, object]:
        index = int(index)
        path = self.audio[index].as_py()
        decode = self.decode or _default_decode()
        try:
            waveform = decode(path, self.sampling_rate)
        except Exception as err:  # name the manifest row too (the decoder names the file), same type
            try:
                located = type(err)(f"{self.source}, row {index}: {err}")
            except Exception:  # an exception type that takes other arguments: leave it as it is
                raise err from None
            raise located from err
        waveform = np.asarray(waveform, dtype=np.float32)
        if waveform.ndim != 1:
            raise ValueError(f"{self.source}, row {index}: decoder returned shape {waveform.shape} for {path}, expected mono")
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.random_crop else None
        waveform = crop_or_pad(waveform, self.clip_samples, rng)
        return {"waveform": torch.from_numpy(np.ascontiguousarray(waveform)), "labels": torch.from_numpy(self.target(index)), "index": index}


def _default_decode():
    from ..audio_loading import load_audio

    return load_audio
