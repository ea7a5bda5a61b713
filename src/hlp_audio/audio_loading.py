"""Decode audio files and arrays into mono float32 waveforms at a given rate, without ffmpeg.

Files (wav, flac, ogg/vorbis, mp3 with libsndfile >= 1.1, ...) are decoded with ``soundfile``
and resampled with ``soxr``; the bytes of a plain 16-bit PCM WAV (what ``scripts/prepare_data.py``
writes) are read directly as an array, with the same values as soundfile's, several times faster. Every failure names the file or array at fault: missing,
unreadable, empty, too short, multi-channel where mono is required, or at the wrong rate when
resampling is off. Used by the HLP pipeline, ``hlp-audio tag`` and training (``hlp_audio.training``).

Imports only numpy at module level (``soundfile`` and ``soxr`` on first use).
"""

import io
import os
import struct
from typing import Optional, Tuple, Union

import numpy as np

try:  # optional until a file is decoded or a waveform resampled
    import soundfile
except ImportError:  # pragma: no cover - soundfile is a dependency of the hf extra
    soundfile = None
try:
    import soxr
except ImportError:  # pragma: no cover
    soxr = None

__all__ = [
    "AudioLoadingError",
    "MONO_POLICIES",
    "read_audio",
    "load_audio",
    "prepare_waveform",
    "to_mono",
    "resample_audio",
]

AudioSource = Union[str, "os.PathLike[str]", bytes, io.IOBase]

MONO_POLICIES = ("mean", "first", "error")


class AudioLoadingError(ValueError):
    """Audio that cannot be used: undecodable, empty, too short, multi-channel, or at the wrong rate."""


def _source_name(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes of audio>"
    return str(getattr(source, "name", f"<{type(source).__name__}>"))


def pcm16_wav(data: bytes) -> Optional[Tuple[np.ndarray, int]]:
    """``(waveform (frames, channels) float32, rate)`` of the bytes of a plain 16-bit PCM WAV, else None.

    No decoder is needed for those: the samples are read from the bytes and scaled by 1 / 32768, as
    libsndfile does (exactly: a power of two). Anything else (another format or sample type, a truncated
    data chunk) is left to soundfile.
    """
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    position, fmt = 12, None
    while position + 8 <= len(data):
        chunk, size = data[position : position + 4], struct.unpack_from("<I", data, position + 4)[0]
        body = position + 8
        if chunk == b"fmt " and size >= 16:
            tag, channels, rate = struct.unpack_from("<HHI", data, body)
            fmt = (tag, channels, rate, struct.unpack_from("<H", data, body + 14)[0])
        elif chunk == b"data":
            if fmt is None or fmt[0] != 1 or fmt[3] != 16 or fmt[1] < 1 or body + size > len(data):
                return None
            samples = np.frombuffer(data, dtype="<i2", count=size // 2 // fmt[1] * fmt[1], offset=body)
            waveform = samples.astype(np.float32).reshape(-1, fmt[1])
            waveform *= np.float32(1.0 / 32768.0)
            return waveform, int(fmt[2])
        position = body + size + (size & 1)
    return None


def read_audio(source: AudioSource) -> Tuple[np.ndarray, int]:
    """Decode a file (path, bytes or binary file object) as it is stored.

    Returns ``(waveform, sampling_rate)`` with ``waveform`` float32 of shape ``(frames, channels)``.
    """
    if soundfile is None:
        raise ImportError("decoding audio files needs the soundfile package: pip install soundfile")
    name = _source_name(source)
    if isinstance(source, (str, os.PathLike)):
        if not os.path.exists(source):
            raise FileNotFoundError(f"audio file not found: {name}")
        if os.path.isdir(source):
            raise AudioLoadingError(f"{name} is a folder, not an audio file")
        if os.path.getsize(source) == 0:
            raise AudioLoadingError(f"{name} is empty (0 bytes)")
    elif isinstance(source, (bytes, bytearray)):
        if not source:
            raise AudioLoadingError("the audio bytes are empty")
        plain = pcm16_wav(source)
        if plain is not None:
            if plain[0].shape[0] == 0:
                raise AudioLoadingError(f"{name} contains no audio samples")
            return plain
        source = io.BytesIO(source)
    try:
        waveform, sampling_rate = soundfile.read(source, dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, soundfile.SoundFileError) as err:  # LibsndfileError is a RuntimeError
        raise AudioLoadingError(f"cannot decode {name}: {err}") from None
    if waveform.shape[0] == 0:
        raise AudioLoadingError(f"{name} contains no audio samples")
    return waveform, int(sampling_rate)


def to_mono(waveform: np.ndarray, mono: str = "mean", *, name: str = "audio") -> np.ndarray:
    """``(frames, channels)`` or ``(frames,)`` to ``(frames,)``.

    ``mono``: ``"mean"`` averages the channels (as ffmpeg's ``-ac 1``), ``"first"`` keeps the first one,
    ``"error"`` refuses more than one channel.
    """
    if mono not in MONO_POLICIES:
        raise ValueError(f"mono must be one of {MONO_POLICIES}, got {mono!r}")
    if waveform.ndim == 1:
        return waveform
    if waveform.ndim != 2:
        raise AudioLoadingError(f"{name}: expected (frames, channels) audio, got shape {waveform.shape}")
    channels = waveform.shape[1]
    if channels == 1:
        return waveform[:, 0]
    if mono == "error":
        raise AudioLoadingError(
            f"{name} has {channels} channels but mono audio is required; pass mono='mean' to downmix "
            "or mono='first' to keep the first channel"
        )
    if mono == "first":
        return waveform[:, 0]
    return waveform.mean(axis=1, dtype=np.float32)


def resample_audio(waveform: np.ndarray, orig_sampling_rate: int, target_sampling_rate: int) -> np.ndarray:
    """Resample along the first axis with soxr (high quality); a no-op copy-free pass when the rates agree."""
    if orig_sampling_rate <= 0 or target_sampling_rate <= 0:
        raise ValueError(f"sampling rates must be positive, got {orig_sampling_rate} -> {target_sampling_rate}")
    if orig_sampling_rate == target_sampling_rate:
        return waveform
    if soxr is None:
        raise ImportError("resampling audio needs the soxr package: pip install soxr")
    return soxr.resample(waveform, orig_sampling_rate, target_sampling_rate, quality="HQ").astype(np.float32, copy=False)


def _finish(
    waveform: np.ndarray, rate: int, sampling_rate: int, *, resample: bool, min_samples: int, name: str
) -> np.ndarray:
    """Check the samples are finite, resample (or refuse another rate), check the length, return contiguous float32."""
    if not np.isfinite(waveform).all():
        bad = int(np.flatnonzero(~np.isfinite(waveform))[0])
        raise AudioLoadingError(f"{name} contains NaN or infinite samples (first at index {bad})")
    if rate != sampling_rate:
        if not resample:
            raise AudioLoadingError(
                f"{name} is sampled at {rate} Hz but {sampling_rate} Hz is required (resampling is off)"
            )
        waveform = resample_audio(waveform, rate, sampling_rate)
    if waveform.shape[0] < max(int(min_samples), 1):
        raise AudioLoadingError(
            f"{name} is too short: {waveform.shape[0]} samples at {sampling_rate} Hz "
            f"({1000.0 * waveform.shape[0] / sampling_rate:.1f} ms), at least {max(int(min_samples), 1)} are needed"
        )
    return np.ascontiguousarray(waveform, dtype=np.float32)


def load_audio(
    source: AudioSource,
    sampling_rate: int,
    *,
    mono: str = "mean",
    resample: bool = True,
    min_samples: int = 1,
) -> np.ndarray:
    """Decode ``source`` to a mono float32 waveform at ``sampling_rate``.

    Args:
        source: a path, the bytes of a file, or a binary file object.
        sampling_rate: the rate wanted (the feature extractor's).
        mono: channel policy for multi-channel files, see :func:`to_mono` (default: average the channels).
        resample: resample with soxr when the file's rate differs; with ``False`` a different rate is an error.
        min_samples: fewer samples (after resampling) is an error, e.g. the feature extractor's window length.

    Raises:
        FileNotFoundError: the path does not exist.
        AudioLoadingError: undecodable, empty, too short, NaN or infinite samples, multi-channel with
            ``mono="error"``, or at the wrong rate with ``resample=False``; the message names the file.
    """
    name = _source_name(source)
    waveform, rate = read_audio(source)
    waveform = to_mono(waveform, mono, name=name)
    return _finish(waveform, rate, int(sampling_rate), resample=resample, min_samples=min_samples, name=name)


def prepare_waveform(
    array,
    orig_sampling_rate: int,
    sampling_rate: int,
    *,
    resample: bool = True,
    min_samples: int = 1,
    name: str = "the audio array",
) -> np.ndarray:
    """Check an in-memory mono waveform and bring it to ``sampling_rate``.

    ``array`` must be 1-D (a 2-D array is refused: a batch or channels would be ambiguous; pass a list of
    1-D arrays for a batch and downmix channels with ``array.mean(axis=...)``), floating point and finite.
    """
    array = np.asarray(array)
    if array.ndim != 1:
        raise AudioLoadingError(
            f"{name} has shape {array.shape}; a mono 1-D waveform is required (for a batch pass a list of 1-D "
            "arrays; for multi-channel audio average the channels first)"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise AudioLoadingError(
            f"{name} has dtype {array.dtype}; expected float samples in [-1, 1] (divide 16-bit PCM by 32768)"
        )
    if array.size == 0:
        raise AudioLoadingError(f"{name} is empty")
    array = array.astype(np.float32, copy=False)
    return _finish(
        array, int(orig_sampling_rate), int(sampling_rate), resample=resample, min_samples=min_samples, name=name
    )
