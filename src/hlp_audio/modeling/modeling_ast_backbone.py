"""The Audio Spectrogram Transformer (AST) as an HLP audio backbone.

AST (Gong, Chung, Glass, "AST: Audio Spectrogram Transformer", Interspeech 2021) is a ViT on
Kaldi log-mel filter banks (16 kHz, 10 ms hop, 128 bins, 1024 frames for 10 s) from
``ASTFeatureExtractor``. This backbone reuses transformers' own ``ASTModel`` and ``ASTMLPHead``
under the same attribute names as ``ASTForAudioClassification``, so that converting a checkpoint
(e.g. ``MIT/ast-finetuned-audioset-10-10-0.4593``) is a rename of the prefix and nothing else.

Imports only torch and transformers: the file travels to the Hub as remote code next to
``modeling_hlp_audio.py``.
"""

from dataclasses import fields
from typing import Any, Dict

import torch
from torch import nn
from transformers import initialization as init
from transformers.configuration_utils import PreTrainedConfig
from transformers.models.audio_spectrogram_transformer.configuration_audio_spectrogram_transformer import ASTConfig
from transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer import (
    ASTMLPHead,
    ASTModel,
)

__all__ = ["ASTBackbone", "AST_SIZES", "ast_architecture", "default_ast_config"]

# ASTConfig's own fields (architecture), without the generic PreTrainedConfig ones (labels, dtype...).
_AST_ARCHITECTURE_KEYS = tuple(
    f.name for f in fields(ASTConfig) if f.name not in {g.name for g in fields(PreTrainedConfig)}
)

AST_SIZES: Dict[str, Dict[str, Any]] = {
    # For tests: 2 x 4 patches of a 32-bin, 64-frame spectrogram.
    "tiny": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        patch_size=16,
        frequency_stride=16,
        time_stride=16,
        max_length=64,
        num_mel_bins=32,
    ),
    # AST-base as in MIT/ast-finetuned-audioset-10-10-0.4593: 12 x 101 overlapping patches of 10 s clips.
    "base": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        patch_size=16,
        frequency_stride=10,
        time_stride=10,
        max_length=1024,
        num_mel_bins=128,
    ),
}


def default_ast_config(size: str = "base") -> Dict[str, Any]:
    """Backbone config of a named AST size: ``"tiny"`` (tests) or ``"base"`` (AST-base, 10 s clips)."""
    if size not in AST_SIZES:
        raise ValueError(f"unknown AST size {size!r}; known sizes: {sorted(AST_SIZES)}")
    return ast_architecture(ASTConfig(**AST_SIZES[size]))


def ast_architecture(config: ASTConfig) -> Dict[str, Any]:
    """The architecture fields of an ``ASTConfig`` as a plain dict (the ``backbone_config`` of an AST backbone)."""
    return {key: getattr(config, key) for key in _AST_ARCHITECTURE_KEYS}


class ASTBackbone(nn.Module):
    """AST encoder + MLP head, mapping ``ASTFeatureExtractor`` features to logits (before post-HLP).

    Args:
        backbone_config: ``ASTConfig`` architecture arguments (see :func:`default_ast_config`); missing keys take
            ``ASTConfig``'s defaults, which are AST-base.
        num_labels: number of output logits.

    ``forward(input_values)`` takes ``(batch, max_length, num_mel_bins)`` filter banks and returns
    ``(batch, num_labels)`` logits. The head is ``classifier``; everything else is the body.
    """

    input_kind = "ast_fbank"

    def __init__(self, backbone_config: Dict[str, Any], num_labels: int):
        super().__init__()
        backbone_config = dict(backbone_config or {})
        unknown = sorted(set(backbone_config) - set(_AST_ARCHITECTURE_KEYS))
        if unknown:
            raise ValueError(f"unknown AST backbone_config keys {unknown}; known keys: {list(_AST_ARCHITECTURE_KEYS)}")
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive int, got {num_labels!r}")
        self.ast_config = ASTConfig(**backbone_config, num_labels=num_labels)
        self.audio_spectrogram_transformer = ASTModel(self.ast_config)
        self.classifier = ASTMLPHead(self.ast_config)
        self.init_weights()

    @property
    def input_shape(self):
        """``(frames, mel_bins)`` of one example."""
        return (self.ast_config.max_length, self.ast_config.num_mel_bins)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        if input_values.dim() != 3 or tuple(input_values.shape[1:]) != self.input_shape:
            raise ValueError(
                f"AST backbone expects input_values of shape (batch, {self.input_shape[0]}, {self.input_shape[1]}) "
                f"(frames, mel bins from ASTFeatureExtractor), got {tuple(input_values.shape)}"
            )
        pooled = self.audio_spectrogram_transformer(input_values).pooler_output
        return self.classifier(pooled)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise the head as ``ASTForAudioClassification`` does; ``ASTModel`` initialises itself.

        ``transformers.initialization`` skips tensors that ``from_pretrained`` loaded.
        """
        init.ones_(self.classifier.layernorm.weight)
        init.zeros_(self.classifier.layernorm.bias)
        init.normal_(self.classifier.dense.weight, mean=0.0, std=self.ast_config.initializer_range)
        init.zeros_(self.classifier.dense.bias)
