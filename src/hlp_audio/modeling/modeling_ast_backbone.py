"""The Audio Spectrogram Transformer (AST) as an HLP audio backbone.

AST (Gong, Chung, Glass, "AST: Audio Spectrogram Transformer", Interspeech 2021) is a ViT on
Kaldi log-mel filter banks (16 kHz, 10 ms hop, 128 bins, 1024 frames for 10 s) from
``ASTFeatureExtractor``. This backbone reuses transformers' own ``ASTModel`` and ``ASTMLPHead``
under the same attribute names as ``ASTForAudioClassification``, so that converting a checkpoint
(e.g. ``MIT/ast-finetuned-audioset-10-10-0.4593``) is a rename of the prefix and nothing else.

Imports only torch, transformers and its siblings: the file travels to the Hub as remote code next
to ``modeling_hlp_audio.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict

import torch
from torch import nn
from transformers import initialization as init
from transformers.models.audio_spectrogram_transformer.configuration_audio_spectrogram_transformer import ASTConfig
from transformers.models.audio_spectrogram_transformer.feature_extraction_audio_spectrogram_transformer import (
    ASTFeatureExtractor,
)
from transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer import (
    ASTMLPHead,
    ASTModel,
)

from .backbone import BackboneConfig, HLPBackbone
from .front_ends import KaldiFbankFrontEnd

__all__ = ["ASTBackbone", "ASTBackboneConfig"]


@dataclasses.dataclass
class ASTBackboneConfig(BackboneConfig):
    """The architecture fields of ``ASTConfig`` (its defaults are AST-base on 10 s clips)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    patch_size: int = 16
    qkv_bias: bool = True
    frequency_stride: int = 10
    time_stride: int = 10
    max_length: int = 1024
    num_mel_bins: int = 128

    def __post_init__(self):
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size",
                     "frequency_stride", "time_stride", "max_length", "num_mel_bins"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ASTBackboneConfig.{name} must be a positive int, got {value!r}")

    @classmethod
    def from_ast_config(cls, config: ASTConfig) -> "ASTBackboneConfig":
        """The architecture of an ``ASTConfig`` (e.g. of ``ASTForAudioClassification.config``)."""
        return cls(**{field.name: getattr(config, field.name) for field in dataclasses.fields(cls)})

    def to_ast_config(self, num_labels: int) -> ASTConfig:
        return ASTConfig(**self.to_dict(), num_labels=num_labels)


class ASTBackbone(HLPBackbone):
    """AST encoder + MLP head, mapping ``ASTFeatureExtractor`` features to logits (before post-HLP).

    ``forward(input_values)`` takes ``(batch, max_length, num_mel_bins)`` filter banks and returns
    ``(batch, num_labels)`` logits. The head is ``classifier``; everything else is the body.
    """

    backbone_type = "ast"
    display_name = "AST"
    config_class = ASTBackboneConfig
    time_axis, freq_axis = 1, 2
    sizes: Dict[str, Dict[str, Any]] = {
        # For tests: 2 x 4 patches of a 32-bin, 64-frame spectrogram.
        "tiny": dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, patch_size=16,
            frequency_stride=16, time_stride=16, max_length=64, num_mel_bins=32,
        ),
        # AST-base as in MIT/ast-finetuned-audioset-10-10-0.4593: 12 x 101 overlapping patches of 10 s clips.
        "base": {},
    }

    def __init__(self, config: ASTBackboneConfig, num_labels: int):
        super().__init__(config, num_labels)
        ast_config = config.to_ast_config(num_labels)
        self.audio_spectrogram_transformer = ASTModel(ast_config)
        self.classifier = ASTMLPHead(ast_config)

    @property
    def input_shape(self):
        """``(frames, mel_bins)`` of one example."""
        return (self.config.max_length, self.config.num_mel_bins)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        if input_values.dim() != 3 or tuple(input_values.shape[1:]) != self.input_shape:
            raise ValueError(
                f"AST backbone expects input_values of shape (batch, {self.input_shape[0]}, {self.input_shape[1]}) "
                f"(frames, mel bins from ASTFeatureExtractor), got {tuple(input_values.shape)}"
            )
        pooled = self.audio_spectrogram_transformer(input_values).pooler_output
        return self.classifier(pooled)

    @torch.no_grad()
    def init_module_weights(self, module: nn.Module) -> None:
        """The head as ``ASTForAudioClassification`` initialises it; ``ASTModel`` (a ``PreTrainedModel``)
        initialises its own modules."""
        if module is self.classifier.layernorm:
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif module is self.classifier.dense:
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            init.zeros_(module.bias)

    @classmethod
    def build_feature_extractor(cls, config: ASTBackboneConfig) -> ASTFeatureExtractor:
        return ASTFeatureExtractor(num_mel_bins=config.num_mel_bins, max_length=config.max_length)

    @classmethod
    def build_front_end(cls, feature_extractor) -> KaldiFbankFrontEnd:
        if not isinstance(feature_extractor, ASTFeatureExtractor):
            raise TypeError(f"an AST backbone takes ASTFeatureExtractor features, got {type(feature_extractor).__name__}")
        return KaldiFbankFrontEnd.from_feature_extractor(feature_extractor)
