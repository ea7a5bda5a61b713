"""``HLPAudioFeatureExtractor``: raw 32 kHz audio to the log-mel features of EfficientAT / PaSST or of PANNs / ConvNeXt.

The ``SequenceFeatureExtractor`` used by ``pipeline("audio-classification")`` and
``AutoFeatureExtractor``: it validates raw audio, pads or truncates it, and runs a batched front end
of :mod:`front_ends` (on CPU unless ``device`` is given); ``build_front_end()`` gives the same module
for computing features on the accelerator during training. ``front_end`` chooses it:

- ``"efficientat"`` (default), :class:`~front_ends.MelFrontEnd`: EfficientAT's ``AugmentMelSTFT`` in
  eval mode, as used by the released AudioSet checkpoints and by PaSST: pre-emphasis
  ``y[n] = x[n+1] - 0.97 x[n]`` (the output is one sample shorter), STFT with ``n_fft`` 1024, a
  symmetric (``periodic=False``) Hann window of 800 samples centred in the FFT frame, hop 320,
  ``center=True`` with reflect padding; power spectrum; 128 Kaldi-style triangular mel filters (mel =
  1127 ln(1 + f / 700), triangles in the mel domain over the first ``n_fft / 2`` bins, a zero column
  for the Nyquist bin, fmin 0, fmax 15 kHz); ``log(mel + 1e-5)``; ``(x + 4.5) / 5``. A clip of N
  samples gives ``1 + (N - 1) // 320`` frames (1,000 for 10 s at 32 kHz); features are
  ``(batch, mel_bins, frames)``.
- ``"panns"``, :class:`~front_ends.PANNsLogMelFrontEnd`: torchlibrosa's front end of PANNs (CNN6) and
  of the audio ConvNeXt: periodic Hann window of 1024 samples, hop 320, centred with reflect padding;
  power spectrum; 64 (CNN6) or 224 (ConvNeXt) Slaney mel filters (librosa's default) from 50 Hz to
  14 kHz; ``10 log10(max(mel, 1e-10))``. ``1 + N // 320`` frames (1,001 for 10 s); features are
  ``(batch, frames, mel_bins)``.

Each front end has its own parameters (the keyword arguments of its class, with its defaults); a
parameter of the other front end is an error naming it.

Input policy (see ``HLPAudioFeatureExtractor.__call__``): mono float audio at exactly the
extractor's sampling rate. A wrong sampling rate, multi-channel arrays, empty clips, integer
PCM and non-finite samples raise ``ValueError`` naming the clip; decoding, downmixing and
resampling of files belong to ``hlp_audio.audio_loading``. Clips shorter than ``n_fft`` samples
(32 ms) are zero-padded at the end to ``n_fft`` samples, the shortest input the centred STFT
accepts; silence gives finite features.

This file imports only numpy, torch, transformers and its siblings (it travels to the Hub as remote code).
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import logging

from .front_ends import MelFrontEnd, PANNsLogMelFrontEnd

logger = logging.get_logger(__name__)

__all__ = ["FRONT_ENDS", "HLPAudioFeatureExtractor", "front_end_parameters"]

#: ``front_end`` name -> batched front end class; its keyword arguments (but ``sampling_rate``) and their
#: defaults are the extractor's front-end parameters.
FRONT_ENDS = {"efficientat": MelFrontEnd, "panns": PANNsLogMelFrontEnd}


def front_end_parameters(front_end: str) -> Dict[str, Any]:
    """The parameters of a front end and their defaults (``sampling_rate`` excepted)."""
    if front_end not in FRONT_ENDS:
        raise ValueError(f"unknown front_end {front_end!r}; known front ends: {sorted(FRONT_ENDS)}")
    parameters = inspect.signature(FRONT_ENDS[front_end]).parameters
    return {name: parameter.default for name, parameter in parameters.items() if name != "sampling_rate"}

AudioInput = Union[np.ndarray, torch.Tensor, Sequence[float], Sequence[np.ndarray], Sequence[torch.Tensor]]


class HLPAudioFeatureExtractor(SequenceFeatureExtractor):
    r"""Log-mel features for the 32 kHz backbones of ``HLPAudioForAudioClassification`` (EfficientAT, PaSST,
    CNN6, ConvNeXt).

    Args:
        feature_size (`int`, defaults to 1): channels of the *raw* input (mono), as for other raw-audio extractors.
        sampling_rate (`int`, defaults to 32000): the only sampling rate accepted (no silent resampling).
        padding_value (`float`, defaults to 0.0): value used to pad waveforms.
        front_end (`str`, defaults to `"efficientat"`): ``"efficientat"`` (:class:`MelFrontEnd`, features
            ``(batch, mel_bins, frames)``) or ``"panns"`` (:class:`PANNsLogMelFrontEnd`, features
            ``(batch, frames, mel_bins)``).
        num_mel_bins, n_fft, win_length, hop_length, f_min, f_max: both front ends; ``None`` takes the front
            end's default (efficientat: 128, 1024, 800, 320, 0.0, 15000.0; panns: 64, 1024, 1024, 320, 50.0, 14000.0).
        preemphasis_coefficient (0.97), log_offset (1e-5), normalization_shift (4.5), normalization_scale (5.0):
            ``"efficientat"`` only.
        amin (1e-10): ``"panns"`` only, the floor of the mel power before the log.

    Example:

    ```python
    >>> import numpy as np
    >>> extractor = HLPAudioFeatureExtractor()
    >>> features = extractor(np.zeros(32000, dtype=np.float32), sampling_rate=32000, return_tensors="pt")
    >>> tuple(features["input_values"].shape)
    (1, 128, 100)
    >>> panns = HLPAudioFeatureExtractor(front_end="panns")
    >>> tuple(panns(np.zeros(32000, dtype=np.float32), sampling_rate=32000, return_tensors="pt")["input_values"].shape)
    (1, 101, 64)
    ```
    """

    model_input_names = ["input_values"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 32000,
        padding_value: float = 0.0,
        front_end: str = "efficientat",
        num_mel_bins: Optional[int] = None,
        n_fft: Optional[int] = None,
        win_length: Optional[int] = None,
        hop_length: Optional[int] = None,
        f_min: Optional[float] = None,
        f_max: Optional[float] = None,
        preemphasis_coefficient: Optional[float] = None,
        log_offset: Optional[float] = None,
        normalization_shift: Optional[float] = None,
        normalization_scale: Optional[float] = None,
        amin: Optional[float] = None,
        return_attention_mask: bool = False,
        **kwargs,
    ):
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        given = dict(
            num_mel_bins=num_mel_bins, n_fft=n_fft, win_length=win_length, hop_length=hop_length, f_min=f_min,
            f_max=f_max, preemphasis_coefficient=preemphasis_coefficient, log_offset=log_offset,
            normalization_shift=normalization_shift, normalization_scale=normalization_scale, amin=amin,
        )
        parameters = front_end_parameters(front_end)
        foreign = sorted(name for name, value in given.items() if value is not None and name not in parameters)
        if foreign:
            raise ValueError(
                f"front_end={front_end!r} has no parameter {foreign[0]!r} (given: {foreign}); its parameters are "
                f"{sorted(parameters)}"
            )
        self.front_end = front_end
        # Only the chosen front end's parameters become attributes (and so enter preprocessor_config.json).
        for name, default in parameters.items():
            setattr(self, name, default if given[name] is None else given[name])
        self._front_ends: Dict[str, torch.nn.Module] = {}
        self.build_front_end()  # validate the parameters now rather than on the first call

    def build_front_end(self) -> torch.nn.Module:
        """A new batched front end (:data:`FRONT_ENDS`) with this extractor's parameters (move it to the GPU for training)."""
        parameters = {name: getattr(self, name) for name in front_end_parameters(self.front_end)}
        return FRONT_ENDS[self.front_end](sampling_rate=self.sampling_rate, **parameters)

    def _front_end_on(self, device: torch.device) -> torch.nn.Module:
        key = str(device)
        if key not in self._front_ends:
            self._front_ends[key] = self.build_front_end().to(device)
        return self._front_ends[key]

    @property
    def min_samples(self) -> int:
        """Clips shorter than this (``n_fft`` samples) are zero-padded at the end up to it."""
        return int(self.n_fft)

    def to_dict(self) -> Dict[str, Any]:
        output = super().to_dict()
        for key in [key for key in output if key.startswith("_")]:
            del output[key]
        return output

    def _as_clips(self, raw_speech: AudioInput) -> List[torch.Tensor]:
        """Validate the input and return a list of 1-D float32 tensors (one per clip)."""
        if isinstance(raw_speech, (np.ndarray, torch.Tensor)):
            if raw_speech.ndim == 1:
                items, batched_array = [raw_speech], False
            elif raw_speech.ndim == 2:
                rows, cols = raw_speech.shape
                if cols <= 8 < rows:
                    raise ValueError(
                        f"input of shape {tuple(raw_speech.shape)} looks like (samples, channels) multi-channel audio; "
                        "only mono is supported: downmix it first (e.g. audio.mean(axis=1)). A 2-D input is read as "
                        "a batch (batch, samples) of mono clips."
                    )
                items, batched_array = list(raw_speech), True
            else:
                raise ValueError(
                    f"input of shape {tuple(raw_speech.shape)}: expected a mono clip (samples,) or a batch "
                    "(batch, samples); multi-channel audio must be downmixed first"
                )
        elif isinstance(raw_speech, (list, tuple)):
            if len(raw_speech) == 0:
                raise ValueError("empty batch: no audio clip given")
            if all(isinstance(x, (int, float, np.number)) for x in raw_speech):
                items, batched_array = [np.asarray(raw_speech, dtype=np.float32)], False
            else:
                items, batched_array = list(raw_speech), False
        else:
            raise TypeError(f"audio must be a numpy array, a torch tensor or a list of them, got {type(raw_speech).__name__}")

        clips = []
        for index, item in enumerate(items):
            where = f"clip {index}" if (batched_array or len(items) > 1) else "the clip"
            if isinstance(item, (list, tuple)):
                item = np.asarray(item, dtype=np.float32)
            if isinstance(item, np.ndarray):
                if item.dtype.kind in "iub":
                    raise ValueError(
                        f"{where} has integer samples ({item.dtype}); convert PCM to float in [-1, 1] first"
                    )
                item = torch.from_numpy(np.ascontiguousarray(item, dtype=np.float32))
            elif isinstance(item, torch.Tensor):
                if not item.is_floating_point():
                    raise ValueError(f"{where} has integer samples ({item.dtype}); convert PCM to float in [-1, 1] first")
                item = item.detach().to(torch.float32)
            else:
                raise TypeError(f"{where} is a {type(item).__name__}; expected a 1-D numpy array or torch tensor")
            if item.dim() != 1:
                raise ValueError(
                    f"{where} has shape {tuple(item.shape)}; only mono 1-D audio is supported (downmix multi-channel "
                    "audio first, e.g. audio.mean(axis=-1) for a (samples, channels) array)"
                )
            if item.numel() == 0:
                raise ValueError(f"{where} is empty (0 samples)")
            # A sum is a cheap screen (NaN/inf propagate); only a non-finite sum pays for the exact check.
            if not bool(torch.isfinite(item.sum())) and not bool(torch.isfinite(item).all()):
                raise ValueError(f"{where} contains NaN or infinite samples")
            clips.append(item)
        return clips

    def __call__(
        self,
        raw_speech: AudioInput,
        sampling_rate: Optional[int] = None,
        padding: Union[bool, str] = False,
        max_length: Optional[int] = None,
        truncation: bool = False,
        return_tensors: Optional[str] = None,
        device: Optional[Union[str, torch.device]] = None,
        **kwargs,
    ) -> BatchFeature:
        """Featurise one clip or a batch.

        Args:
            raw_speech: a mono clip (1-D numpy array / torch tensor / list of floats), a list of clips,
                or a 2-D array read as ``(batch, samples)``.
            sampling_rate: the rate of ``raw_speech``; it must equal ``self.sampling_rate`` (resample
                first, e.g. with ``hlp_audio.audio_loading.load_audio``). ``None`` is accepted with a warning.
            padding: ``False``/``"do_not_pad"`` (default: each clip is featurised at its own length; with
                ``return_tensors`` the clips must then have equal lengths), ``"longest"``/``True`` (zero-pad
                to the longest clip: the padding changes the shorter clips' last frames and adds silent
                frames, and so their scores) or ``"max_length"`` (pad to ``max_length``).
            max_length: a length in samples, for ``padding="max_length"`` and ``truncation``.
            truncation: cut clips longer than ``max_length`` samples.
            return_tensors: ``"pt"``, ``"np"`` or ``None`` (a list of one feature array per clip).
            device: where to compute (default CPU); with ``return_tensors="pt"`` the result stays there.

        Clips shorter than ``n_fft`` samples are first zero-padded to ``n_fft`` samples.
        """
        if kwargs:
            logger.warning(f"HLPAudioFeatureExtractor ignores the arguments {sorted(kwargs)}")
        if sampling_rate is None:
            logger.warning(
                f"No sampling_rate passed to {self.__class__.__name__}: assuming {self.sampling_rate} Hz. Pass it to "
                "catch audio at the wrong rate."
            )
        elif sampling_rate != self.sampling_rate:
            raise ValueError(
                f"audio sampled at {sampling_rate} Hz but {self.__class__.__name__} expects {self.sampling_rate} Hz; "
                f"resample it first (e.g. hlp_audio.audio_loading.load_audio(path, sampling_rate={self.sampling_rate}))"
            )
        if padding is True:
            padding = "longest"
        elif padding is False:
            padding = "do_not_pad"
        if padding not in ("longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding must be True/'longest', 'max_length' or False/'do_not_pad', got {padding!r}")
        if (padding == "max_length" or truncation) and max_length is None:
            raise ValueError("padding='max_length' and truncation=True need max_length (in samples)")
        if max_length is not None and max_length < self.min_samples:
            raise ValueError(f"max_length={max_length} samples is shorter than the minimum of {self.min_samples} (n_fft)")
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")

        clips = self._as_clips(raw_speech)
        if truncation:
            clips = [clip[:max_length] for clip in clips]
        front_end = self._front_end_on(torch.device(device) if device is not None else torch.device("cpu"))
        target_device = front_end.mel_filters.device

        if padding == "do_not_pad":
            lengths = {clip.numel() for clip in clips}
            if return_tensors is not None and len(lengths) > 1:
                raise ValueError(
                    f"clips of different lengths ({[clip.numel() for clip in clips]} samples) cannot be returned as "
                    f"one {return_tensors!r} batch without padding, and padding would change the shorter clips' "
                    "features (and scores): featurise them one by one (return_tensors=None gives a list), or pass "
                    "padding=True to zero-pad them on purpose"
                )
            with torch.no_grad():
                features = [front_end(self._pad_to(clip, self.min_samples).to(target_device))[0] for clip in clips]
            stacked = torch.stack(features) if return_tensors is not None else None
        else:
            # Padding never cuts: only ``truncation`` does (clips longer than max_length set the length).
            length = max(clip.numel() for clip in clips)
            if padding == "max_length":
                length = max(length, max_length)
            length = max(length, self.min_samples)
            waveforms = torch.full((len(clips), length), float(self.padding_value), dtype=torch.float32)
            for row, clip in enumerate(clips):
                waveforms[row, : clip.numel()] = clip
            with torch.no_grad():
                stacked = front_end(waveforms.to(target_device))
            features = list(stacked)

        if return_tensors == "pt":
            values: Any = stacked
        elif return_tensors == "np":
            values = stacked.cpu().numpy()
        else:
            values = [feature.cpu().numpy() for feature in features]
        return BatchFeature({"input_values": values})

    def _pad_to(self, clip: torch.Tensor, length: int) -> torch.Tensor:
        if clip.numel() >= length:
            return clip
        return torch.nn.functional.pad(clip, (0, length - clip.numel()), value=float(self.padding_value))


# ``save_pretrained`` then writes ``auto_map`` and copies this file, so that
# ``AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)`` works without hlp-audio.
HLPAudioFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
