"""``audio-classification`` pipeline for HLP taggers: files without ffmpeg, sigmoid scores, a sane ``top_k``.

transformers' ``AudioClassificationPipeline`` reads file paths and bytes through the ``ffmpeg``
binary and resamples only with torchaudio. This subclass decodes with soundfile and resamples
with soxr (``audio_loading``), and for multi-label HLP taggers returns sigmoid scores: a softmax
would make the scores of a class and its parents compete, while post-HLP guarantees that a parent
never scores below an unambiguous child.

Pass it to transformers explicitly (nothing is registered for the task, so other models keep
transformers' own pipeline)::

    pipeline("audio-classification", model="org/mn04-hlp", pipeline_class=HLPAudioClassificationPipeline)

Without it, ``pipeline("audio-classification", model=...)`` builds transformers' pipeline, which
also returns sigmoid scores for an HLP tagger (its config is multi-label) but needs ffmpeg for files.
"""

import os
from typing import Any, Dict, List, Optional, Union

import numpy as np
from transformers.pipelines.audio_classification import AudioClassificationPipeline

from .audio_loading import load_audio, prepare_waveform

__all__ = ["HLPAudioClassificationPipeline", "is_hlp_audio_model", "HLP_AUDIO_MODEL_TYPE"]

HLP_AUDIO_MODEL_TYPE = "hlp_audio"
_UNSET = object()  # "not passed", distinct from top_k=None ("all labels")


def is_hlp_audio_model(model) -> bool:
    """Whether ``model`` is an HLP tagger (by its config's ``model_type``, so remote-code copies count too)."""
    return getattr(getattr(model, "config", None), "model_type", None) == HLP_AUDIO_MODEL_TYPE


def _minimum_samples(feature_extractor) -> int:
    """Shortest waveform the feature extractor turns into at least one frame."""
    for attribute in ("win_length", "n_fft"):
        value = getattr(feature_extractor, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    window = getattr(feature_extractor, "window", None)  # ASTFeatureExtractor's numpy front end: 25 ms
    if window is not None and len(window) > 0:
        return len(window)
    return 1


class HLPAudioClassificationPipeline(AudioClassificationPipeline):
    """Audio tagging with an ``HLPAudioForAudioClassification``.

    Inputs: a path (``str`` / ``os.PathLike``: wav, flac, ogg... decoded with soundfile), the bytes of a file,
    a 1-D float array at the feature extractor's rate, a dict ``{"array" or "raw": 1-D array, "sampling_rate": int}``
    (resampled with soxr), or a list of any of these. Each clip goes through the model alone, at its own
    length: its scores never depend on the clips it is listed with (``batch_size`` is accepted and has
    no effect on the results; padding clips of other lengths together would change them).

    Call parameters:
        top_k (`int` or `None`, defaults to 5): labels returned per input, best first; ``None`` for all.
        function_to_apply (`"sigmoid"` or `"none"`, defaults to `"sigmoid"`): scores are independent per class.
        mono (`"mean"`, `"first"` or `"error"`, defaults to `"mean"`): channel policy for multi-channel files.
        resample (`bool`, defaults to `True`): with ``False``, audio at another rate is an error.

    Returns, per input, a list of ``{"label": str, "score": float}``, best first. Post-HLP makes a parent tie
    with its best child: equal scores list the most specific class first (a child before its ancestors), then
    in class order.
    """

    def __call__(self, inputs, **kwargs):
        if isinstance(inputs, (list, tuple)) and not inputs:
            raise ValueError("no audio to tag: the list of inputs is empty")
        return super().__call__(inputs, **kwargs)

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        # One clip per forward pass, so that no clip is padded to the length of another.
        return super().get_iterator(inputs, num_workers, 1, preprocess_params, forward_params, postprocess_params)

    def check_model_type(self, supported_models):
        if not is_hlp_audio_model(self.model):
            raise ValueError(
                f"HLPAudioClassificationPipeline tags with HLP taggers (model_type {HLP_AUDIO_MODEL_TYPE!r}); got a "
                f"{type(self.model).__name__} (model_type {getattr(self.model.config, 'model_type', None)!r}): use "
                'pipeline("audio-classification", model=...) without pipeline_class for other models'
            )

    def _sanitize_parameters(self, top_k=_UNSET, function_to_apply=None, mono=None, resample=None, **kwargs):
        preprocess_params: Dict[str, Any] = {}
        postprocess_params: Dict[str, Any] = {}
        if mono is not None:
            preprocess_params["mono"] = mono
        if resample is not None:
            preprocess_params["resample"] = bool(resample)
        if top_k is not _UNSET:
            if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
                raise ValueError(f"top_k must be a positive int or None (all labels), got {top_k!r}")
            postprocess_params["top_k"] = top_k
        if function_to_apply is not None:
            if function_to_apply not in ("sigmoid", "none"):
                raise ValueError(
                    f"function_to_apply={function_to_apply!r} is not available for a multi-label HLP tagger: use "
                    "'sigmoid' (independent class probabilities) or 'none' (logits); a softmax would make a class "
                    "and its parents compete"
                )
            postprocess_params["function_to_apply"] = function_to_apply
        return preprocess_params, {}, postprocess_params

    def preprocess(self, inputs, mono: str = "mean", resample: bool = True):
        sampling_rate = self.feature_extractor.sampling_rate
        min_samples = _minimum_samples(self.feature_extractor)
        if isinstance(inputs, str) and inputs.startswith(("http://", "https://")):
            from huggingface_hub.utils import httpx

            inputs = httpx.get(inputs, follow_redirects=True).content
        if isinstance(inputs, (str, os.PathLike, bytes, bytearray)):
            waveform = load_audio(inputs, sampling_rate, mono=mono, resample=resample, min_samples=min_samples)
        elif isinstance(inputs, dict):
            if "sampling_rate" not in inputs or not ("array" in inputs or "raw" in inputs):
                raise ValueError(
                    'a dict input needs "sampling_rate" and "array" (or "raw") keys, got keys '
                    f"{sorted(inputs)}"
                )
            array = inputs["raw"] if "raw" in inputs else inputs["array"]
            name = f"the audio array of {inputs['path']}" if inputs.get("path") else "the audio array"
            waveform = prepare_waveform(
                _to_numpy(array),
                _checked_rate(inputs["sampling_rate"], name),
                sampling_rate,
                resample=resample,
                min_samples=min_samples,
                name=name,
            )
        elif isinstance(inputs, np.ndarray) or hasattr(inputs, "numpy"):
            waveform = prepare_waveform(_to_numpy(inputs), sampling_rate, sampling_rate, min_samples=min_samples)
        else:
            raise TypeError(
                f"cannot tag a {type(inputs).__name__}: pass a file path, the bytes of a file, a 1-D float array at "
                f"{sampling_rate} Hz, or a dict with 'array' and 'sampling_rate'"
            )
        processed = self.feature_extractor(waveform, sampling_rate=sampling_rate, return_tensors="pt")
        if self.dtype is not None:
            processed = processed.to(dtype=self.dtype)
        return processed

    def postprocess(
        self, model_outputs, top_k: Optional[int] = 5, function_to_apply: str = "sigmoid"
    ) -> List[Dict[str, Union[str, float]]]:
        logits = model_outputs.logits[0].float()
        scores = logits.sigmoid() if function_to_apply == "sigmoid" else logits
        num_labels = scores.shape[-1]
        top_k = num_labels if top_k is None else min(int(top_k), num_labels)
        # Best first; among equal scores (post-HLP makes a parent tie with its best child) the deeper class
        # first, then class order, whatever top_k is.
        values = scores.numpy()
        order = np.lexsort((np.arange(num_labels), -self._depths, -values))[:top_k]
        id2label = self.model.config.id2label
        return [{"score": float(values[index]), "label": id2label[int(index)]} for index in order]

    @property
    def _depths(self) -> np.ndarray:
        """Number of unique-parent ancestors of each class (0 for roots and ambiguous classes)."""
        if getattr(self, "_cached_depths", None) is None:
            descendant, _ = self.model.config.ancestor_pairs()
            self._cached_depths = np.bincount(descendant, minlength=self.model.config.num_labels)
        return self._cached_depths


def _checked_rate(rate, name: str) -> int:
    """A sampling rate must be a positive whole number of Hz."""
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: sampling_rate must be a positive number of Hz, got {rate!r}")
    if not float(rate).is_integer() or rate <= 0:
        raise ValueError(f"{name}: sampling_rate must be a positive whole number of Hz, got {rate!r}")
    return int(rate)


def _to_numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor
        array = array.detach().cpu().float().numpy()
    return np.asarray(array)
