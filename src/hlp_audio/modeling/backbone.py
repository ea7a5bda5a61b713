"""The contract every backbone of ``HLPAudioForAudioClassification`` implements.

A backbone maps the features of its feature extractor to logits (before post-HLP). Each one is a
subclass of :class:`HLPBackbone` in its own ``modeling_<name>.py`` file, with a typed config (a
:class:`BackboneConfig` dataclass) and one line in ``modeling_hlp_audio.BACKBONES``. The contract:

- ``backbone_type``: the key of ``HLPAudioConfig.backbone_type`` (and of ``BACKBONES``), and
  ``display_name`` for model cards;
- ``config_class``: its typed config; ``HLPAudioConfig.backbone_config`` holds its ``to_dict()``;
- ``__init__(config, num_labels)``: builds the modules; ``self.config`` is the typed config and
  ``self.classifier`` the head (everything else is the body);
- ``forward(input_values) -> logits``, with ``input_values`` laid out as ``time_axis`` /
  ``freq_axis`` say (batch first; augmentation masks use them);
- ``init_module_weights(module)``: the one initialisation hook, applied to every submodule by the
  wrapper's ``_init_weights`` (it must use ``transformers.initialization``, which skips tensors that
  ``from_pretrained`` loaded);
- ``sizes`` and ``default_config(size)``: named configurations (``"tiny"`` for tests);
- ``build_feature_extractor(config)``: a new feature extractor matching a config (training from
  scratch), and ``build_front_end(feature_extractor)``: the batched ``nn.Module`` equivalent of a
  saved feature extractor, for features computed on the accelerator. By default both use
  ``HLPAudioFeatureExtractor`` with the backbone's ``front_end`` (``"efficientat"`` or ``"panns"``)
  and the config's ``num_mel_bins``.

Building blocks shared by several backbones live here too: :func:`drop_path` (stochastic depth, PaSST and the
audio ConvNeXt).

This file imports only torch and ``transformers.initialization`` (it travels to the Hub as remote code with the
model files).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, Mapping, Tuple, Type, TypeVar

import torch
from torch import nn
from transformers import initialization as init

__all__ = ["BackboneConfig", "HLPBackbone", "drop_path"]

ConfigT = TypeVar("ConfigT", bound="BackboneConfig")


@dataclasses.dataclass
class BackboneConfig:
    """Base of the backbones' typed configs: dataclasses that read and write a plain JSON dict.

    Subclasses declare their fields with defaults and check them in ``__post_init__``.
    """

    @classmethod
    def from_dict(cls: Type[ConfigT], values: Mapping[str, Any] | None) -> ConfigT:
        """Build from a dict; keys left out take their defaults, an unknown key is an error naming it."""
        values = dict(values or {})
        known = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; known keys: {known}")
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-safe dict (tuples become lists), the form stored in ``HLPAudioConfig.backbone_config``."""
        return _json_safe(dataclasses.asdict(self))

    def replace(self: ConfigT, **changes: Any) -> ConfigT:
        """A copy with some fields changed (and checked again)."""
        return self.from_dict({**self.to_dict(), **changes})


def _json_safe(value):
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


class HLPBackbone(nn.Module):
    """Base class of the backbones (see the module docstring for the contract)."""

    backbone_type: ClassVar[str]
    #: human-readable name (model cards)
    display_name: ClassVar[str]
    config_class: ClassVar[Type[BackboneConfig]]
    #: axes of ``input_values`` (batch first): where time frames and frequency bins are
    time_axis: ClassVar[int]
    freq_axis: ClassVar[int]
    #: named configurations: size name -> overrides of the config defaults
    sizes: ClassVar[Dict[str, Dict[str, Any]]]
    #: the ``HLPAudioFeatureExtractor`` front end the backbone reads (when it reads that extractor's features)
    front_end: ClassVar[str] = "efficientat"

    config: BackboneConfig
    classifier: nn.Module

    def __init__(self, config: BackboneConfig, num_labels: int):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}; "
                f"build it with {self.config_class.__name__}.from_dict(...)"
            )
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive int, got {num_labels!r}")
        self.config = config

    @classmethod
    def default_config(cls, size: str) -> BackboneConfig:
        """The typed config of a named size (see ``sizes``)."""
        if size not in cls.sizes:
            raise ValueError(f"unknown {cls.backbone_type} size {size!r}; known sizes: {sorted(cls.sizes)}")
        return cls.config_class.from_dict(cls.sizes[size])

    def init_module_weights(self, module: nn.Module) -> None:
        raise NotImplementedError

    @staticmethod
    def init_batch_norm(module: nn.modules.batchnorm._BatchNorm) -> None:
        """A fresh batch norm, through ``transformers.initialization``: unit scale, zero shift, statistics reset."""
        init.ones_(module.weight)
        init.zeros_(module.bias)
        init.zeros_(module.running_mean)
        init.ones_(module.running_var)
        init.zeros_(module.num_batches_tracked)

    @classmethod
    def build_feature_extractor(cls, config: BackboneConfig):
        """A new feature extractor for this config; by default the 32 kHz log-mel ``HLPAudioFeatureExtractor``
        with the backbone's ``front_end`` and the config's ``num_mel_bins``."""
        from .feature_extraction_hlp_audio import HLPAudioFeatureExtractor

        return HLPAudioFeatureExtractor(front_end=cls.front_end, num_mel_bins=config.num_mel_bins)

    @classmethod
    def build_front_end(cls, feature_extractor) -> nn.Module:
        """The batched equivalent of ``feature_extractor``; by default its own ``build_front_end()``, which must
        be the backbone's ``front_end``."""
        from .feature_extraction_hlp_audio import HLPAudioFeatureExtractor

        if not isinstance(feature_extractor, HLPAudioFeatureExtractor):
            raise TypeError(
                f"a {cls.backbone_type} backbone takes HLPAudioFeatureExtractor features, got "
                f"{type(feature_extractor).__name__}"
            )
        if feature_extractor.front_end != cls.front_end:
            raise ValueError(
                f"a {cls.backbone_type} backbone reads HLPAudioFeatureExtractor(front_end={cls.front_end!r}) features, "
                f"got front_end={feature_extractor.front_end!r}"
            )
        return feature_extractor.build_front_end()

    @property
    def feature_axes(self) -> Tuple[int, int]:
        """``(time_axis, freq_axis)`` of ``input_values``."""
        return self.time_axis, self.freq_axis


def drop_path(hidden_states: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a residual branch for a random subset of examples, rescaling the others."""
    if drop_prob == 0.0 or not training:
        return hidden_states
    keep_prob = 1.0 - drop_prob
    shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
    mask = hidden_states.new_empty(shape).bernoulli_(keep_prob)
    return hidden_states * mask / keep_prob
