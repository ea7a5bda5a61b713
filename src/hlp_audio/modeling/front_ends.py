"""Batched front ends: waveforms ``(batch, samples)`` to the features a backbone takes, on any device.

- :class:`MelFrontEnd`: the 32 kHz log-mel of EfficientAT and PaSST (``HLPAudioFeatureExtractor``,
  ``front_end="efficientat"``);
- :class:`PANNsLogMelFrontEnd`: the 32 kHz log-mel in decibels of PANNs (CNN6) and the audio ConvNeXt
  (``HLPAudioFeatureExtractor``, ``front_end="panns"``), torchlibrosa's computation;
- :class:`KaldiFbankFrontEnd`: AST's Kaldi filter banks, the computation of ``ASTFeatureExtractor``,
  vectorised over the batch and the frames;
- :func:`kaldi_mel_filter_bank`: Kaldi's triangular mel filters (EfficientAT and AST);
- :func:`slaney_mel_filter_bank`: librosa's default (Slaney) mel filters (PANNs).

Each is an ``nn.Module``: move it to the GPU and it computes the features of a whole batch there
(one FFT and one matmul). Always float32 (autocast is disabled inside). Window and filter matrices
are non-persistent buffers rebuilt from the constructor arguments.

This file imports only torch and math (it travels to the Hub as remote code).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MelFrontEnd", "PANNsLogMelFrontEnd", "KaldiFbankFrontEnd", "kaldi_mel_filter_bank", "slaney_mel_filter_bank"]


def _check_filter_bank_arguments(num_mel_bins: int, n_fft: int, sampling_rate: int, f_min: float, f_max: float) -> None:
    if num_mel_bins < 1:
        raise ValueError(f"num_mel_bins must be positive, got {num_mel_bins}")
    if n_fft < 2 or n_fft % 2:
        raise ValueError(f"n_fft must be a positive even number, got {n_fft}")
    nyquist = 0.5 * sampling_rate
    if not 0.0 <= f_min < f_max <= nyquist:
        raise ValueError(f"need 0 <= f_min < f_max <= nyquist, got f_min={f_min}, f_max={f_max}, nyquist={nyquist}")


def _triangular_filters(points: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """``(len(edges) - 2, len(points))``: filter m rises linearly from ``edges[m]`` to a peak of 1 at
    ``edges[m + 1]`` and falls to ``edges[m + 2]``, evaluated at ``points`` (on the scale of ``edges``)."""
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (points - left) / (center - left)
    falling = (right - points) / (right - center)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


def _kaldi_mel(frequency: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(frequency / 700.0)


def kaldi_mel_filter_bank(
    num_mel_bins: int,
    n_fft: int,
    sampling_rate: int,
    f_min: float = 0.0,
    f_max: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Kaldi's triangular mel filters, ``(num_mel_bins, n_fft // 2 + 1)``.

    Same definition as Kaldi's ``MelBanks`` (and ``torchaudio.compliance.kaldi.get_mel_banks``
    without VTLN warping): ``num_mel_bins + 2`` edges equally spaced on the mel scale
    ``1127 ln(1 + f / 700)`` between ``f_min`` and ``f_max``; filter m rises linearly *in mel* from
    edge m to edge m+1 and falls to edge m+2; peak 1, no area normalisation. Kaldi weighs only the
    ``n_fft / 2`` bins below Nyquist; the Nyquist bin gets a zero column (as in EfficientAT).
    ``f_max <= 0`` means ``nyquist + f_max`` (Kaldi's convention). Computed in float64.
    """
    if f_max <= 0.0:
        f_max = f_max + 0.5 * sampling_rate
    _check_filter_bank_arguments(num_mel_bins, n_fft, sampling_rate, f_min, f_max)
    fft_bin_mel = _kaldi_mel(torch.arange(n_fft // 2, dtype=torch.float64) * (sampling_rate / n_fft))
    mel_min = math.log1p(f_min / 700.0) * 1127.0
    mel_max = math.log1p(f_max / 700.0) * 1127.0
    step = (mel_max - mel_min) / (num_mel_bins + 1)
    edges = mel_min + step * torch.arange(num_mel_bins + 2, dtype=torch.float64)
    return torch.nn.functional.pad(_triangular_filters(fft_bin_mel, edges), (0, 1)).to(dtype)


# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz (200/3 Hz per mel), logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_LOG_START_HZ = 1000.0
_SLANEY_LOG_START_MEL = _SLANEY_LOG_START_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


def _slaney_mel(frequency: torch.Tensor) -> torch.Tensor:
    logarithmic = _SLANEY_LOG_START_MEL + torch.log(frequency.clamp(min=_SLANEY_LOG_START_HZ) / _SLANEY_LOG_START_HZ) / _SLANEY_LOG_STEP
    return torch.where(frequency >= _SLANEY_LOG_START_HZ, logarithmic, frequency / _SLANEY_HZ_PER_MEL)


def _slaney_hz(mel: torch.Tensor) -> torch.Tensor:
    logarithmic = _SLANEY_LOG_START_HZ * torch.exp(_SLANEY_LOG_STEP * (mel - _SLANEY_LOG_START_MEL))
    return torch.where(mel >= _SLANEY_LOG_START_MEL, logarithmic, mel * _SLANEY_HZ_PER_MEL)


def slaney_mel_filter_bank(
    num_mel_bins: int,
    n_fft: int,
    sampling_rate: int,
    f_min: float,
    f_max: float,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """librosa's default mel filters (``librosa.filters.mel``, ``htk=False``, ``norm="slaney"``),
    ``(num_mel_bins, n_fft // 2 + 1)``: what torchlibrosa's ``LogmelFilterBank`` (PANNs) uses.

    ``num_mel_bins + 2`` edges equally spaced on Slaney's mel scale between ``f_min`` and ``f_max``;
    filter m is a triangle *in Hz* from edge m to edge m+2 with its peak at edge m+1, evaluated at the
    FFT bin frequencies (Nyquist bin included), then scaled by ``2 / (edge[m+2] - edge[m])`` so that
    every filter has the same area. Computed in float64.
    """
    _check_filter_bank_arguments(num_mel_bins, n_fft, sampling_rate, f_min, f_max)
    edges_mel = torch.linspace(
        float(_slaney_mel(torch.tensor(float(f_min), dtype=torch.float64))),
        float(_slaney_mel(torch.tensor(float(f_max), dtype=torch.float64))),
        num_mel_bins + 2,
        dtype=torch.float64,
    )
    edges = _slaney_hz(edges_mel)
    bin_frequencies = torch.linspace(0.0, sampling_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    filters = _triangular_filters(bin_frequencies, edges)
    return (filters * (2.0 / (edges[2:, None] - edges[:-2, None]))).to(dtype)


def _check_frame_arguments(n_fft: int, win_length: int, hop_length: int) -> None:
    if not 0 < win_length <= n_fft:
        raise ValueError(f"win_length must be in (0, n_fft={n_fft}], got {win_length}")
    if hop_length < 1:
        raise ValueError(f"hop_length must be positive, got {hop_length}")


def _as_waveform_batch(waveforms: torch.Tensor, min_samples: int) -> torch.Tensor:
    """``(batch, samples)`` from ``(batch, samples)`` or ``(samples,)``; too short or other ranks are errors."""
    if waveforms.dim() == 1:
        waveforms = waveforms.unsqueeze(0)
    if waveforms.dim() != 2:
        raise ValueError(f"waveforms must be (batch, samples) or (samples,), got shape {tuple(waveforms.shape)}")
    if waveforms.shape[-1] < min_samples:
        raise ValueError(
            f"waveforms have {waveforms.shape[-1]} samples; the front end needs at least {min_samples} "
            f"(pad short clips, as HLPAudioFeatureExtractor does)"
        )
    return waveforms


def _power_spectrogram(waveforms: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor) -> torch.Tensor:
    """``|STFT|^2``, ``(batch, n_fft // 2 + 1, frames)``: centred frames (reflect padding), ``window`` centred in
    the ``n_fft`` frame, float32."""
    spectrum = torch.stft(
        waveforms.float(),
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=window.shape[0],
        window=window.float(),  # float32 even if the module was cast (e.g. model.to(bfloat16))
        center=True,
        pad_mode="reflect",
        normalized=False,
        return_complex=True,
    )
    return spectrum.real.square() + spectrum.imag.square()


class MelFrontEnd(nn.Module):
    """Waveforms ``(batch, samples)`` or ``(samples,)`` -> log-mel ``(batch, mel_bins, frames)``.

    Batched and device-agnostic: ``MelFrontEnd().to("cuda")(waveforms)`` runs one STFT and one
    matmul for the whole batch. Always computed in float32 (autocast is disabled inside, as in
    EfficientAT), whatever the input dtype. The window and mel matrix are non-persistent buffers,
    rebuilt from the constructor arguments (nothing to load).
    """

    def __init__(
        self,
        sampling_rate: int = 32000,
        n_fft: int = 1024,
        win_length: int = 800,
        hop_length: int = 320,
        num_mel_bins: int = 128,
        f_min: float = 0.0,
        f_max: float = 15000.0,
        preemphasis_coefficient: float = 0.97,
        log_offset: float = 1e-5,
        normalization_shift: float = 4.5,
        normalization_scale: float = 5.0,
    ):
        super().__init__()
        _check_frame_arguments(n_fft, win_length, hop_length)
        self.sampling_rate = int(sampling_rate)
        self.n_fft = int(n_fft)
        self.win_length = int(win_length)
        self.hop_length = int(hop_length)
        self.num_mel_bins = int(num_mel_bins)
        self.preemphasis_coefficient = float(preemphasis_coefficient)
        self.log_offset = float(log_offset)
        self.normalization_shift = float(normalization_shift)
        self.normalization_scale = float(normalization_scale)
        self.register_buffer("window", torch.hann_window(self.win_length, periodic=False), persistent=False)
        self.register_buffer(
            "mel_filters",
            kaldi_mel_filter_bank(self.num_mel_bins, self.n_fft, self.sampling_rate, f_min, f_max),
            persistent=False,
        )

    @property
    def min_samples(self) -> int:
        """Shortest waveform accepted: the reflect-padded centred STFT needs more than ``n_fft / 2``
        samples after pre-emphasis. (The extractor pads short clips further, to ``n_fft``.)"""
        return self.n_fft // 2 + 1 + (1 if self.preemphasis_coefficient else 0)

    def num_frames(self, num_samples: int) -> int:
        """Number of frames produced for a waveform of ``num_samples`` samples."""
        effective = num_samples - 1 if self.preemphasis_coefficient else num_samples
        return 1 + effective // self.hop_length

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        waveforms = _as_waveform_batch(waveforms, self.min_samples)
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            waveforms = waveforms.float()
            if self.preemphasis_coefficient:
                waveforms = waveforms[:, 1:] - self.preemphasis_coefficient * waveforms[:, :-1]
            power = _power_spectrogram(waveforms, self.n_fft, self.hop_length, self.window)
            mel = torch.matmul(self.mel_filters.float(), power)
            return (torch.log(mel + self.log_offset) + self.normalization_shift) / self.normalization_scale


class PANNsLogMelFrontEnd(nn.Module):
    """Waveforms ``(batch, samples)`` or ``(samples,)`` -> log-mel in decibels ``(batch, frames, mel_bins)``.

    The front end of PANNs (Kong et al., 2020: torchlibrosa's ``Spectrogram`` + ``LogmelFilterBank``)
    and of the audio ConvNeXt (Pellegrini et al., 2023): STFT with a periodic Hann window of
    ``win_length`` samples centred in ``n_fft``, hop ``hop_length``, ``center=True`` with reflect
    padding; power spectrum; :func:`slaney_mel_filter_bank` from ``f_min`` to ``f_max``;
    ``10 log10(max(mel, amin))`` (reference power 1, no top-dB cut). A clip of N samples gives
    ``1 + N // hop_length`` frames (1,001 for 10 s at 32 kHz). The models normalise these features
    themselves (their first layer is a batch norm over the mel bins).

    Batched, device-agnostic and float32 (autocast off), like :class:`MelFrontEnd`; the window and the
    mel matrix are non-persistent buffers rebuilt from the constructor arguments.
    """

    def __init__(
        self,
        sampling_rate: int = 32000,
        n_fft: int = 1024,
        win_length: int = 1024,
        hop_length: int = 320,
        num_mel_bins: int = 64,
        f_min: float = 50.0,
        f_max: float = 14000.0,
        amin: float = 1e-10,
    ):
        super().__init__()
        _check_frame_arguments(n_fft, win_length, hop_length)
        if not amin > 0:
            raise ValueError(f"amin must be positive (the floor of the mel power before the log), got {amin}")
        self.sampling_rate = int(sampling_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.num_mel_bins = int(num_mel_bins)
        self.amin = float(amin)
        self.register_buffer("window", torch.hann_window(int(win_length), periodic=True), persistent=False)
        filters = slaney_mel_filter_bank(self.num_mel_bins, self.n_fft, self.sampling_rate, f_min, f_max)
        self.register_buffer("mel_filters", filters, persistent=False)  # (mel_bins, n_fft // 2 + 1)

    @property
    def min_samples(self) -> int:
        """Shortest waveform accepted: the reflect-padded centred STFT needs more than ``n_fft / 2`` samples."""
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        """Number of frames produced for a waveform of ``num_samples`` samples."""
        return 1 + num_samples // self.hop_length

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        waveforms = _as_waveform_batch(waveforms, self.min_samples)
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            power = _power_spectrogram(waveforms, self.n_fft, self.hop_length, self.window)
            mel = torch.matmul(power.transpose(1, 2), self.mel_filters.float().T)  # (batch, frames, mel_bins)
            return 10.0 * torch.log10(torch.clamp(mel, min=self.amin))


class KaldiFbankFrontEnd(torch.nn.Module):
    """AST's input features for a batch of waveforms, on any device: ``(batch, max_length, mel_bins)``.

    The same computation as ``ASTFeatureExtractor`` (Kaldi fbank: 25 ms frames every 10 ms, no
    centring, per-frame DC removal, pre-emphasis 0.97, symmetric Hann window, 512-point power
    spectrum, 128 Kaldi mel filters from 20 Hz to Nyquist, ``log(max(mel, eps))``, zero-padded or
    truncated to ``max_length`` frames, then ``(x - mean) / (2 std)``), vectorised over the batch
    and the frames: one ``rfft`` and one matmul per batch instead of a Python loop per frame.
    Always computed in float32 (autocast off). Build it with :meth:`from_feature_extractor`.
    """

    def __init__(
        self,
        sampling_rate: int = 16000,
        num_mel_bins: int = 128,
        max_length: int = 1024,
        do_normalize: bool = True,
        mean: float = -4.2677393,
        std: float = 4.5689974,
        frame_length: int = 400,
        hop_length: int = 160,
        n_fft: int = 512,
        preemphasis: float = 0.97,
        low_frequency: float = 20.0,
        mel_floor: float = 1.192092955078125e-07,
    ):
        super().__init__()
        self.sampling_rate, self.max_length = int(sampling_rate), int(max_length)
        self.frame_length, self.hop_length, self.n_fft = int(frame_length), int(hop_length), int(n_fft)
        self.do_normalize, self.mean, self.std = do_normalize, float(mean), float(std)
        self.preemphasis, self.mel_floor = float(preemphasis), float(mel_floor)
        self.register_buffer("window", torch.hann_window(self.frame_length, periodic=False, dtype=torch.float64).float(), persistent=False)
        filters = kaldi_mel_filter_bank(num_mel_bins, self.n_fft, self.sampling_rate, low_frequency, 0.0)
        self.register_buffer("mel_filters", filters.T.contiguous(), persistent=False)  # (n_fft // 2 + 1, mel)

    @classmethod
    def from_feature_extractor(cls, extractor) -> "KaldiFbankFrontEnd":
        return cls(
            sampling_rate=extractor.sampling_rate,
            num_mel_bins=extractor.num_mel_bins,
            max_length=extractor.max_length,
            do_normalize=extractor.do_normalize,
            mean=extractor.mean,
            std=extractor.std,
        )

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        if waveforms.dim() == 1:
            waveforms = waveforms.unsqueeze(0)
        if waveforms.dim() != 2 or waveforms.shape[-1] < self.frame_length:
            raise ValueError(
                f"waveforms must be (batch, samples) with at least {self.frame_length} samples, got shape {tuple(waveforms.shape)}"
            )
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            frames = waveforms.float().unfold(-1, self.frame_length, self.hop_length)  # (batch, frames, frame_length)
            frames = frames - frames.mean(dim=-1, keepdim=True)
            frames = torch.cat(
                [frames[..., :1] * (1.0 - self.preemphasis), frames[..., 1:] - self.preemphasis * frames[..., :-1]], dim=-1
            )
            spectrum = torch.fft.rfft(frames * self.window, n=self.n_fft)
            power = spectrum.real.square() + spectrum.imag.square()
            fbank = torch.log(torch.clamp(power @ self.mel_filters, min=self.mel_floor))
            missing = self.max_length - fbank.shape[1]
            fbank = torch.nn.functional.pad(fbank, (0, 0, 0, missing)) if missing > 0 else fbank[:, : self.max_length]
            if self.do_normalize:
                fbank = (fbank - self.mean) / (2.0 * self.std)
            return fbank
