"""PaSST-like backbone: a patchout audio spectrogram transformer (Koutini et al., Interspeech 2022).

The encoder follows PaSST (https://arxiv.org/abs/2110.05069, reference code ``kkoutini/PaSST`` and the
``hear21passt`` package) and loads its checkpoints after a pure key renaming (``scripts/convert_passt.py``):

* overlapping 16x16 patches of the (128 mel bands x frames) log-mel input, taken by one strided convolution;
* separate frequency and time positional embeddings added to the patch grid, so that inputs shorter than the
  training length use the first time positions and longer inputs use an interpolated time embedding;
* a classification token and a distillation token, each with its own positional embedding;
* patchout during training only: structured patchout drops whole time frames (``s_patchout_t`` columns) and
  frequency bands (``s_patchout_f`` rows) of the patch grid, unstructured patchout drops ``u_patchout`` random
  patches; the same patches are dropped for every example of a batch, as in PaSST, so the batch stays dense;
* pre-norm transformer layers whose attention runs through ``torch.nn.functional.scaled_dot_product_attention``;
* the final features are the mean of the two token outputs, classified by a LayerNorm + Linear head.

This file is copied to the Hub as remote code: it imports only torch, transformers and its siblings.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from .backbone import BackboneConfig, HLPBackbone, drop_path

__all__ = [
    "PASST_SIZES",
    "PaSSTBackbone",
    "PaSSTConfig",
    "PaSSTEmbeddings",
    "PaSSTLayer",
    "PaSSTClassificationHead",
    "passt_grid_size",
]

@dataclasses.dataclass
class PaSSTConfig(BackboneConfig):
    """Architecture and regularisation of a PaSST backbone; the defaults are PaSST-S (stride 10, 10 s)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6  # encoder LayerNorms (PaSST: partial(nn.LayerNorm, eps=1e-6))
    head_layer_norm_eps: float = 1e-5  # the head's LayerNorm (PaSST: a default nn.LayerNorm)
    num_mel_bins: int = 128
    max_length: int = 998  # training length in frames (PaSST's input_tdim); sets the time positional embedding size
    patch_size: int = 16
    frequency_stride: int = 10
    time_stride: int = 10
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.0
    s_patchout_t: int = 40
    s_patchout_f: int = 4
    u_patchout: int = 0
    initializer_range: float = 0.02

    def __post_init__(self):
        """Check every field; errors name the offending key."""
        positive = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "num_mel_bins",
                    "max_length", "patch_size", "frequency_stride", "time_stride")
        for key in positive + ("s_patchout_t", "s_patchout_f", "u_patchout"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"PaSST backbone_config[{key!r}] must be a non-negative int, got {value!r}")
        for key in positive:
            if getattr(self, key) == 0:
                raise ValueError(f"PaSST backbone_config[{key!r}] must be positive, got 0")
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            if not 0.0 <= float(getattr(self, key)) < 1.0:
                raise ValueError(f"PaSST backbone_config[{key!r}] must be in [0, 1), got {getattr(self, key)!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"PaSST hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"PaSST backbone_config['hidden_act'] {self.hidden_act!r} is not a known activation")
        if self.num_mel_bins < self.patch_size or self.max_length < self.patch_size:
            raise ValueError(
                f"PaSST num_mel_bins ({self.num_mel_bins}) and max_length ({self.max_length}) must be at "
                f"least patch_size ({self.patch_size})"
            )
        conv_bands = (self.num_mel_bins - self.patch_size) // self.frequency_stride + 1
        if conv_bands != self.num_mel_bins // self.frequency_stride:
            # PaSST sizes the frequency embedding as num_mel_bins // stride; the convolution must give as many bands.
            raise ValueError(
                f"PaSST num_mel_bins={self.num_mel_bins}, patch_size={self.patch_size} and "
                f"frequency_stride={self.frequency_stride} give {conv_bands} patch rows but "
                f"{self.num_mel_bins // self.frequency_stride} frequency positions"
            )


def _stride_variant(stride: int, s_patchout_t: int, s_patchout_f: int, max_length: int = 998) -> dict[str, Any]:
    return {
        "frequency_stride": stride,
        "time_stride": stride,
        "max_length": max_length,
        "s_patchout_t": s_patchout_t,
        "s_patchout_f": s_patchout_f,
    }


# Public PaSST variants (names of the kkoutini/PaSST release files), as overrides of the PaSST-S defaults. The
# stride-10 patchout (40 time frames, 4 frequency bands of the 12 x 99 grid) is PaSST-S's training setting; for
# strides 12/14/16 the same fractions of the smaller grids are dropped (the release does not state the values those
# checkpoints were trained with).
PASST_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_length": 100,
        "s_patchout_t": 3,
        "s_patchout_f": 4,
    },
    "passt-s-f128-p16-s10": _stride_variant(10, 40, 4),
    "passt-s-f128-p16-s12": _stride_variant(12, 34, 3),
    "passt-s-f128-p16-s14": _stride_variant(14, 29, 3),
    "passt-s-f128-p16-s16": _stride_variant(16, 25, 3),
    "passt-s-f128-20sec-p16-s10": _stride_variant(10, 80, 4, max_length=2000),
    "passt-s-f128-30sec-p16-s10": _stride_variant(10, 120, 4, max_length=3000),
}
PASST_SIZES["s"] = PASST_SIZES["base"] = PASST_SIZES["passt-s-f128-p16-s10"]


def passt_grid_size(config: PaSSTConfig) -> tuple[int, int]:
    """(frequency, time) size of the positional embedding grid, computed as PaSST does: ``dim // stride``.

    The convolution gives ``(dim - patch_size) // stride + 1`` patches, which for the time axis may be one fewer
    (stride 12: 82 patches for 83 positions over 998 frames); the first positions are used then.
    """
    return (
        config.num_mel_bins // config.frequency_stride,
        config.max_length // config.time_stride,
    )


def _keep_random_subset(size: int, drop: int, device: torch.device) -> torch.Tensor | None:
    """Sorted indices of ``size - drop`` positions kept at random, or None when nothing is dropped.

    At least one position is always kept, so that a short input never loses every time frame or band.
    """
    drop = min(drop, size - 1)
    if drop <= 0:
        return None
    return torch.randperm(size, device=device)[: size - drop].sort().values


class PaSSTEmbeddings(nn.Module):
    """Patch embedding, frequency / time / token positional embeddings, patchout and the two prepended tokens.

    Maps ``input_values`` of shape (batch, num_mel_bins, frames) to a token sequence
    (batch, 2 + kept patches, hidden_size).
    """

    def __init__(self, config: PaSSTConfig):
        super().__init__()
        hidden = config.hidden_size
        frequency_positions, time_positions = passt_grid_size(config)
        self.num_mel_bins = config.num_mel_bins
        self.patch_size = config.patch_size
        self.s_patchout_t = config.s_patchout_t
        self.s_patchout_f = config.s_patchout_f
        self.u_patchout = config.u_patchout

        self.patch_embeddings = nn.Conv2d(
            1,
            hidden,
            kernel_size=config.patch_size,
            stride=(config.frequency_stride, config.time_stride),
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, hidden))
        # Same shapes as PaSST's new_pos_embed / freq_new_pos_embed / time_new_pos_embed.
        self.token_position_embeddings = nn.Parameter(torch.zeros(1, 2, hidden))
        self.frequency_position_embeddings = nn.Parameter(torch.zeros(1, hidden, frequency_positions, 1))
        self.time_position_embeddings = nn.Parameter(torch.zeros(1, hidden, 1, time_positions))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def time_positions(self, num_frames: int) -> torch.Tensor:
        """Time positional embedding for ``num_frames`` patch columns, shape (1, hidden, 1, num_frames).

        Shorter inputs use the first positions (as PaSST does); longer inputs, which PaSST rejects, get the
        trained embedding linearly interpolated to ``num_frames`` columns.
        """
        embedding = self.time_position_embeddings
        trained = embedding.shape[-1]
        if num_frames <= trained:
            return embedding[..., :num_frames]
        stretched = F.interpolate(embedding[:, :, 0], size=num_frames, mode="linear", align_corners=False)
        return stretched.unsqueeze(2)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        if input_values.ndim != 3 or input_values.shape[1] != self.num_mel_bins:
            raise ValueError(
                f"PaSST expects input_values of shape (batch, {self.num_mel_bins} mel bins, frames), "
                f"got {tuple(input_values.shape)}"
            )
        if input_values.shape[2] < self.patch_size:
            raise ValueError(
                f"PaSST needs at least patch_size={self.patch_size} frames, got input_values of shape "
                f"{tuple(input_values.shape)}"
            )
        patches = self.patch_embeddings(input_values.unsqueeze(1))  # (batch, hidden, bands, columns)
        batch_size, _, num_bands, num_columns = patches.shape
        patches = patches + self.frequency_position_embeddings + self.time_positions(num_columns)

        if self.training:
            # Structured patchout: whole patch columns (time) and rows (frequency), shared by the batch.
            kept_columns = _keep_random_subset(num_columns, self.s_patchout_t, patches.device)
            if kept_columns is not None:
                patches = patches.index_select(3, kept_columns)
            kept_bands = _keep_random_subset(num_bands, self.s_patchout_f, patches.device)
            if kept_bands is not None:
                patches = patches.index_select(2, kept_bands)

        tokens = patches.flatten(2).transpose(1, 2)  # (batch, patches, hidden), frequency-major like PaSST
        if self.training:
            kept_tokens = _keep_random_subset(tokens.shape[1], self.u_patchout, tokens.device)
            if kept_tokens is not None:
                tokens = tokens.index_select(1, kept_tokens)

        special = torch.cat((self.cls_token, self.distillation_token), dim=1) + self.token_position_embeddings
        tokens = torch.cat((special.expand(batch_size, -1, -1), tokens), dim=1)
        return self.dropout(tokens)


class PaSSTSelfAttention(nn.Module):
    """Multi-head self-attention with a fused query/key/value projection and SDPA."""

    def __init__(self, config: PaSSTConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.dropout_prob = config.attention_probs_dropout_prob
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.output = nn.Linear(config.hidden_size, config.hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch_size, seq_len, hidden = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch_size, seq_len, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, seq, head_dim)
        context = F.scaled_dot_product_attention(
            query, key, value, dropout_p=self.dropout_prob if self.training else 0.0
        )
        context = context.transpose(1, 2).reshape(batch_size, seq_len, hidden)
        return self.output_dropout(self.output(context))


class PaSSTMLP(nn.Module):
    def __init__(self, config: PaSSTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.activation(self.fc1(hidden_states)))
        return self.dropout(self.fc2(hidden_states))


class PaSSTLayer(GradientCheckpointingLayer):
    """Pre-norm transformer layer: ``x + attention(norm(x))`` then ``x + mlp(norm(x))``, with stochastic depth."""

    def __init__(self, config: PaSSTConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = PaSSTSelfAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = PaSSTMLP(config)
        self.drop_path_rate = drop_path_rate

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        attended = self.attention(self.layernorm_before(hidden_states))
        hidden_states = hidden_states + drop_path(attended, self.drop_path_rate, self.training)
        transformed = self.mlp(self.layernorm_after(hidden_states))
        return hidden_states + drop_path(transformed, self.drop_path_rate, self.training)


class PaSSTClassificationHead(nn.Module):
    """PaSST's head: LayerNorm then Linear, applied to the mean of the class and distillation token outputs."""

    def __init__(self, config: PaSSTConfig, num_labels: int):
        super().__init__()
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.head_layer_norm_eps)
        self.dense = nn.Linear(config.hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.dense(self.layernorm(pooled))


class PaSSTBackbone(HLPBackbone):
    """PaSST encoder + head, the ``"passt"`` backbone of ``HLPAudioForAudioClassification``.

    ``forward(input_values)`` takes log-mel spectrograms (batch, num_mel_bins, frames) from
    ``HLPAudioFeatureExtractor`` and returns logits (batch, num_labels), before any post-processing.
    Patchout (``s_patchout_t``, ``s_patchout_f``, ``u_patchout``) acts in training mode only.
    """

    backbone_type = "passt"
    display_name = "PaSST"
    config_class = PaSSTConfig
    time_axis, freq_axis = 2, 1
    sizes = PASST_SIZES

    def __init__(self, config: PaSSTConfig, num_labels: int):
        super().__init__(config, num_labels)
        self.embeddings = PaSSTEmbeddings(config)
        depth = config.num_hidden_layers
        drop_rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear decay rule
        self.layers = nn.ModuleList([PaSSTLayer(config, rate) for rate in drop_rates])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = PaSSTClassificationHead(config, num_labels)

    def pooled_features(self, input_values: torch.Tensor) -> torch.Tensor:
        """Clip embedding (batch, hidden_size): the mean of the normalised class and distillation tokens."""
        hidden_states = self.embeddings(input_values)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        # LayerNorm is per token, so normalising only the two pooled tokens gives the same values.
        tokens = self.layernorm(hidden_states[:, :2])
        return tokens.mean(dim=1)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled_features(input_values))

    @torch.no_grad()
    def init_module_weights(self, module: nn.Module) -> None:
        """PaSST / ViT initialisation: truncated normal (std ``initializer_range``) weights and positional
        embeddings, zero biases, unit LayerNorms."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, PaSSTEmbeddings):
            for parameter in (
                module.cls_token,
                module.distillation_token,
                module.token_position_embeddings,
                module.frequency_position_embeddings,
                module.time_position_embeddings,
            ):
                init.trunc_normal_(parameter, std=std)

    def extra_repr(self) -> str:
        config = self.config
        frequency_positions, time_positions = passt_grid_size(config)
        patchout = ", ".join(f"{key}={getattr(config, key)}" for key in ("s_patchout_t", "s_patchout_f", "u_patchout"))
        return f"grid={frequency_positions}x{time_positions}, {patchout}"
