"""Clip data sets: audio decoded in DataLoader workers, cropped or padded to a fixed length, with targets.

Each item is ``{"waveform", "labels", "index", "id"}``; with ``skip_bad_audio`` a clip that cannot be
decoded becomes ``{"skipped": (clip, reason)}`` instead of an error, and :func:`collate_clips` moves it
to the batch's ``skipped`` list, so that every skipped clip reaches the training loop to be counted.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np
import pyarrow as pa
import torch

from ..labels import list_offsets_and_values
from .manifests import Manifest

__all__ = ["crop_or_pad", "AudioClipDataset", "decode_clip", "clip_item", "collate_clips", "locate", "DECODE_ERRORS"]

#: What a bad clip raises when decoded: undecodable, empty or zero-length (AudioLoadingError is a
#: ValueError), missing (FileNotFoundError), unreadable (OSError).
DECODE_ERRORS = (ValueError, OSError)


def decode_clip(audio, sampling_rate: int, decode: Optional[Callable] = None) -> np.ndarray:
    """A mono float32 waveform at ``sampling_rate`` from a path or the bytes of an encoded file."""
    if audio is None:
        raise ValueError("no audio (null: neither bytes nor a path)")
    if decode is None:
        from ..audio_loading import load_audio as decode
    waveform = np.asarray(decode(audio, sampling_rate), dtype=np.float32)
    if waveform.ndim != 1:
        raise ValueError(f"the decoder returned shape {waveform.shape}, expected mono")
    return waveform


def clip_item(
    audio,
    target: np.ndarray,
    *,
    index: int,
    clip_id: str,
    where: str,
    sampling_rate: int,
    clip_samples: Optional[int],
    rng: Optional[np.random.Generator] = None,
    decode: Optional[Callable] = None,
    skip_bad_audio: bool = False,
) -> dict:
    """One training / evaluation item: the clip decoded, cropped or padded (at random with ``rng``), its targets.

    ``clip_samples=None`` keeps the whole clip (e.g. to rewrite a split at another rate).

    A clip that cannot be decoded raises its error with ``where`` (source, shard, row) in front, or with
    ``skip_bad_audio`` gives ``{"skipped": (where, reason)}``.
    """
    try:
        waveform = decode_clip(audio, sampling_rate, decode)
    except DECODE_ERRORS as err:
        if skip_bad_audio:
            return {"skipped": (where, str(err))}
        raise locate(err, where) from err
    if clip_samples is not None:
        waveform = crop_or_pad(waveform, clip_samples, rng)
    return {
        "waveform": torch.from_numpy(np.ascontiguousarray(waveform)),
        "labels": torch.from_numpy(target),
        "index": int(index),
        "id": clip_id,
    }


def collate_clips(items: List[dict]) -> dict:
    """A batch of clip items; skipped clips are left out and listed in ``batch["skipped"]``.

    The batch also carries each clip's ``id`` and, for streams, the ``stream_state`` of its last item.
    """
    clips = [item for item in items if "skipped" not in item]
    batch = {"skipped": [item["skipped"] for item in items if "skipped" in item], "ids": [item["id"] for item in clips]}
    if clips:  # default_collate stacks straight into shared memory in a worker: one copy, not two
        for key in ("waveform", "labels", "index"):
            batch[key] = torch.utils.data.default_collate([item[key] for item in clips])
    if items and "stream_state" in items[-1]:
        batch["stream_state"] = items[-1]["stream_state"]
    return batch


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

    ``decode(path_or_bytes, sampling_rate) -> np.ndarray`` decodes one file to mono float32 at the rate;
    it defaults to :func:`hlp_audio.audio_loading.load_audio`. With ``skip_bad_audio`` a clip that fails
    to decode gives a ``{"skipped": (clip, reason)}`` item (see :func:`collate_clips`) instead of an error.
    """

    def __init__(
        self,
        manifest: Manifest,
        *,
        sampling_rate: int,
        clip_seconds: Optional[float],
        random_crop: bool = False,
        seed: int = 0,
        decode: Optional[Callable[[str, int], np.ndarray]] = None,
        skip_bad_audio: bool = False,
    ):
        if sampling_rate <= 0 or (clip_seconds is not None and clip_seconds <= 0):
            raise ValueError(f"sampling_rate and clip_seconds must be positive, got {sampling_rate}, {clip_seconds}")
        self.audio = manifest.audio
        self.manifest = manifest
        self.source = manifest.source
        self.skip_bad_audio = skip_bad_audio
        self.num_classes = manifest.num_classes
        self._label_offsets, self._label_values = list_offsets_and_values(manifest.labels)
        self.sampling_rate = int(sampling_rate)
        self.clip_samples = None if clip_seconds is None else int(round(clip_seconds * sampling_rate))  # None: whole clips
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
        audio = self.audio[index]
        clip = self.manifest.ids[index].as_py() if self.manifest.ids is not None else None
        return clip_item(
            audio.as_py() if isinstance(audio, pa.Scalar) else audio,
            self.target(index),
            index=index,
            clip_id=clip if clip is not None else str(index),
            where=f"{self.source}, {self.manifest.clip_name(index)}",
            sampling_rate=self.sampling_rate,
            clip_samples=self.clip_samples,
            rng=np.random.default_rng([self.seed, self.epoch, index]) if self.random_crop else None,
            decode=self.decode,
            skip_bad_audio=self.skip_bad_audio,
        )


def locate(err: Exception, where: str) -> Exception:
    """``err`` with ``where`` (the source and row) in front of its message, same type when possible."""
    try:
        return type(err)(f"{where}: {err}")
    except Exception:  # an exception type that takes other arguments
        return ValueError(f"{where}: {type(err).__name__}: {err}")
