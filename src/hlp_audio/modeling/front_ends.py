"""Batched front ends: waveforms ``(batch, samples)`` to the features a backbone takes, on any device.

- :class:`MelFrontEnd`: the 32 kHz log-mel of EfficientAT and PaSST (``HLPAudioFeatureExtractor``);
- :class:`KaldiFbankFrontEnd`: AST's Kaldi filter banks, the computation of ``ASTFeatureExtractor``,
  vectorised over the batch and the frames;
- :func:`kaldi_mel_filter_bank`: Kaldi's triangular mel filters, shared by both.

Each is an ``nn.Module``: move it to the GPU and it computes the features of a whole batch there
(one FFT and one matmul). Always float32 (autocast is disabled inside). Window and filter matrices
are non-persistent buffers rebuilt from the constructor arguments.

This file imports only torch and math (it travels to the Hub as remote code).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MelFrontEnd", "KaldiFbankFrontEnd", "kaldi_mel_filter_bank"]


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
    if num_mel_bins < 1:
        raise ValueError(f"num_mel_bins must be positive, got {num_mel_bins}")
    if n_fft < 2 or n_fft % 2:
        raise ValueError(f"n_fft must be a positive even number, got {n_fft}")
    nyquist = 0.5 * sampling_rate
    if f_max <= 0.0:
        f_max = f_max + nyquist
    if not 0.0 <= f_min < f_max <= nyquist:
        raise ValueError(f"need 0 <= f_min < f_max <= nyquist, got f_min={f_min}, f_max={f_max}, nyquist={nyquist}")
    fft_bin_mel = _kaldi_mel(torch.arange(n_fft // 2, dtype=torch.float64) * (sampling_rate / n_fft))
    mel_min = math.log1p(f_min / 700.0) * 1127.0
    mel_max = math.log1p(f_max / 700.0) * 1127.0
    step = (mel_max - mel_min) / (num_mel_bins + 1)
    edges = mel_min + step * torch.arange(num_mel_bins + 2, dtype=torch.float64)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_bin_mel - left) / (center - left)
    falling = (right - fft_bin_mel) / (right - center)
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return torch.nn.functional.pad(filters, (0, 1)).to(dtype)


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
        if not 0 < win_length <= n_fft:
            raise ValueError(f"win_length must be in (0, n_fft={n_fft}], got {win_length}")
        if hop_length < 1:
            raise ValueError(f"hop_length must be positive, got {hop_length}")
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
        if waveforms.dim() == 1:
            waveforms = waveforms.unsqueeze(0)
        if waveforms.dim() != 2:
            raise ValueError(f"waveforms must be (batch, samples) or (samples,), got shape {tuple(waveforms.shape)}")
        if waveforms.shape[-1] < self.min_samples:
            raise ValueError(
                f"waveforms have {waveforms.shape[-1]} samples; the front end needs at least {self.min_samples} "
                f"(pad short clips, as HLPAudioFeatureExtractor does)"
            )
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            waveforms = waveforms.float()
            if self.preemphasis_coefficient:
                waveforms = waveforms[:, 1:] - self.preemphasis_coefficient * waveforms[:, :-1]
            spectrum = torch.stft(
                waveforms,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                win_length=self.win_length,
                window=self.window.float(),  # float32 even if the module was cast (e.g. model.to(bfloat16))
                center=True,
                pad_mode="reflect",
                normalized=False,
                return_complex=True,
            )
            power = spectrum.real.square() + spectrum.imag.square()  # (batch, n_fft // 2 + 1, frames)
            mel = torch.matmul(self.mel_filters.float(), power)
            return (torch.log(mel + self.log_offset) + self.normalization_shift) / self.normalization_scale


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
