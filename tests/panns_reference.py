"""Independent references for the PANNs-family tests (CNN6, audio ConvNeXt), written from the original code's
description and sharing nothing with hlp_audio:

- the log-mel in dB computed by transformers' ``audio_utils`` (float64, Slaney mel scale and norm);
- torchlibrosa's front-end tensors built with numpy (windowed DFT matrix, transformers' Slaney filters), as they
  appear in the original checkpoints;
- the original forward's front end and ``bn0`` in plain torch ops on an original-layout state dict;
- random tensors for an original-layout state dict (batch-norm statistics, LayerNorms and biases all random, so
  that a swapped or transposed tensor shows).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

RATE, N_FFT, HOP, F_MIN, F_MAX = 32000, 1024, 320, 50.0, 14000.0
STFT_REAL = "spectrogram_extractor.stft.conv_real.weight"
STFT_IMAG = "spectrogram_extractor.stft.conv_imag.weight"
MEL_MATRIX = "logmel_extractor.melW"


def slaney_filters(num_mel_bins: int, f_max: float = F_MAX) -> np.ndarray:
    """(n_fft // 2 + 1, num_mel_bins), as librosa.filters.mel(...).T."""
    return mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=num_mel_bins, min_frequency=F_MIN, max_frequency=f_max,
        sampling_rate=RATE, norm="slaney", mel_scale="slaney",
    )


def reference_log_mel(audio: np.ndarray, num_mel_bins: int) -> np.ndarray:
    """(frames, num_mel_bins) log-mel in dB, float64, by transformers.audio_utils.spectrogram."""
    return spectrogram(
        np.asarray(audio, dtype=np.float64), window_function(N_FFT, "hann", periodic=True), frame_length=N_FFT,
        hop_length=HOP, power=2.0, center=True, pad_mode="reflect", mel_filters=slaney_filters(num_mel_bins),
        mel_floor=1e-10, log_mel="dB", reference=1.0, min_value=1e-10, db_range=None, dtype=np.float64,
    ).T


def torchlibrosa_tensors(num_mel_bins: int, f_max: float = F_MAX) -> dict:
    """The frozen front-end tensors of a PANNs-family checkpoint: windowed DFT rows as conv1d weights
    (n_fft // 2 + 1, 1, n_fft) and the mel matrix (n_fft // 2 + 1, mel bins), float32."""
    window = window_function(N_FFT, "hann", periodic=True)
    dft = np.exp(-2j * np.pi * np.outer(np.arange(N_FFT // 2 + 1), np.arange(N_FFT)) / N_FFT) * window[None, :]
    return {
        STFT_REAL: torch.tensor(dft.real[:, None, :], dtype=torch.float32),
        STFT_IMAG: torch.tensor(dft.imag[:, None, :], dtype=torch.float32),
        MEL_MATRIX: torch.tensor(slaney_filters(num_mel_bins, f_max), dtype=torch.float32),
    }


def original_front_end(state: dict, waveforms: torch.Tensor) -> torch.Tensor:
    """torchlibrosa's Spectrogram + LogmelFilterBank + PANNs' bn0 on (batch, samples): (batch, 1, frames, mel), float64."""
    state = {key: value.double() for key, value in state.items()}
    padded = F.pad(waveforms.double()[:, None, :], (N_FFT // 2, N_FFT // 2), mode="reflect")
    real = F.conv1d(padded, state[STFT_REAL], stride=HOP)
    imag = F.conv1d(padded, state[STFT_IMAG], stride=HOP)
    power = (real ** 2 + imag ** 2).transpose(1, 2)[:, None]  # (batch, 1, frames, bins)
    log_mel = 10.0 * torch.log10(torch.clamp(power @ state[MEL_MATRIX], min=1e-10))
    normalised = F.batch_norm(
        log_mel.transpose(1, 3), state["bn0.running_mean"], state["bn0.running_var"], state["bn0.weight"],
        state["bn0.bias"], training=False, eps=1e-5,
    )
    return normalised.transpose(1, 3)


def random_tensor(shape, kind: str, generator: torch.Generator) -> torch.Tensor:
    """A random tensor for an original state dict: ``"weight"`` (fan-in scaled), ``"scale"`` (around 1),
    ``"shift"`` (around 0), ``"variance"`` (positive)."""
    if kind == "weight":
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        return torch.randn(shape, generator=generator) * (1.0 / fan_in) ** 0.5
    if kind == "scale":
        return 1.0 + 0.3 * torch.randn(shape, generator=generator)
    if kind == "shift":
        return 0.2 * torch.randn(shape, generator=generator)
    if kind == "variance":
        return 0.5 + torch.rand(shape, generator=generator)
    raise ValueError(kind)


def batch_norm_tensors(prefix: str, channels: int, generator: torch.Generator, *, mean=0.0, variance=1.0) -> dict:
    """A BatchNorm's five tensors with random affine parameters and statistics (mean/variance scaled as given)."""
    return {
        f"{prefix}.weight": random_tensor((channels,), "scale", generator),
        f"{prefix}.bias": random_tensor((channels,), "shift", generator),
        f"{prefix}.running_mean": mean + random_tensor((channels,), "shift", generator) * max(1.0, abs(mean) / 4),
        f"{prefix}.running_var": variance * random_tensor((channels,), "variance", generator),
        f"{prefix}.num_batches_tracked": torch.tensor(1000, dtype=torch.int64),
    }


def example_clips(seconds: float, count: int = 2, seed: int = 0) -> torch.Tensor:
    """(count, samples) float32 clips: noise plus a few tones at different levels."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * RATE)) / RATE
    clips = []
    for _ in range(count):
        clip = 0.05 * rng.standard_normal(time.size)
        for _ in range(3):
            clip += rng.uniform(0.05, 0.4) * np.sin(2 * np.pi * rng.uniform(100, 8000) * time)
        clips.append(clip)
    return torch.tensor(np.stack(clips), dtype=torch.float32)

