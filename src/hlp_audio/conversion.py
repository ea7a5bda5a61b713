"""Shared last steps of the checkpoint converters (``scripts/convert_*.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import torch

__all__ = ["save_and_verify", "print_top_tags"]

PathLike = Union[str, Path]


def save_and_verify(model, feature_extractor, card, out: PathLike, probe_shape: Sequence[int]):
    """Save model, feature extractor and card (if any) to ``out``; reload and require identical logits.

    Returns the reloaded model (eval mode). ``probe_shape`` is the ``input_values`` shape of a
    random probe batch, e.g. ``(2, 128, 300)`` for the 32 kHz mel input.
    """
    from .modeling.modeling_hlp_audio import HLPAudioForAudioClassification

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    feature_extractor.save_pretrained(out)
    if card is not None:
        card.save(out)
    reloaded = HLPAudioForAudioClassification.from_pretrained(out).eval()
    probe = torch.randn(*probe_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if not torch.equal(reloaded(input_values=probe).logits, model(input_values=probe).logits):
            raise RuntimeError(f"{out}: the reloaded model does not reproduce the converted logits")
    return reloaded


def print_top_tags(model, feature_extractor, paths: Sequence[PathLike], top_k: int = 3) -> None:
    """Tag audio files with ``model`` and print the ``top_k`` sigmoid scores of each."""
    from .modeling.audio_loading import load_audio

    for path in paths:
        audio = load_audio(path, sampling_rate=feature_extractor.sampling_rate)
        features = feature_extractor(audio, sampling_rate=feature_extractor.sampling_rate, return_tensors="pt")
        with torch.no_grad():
            scores = torch.sigmoid(model(**features).logits[0])
        top = torch.argsort(scores, descending=True, stable=True)[:top_k]  # ties in class order, as the pipeline
        listed = ", ".join(f"{model.config.id2label[int(i)]} {float(scores[i]):.3f}" for i in top)
        print(f"  {Path(path).name}: {listed}")
