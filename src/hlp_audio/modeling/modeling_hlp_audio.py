"""HLP audio tagger: a backbone, a multi-label head, and Hierarchical Label Propagation in ``forward``.

``HLPAudioForAudioClassification`` wraps any backbone of :data:`BACKBONES` (a module mapping
features to logits). Its config carries the label hierarchy, so a saved model applies post-HLP
itself wherever it is loaded: every logit becomes the maximum over its class and the descendants
that reach it through unique labelled parents (``hierarchy_ops.AncestorMax``, the single
implementation of the rule). The ancestor-pair index tensors are derived from ``config.ontology``
and cached per device, never stored as buffers: transformers 5 leaves non-persistent buffers
uninitialised after ``from_pretrained``.

This file imports only torch, numpy, transformers and its siblings: with ``register_for_auto_class``
it is copied next to the weights and loads with ``trust_remote_code=True`` where ``hlp-audio`` is
not installed. Adding a backbone = a sibling ``modeling_<kind>.py`` implementing
``backbone.HLPBackbone``, and one line in :data:`BACKBONES`.
"""

from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F
from transformers.utils import ModelOutput
from transformers.modeling_utils import PreTrainedModel

from .configuration_hlp_audio import HLPAudioConfig
from .backbone import HLPBackbone
from .hierarchy_ops import AncestorMax
from .modeling_ast_backbone import ASTBackbone
from .modeling_cnn6 import CNN6Backbone
from .modeling_convnext import ConvNeXtBackbone
from .modeling_efficientat import EfficientATBackbone
from .modeling_passt import PaSSTBackbone

__all__ = [
    "BACKBONES",
    "backbone_class",
    "HLPAudioClassifierOutput",
    "HLPAudioPreTrainedModel",
    "HLPAudioForAudioClassification",
]

#: backbone_type -> backbone class (``backbone.HLPBackbone`` is the contract every one implements).
BACKBONES: Dict[str, type] = {
    backbone.backbone_type: backbone
    for backbone in (
        ASTBackbone,
        CNN6Backbone,
        ConvNeXtBackbone,
        EfficientATBackbone,
        PaSSTBackbone,
    )
}


def backbone_class(backbone_type: str) -> type:
    """The :class:`~backbone.HLPBackbone` subclass registered for ``backbone_type``."""
    if backbone_type not in BACKBONES:
        raise ValueError(f"unknown backbone_type {backbone_type!r}; available: {sorted(BACKBONES)}")
    return BACKBONES[backbone_type]


@dataclass
class HLPAudioClassifierOutput(ModelOutput):
    """Output of :class:`HLPAudioForAudioClassification`.

    Args:
        loss: binary cross-entropy on ``raw_logits`` (when labels are given).
        logits: the tagger's logits, post-HLP'd when ``config.post_hlp`` is on (what ``pipeline()`` scores).
        raw_logits: the backbone's logits before post-HLP. Evaluate with these (e.g. ``hierarchical_map``,
            which computes the mAP with and without post-HLP itself); with post-HLP off they equal ``logits``.
    """

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    raw_logits: Optional[torch.FloatTensor] = None


class HLPAudioPreTrainedModel(PreTrainedModel):
    """Weight initialisation, loading and saving for HLP audio models."""

    config: HLPAudioConfig
    config_class = HLPAudioConfig
    main_input_name = "input_values"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Every module of the model belongs to the backbone, which owns the initialisation scheme
        # (``init_module_weights`` uses ``transformers.initialization``: tensors loaded by
        # ``from_pretrained`` are skipped). Nested ``PreTrainedModel``s (AST's ``ASTModel``) are
        # initialised by their own ``_init_weights``.
        backbone = getattr(self, "backbone", None)
        if isinstance(backbone, HLPBackbone):
            backbone.init_module_weights(module)


class HLPAudioForAudioClassification(HLPAudioPreTrainedModel):
    r"""Multi-label audio tagger whose logits are post-processed by HLP inside ``forward``.

    Args:
        config ([`HLPAudioConfig`]): backbone type and arguments, the ontology, ``post_hlp`` and ``hlp_targets``.

    ``forward(input_values, labels=None)`` returns an :class:`HLPAudioClassifierOutput`:

    - ``logits`` (batch, num_labels): the backbone's logits, post-HLP'd when ``config.post_hlp`` is on
      (out-of-place and differentiable: gradients reach the maximal entry of each class's chain);
    - ``raw_logits`` (batch, num_labels): the backbone's logits before post-HLP, for evaluation (the
      ``hierarchical_map`` metric applies post-HLP itself for its ``*_post`` figures);
    - ``loss`` when ``labels`` (batch, num_labels multi-hot, or soft targets in [0, 1]) are given: binary
      cross-entropy with logits, in float32, on the backbone's logits BEFORE post-HLP (post-HLP is an
      inference step), against the labels propagated up the hierarchy first when ``config.hlp_targets`` is on;
      with a ``loss_mask`` (num_labels,) only over the classes it keeps (partial labels, see :meth:`compute_loss`).

    ``config.post_hlp`` is read at every call, so it can be switched on a loaded model.
    """

    def __init__(self, config: HLPAudioConfig):
        super().__init__(config)
        backbone = backbone_class(config.backbone_type)
        self.backbone = backbone(backbone.config_class.from_dict(config.backbone_config), config.num_labels)
        # Nested transformers models (ASTModel) follow the attention implementation requested for the wrapper.
        for module in self.backbone.modules():
            if isinstance(module, PreTrainedModel):
                module.set_attn_implementation(self.config._attn_implementation)
        # The post-HLP plan: plain numpy index arrays derived from config.ontology, moved to a device once
        # on first use there (no buffers, so from_pretrained has nothing to leave uninitialised).
        self._hlp_plan = AncestorMax(*config.ancestor_pairs())
        self.post_init()

    # ------------------------------------------------------------------ hierarchy
    def propagate_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Post-HLP: ``out[..., a] = max(logits[..., a], logits[..., d] for each descendant d of a)``.

        Out-of-place, on the device and dtype of ``logits``; works on logits of any sign.
        """
        if logits.shape[-1] != self.config.num_labels:
            raise ValueError(
                f"logits of shape {tuple(logits.shape)} have {logits.shape[-1]} classes on the last axis but the "
                f"model has {self.config.num_labels}"
            )
        return self._hlp_plan(logits)

    def propagate_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """HLP on training targets (multi-hot or soft): a class gets the max of its own and its descendants' values."""
        return self._hlp_plan(labels)

    # ------------------------------------------------------------------ body / head
    @property
    def classifier(self) -> nn.Module:
        """The classification head (the backbone's ``classifier``)."""
        return self.backbone.classifier

    def head_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.classifier.parameters()

    def body_parameters(self) -> Iterator[nn.Parameter]:
        head = {id(parameter) for parameter in self.head_parameters()}
        return (parameter for parameter in self.backbone.parameters() if id(parameter) not in head)

    def freeze_backbone(self, freeze: bool = True) -> None:
        """Stop (or, with ``freeze=False``, restart) gradients to the body: linear probing trains the head only."""
        for parameter in self.body_parameters():
            parameter.requires_grad_(not freeze)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_values: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        return_dict: Optional[bool] = None,
        loss_mask: Optional[torch.Tensor] = None,
    ) -> Union[HLPAudioClassifierOutput, Tuple[torch.Tensor, ...]]:
        r"""
        input_values (`torch.FloatTensor`): features from the model's feature extractor, e.g. (batch, frames, mel bins)
            from `ASTFeatureExtractor` for an AST backbone.
        labels (`torch.Tensor` of shape `(batch_size, num_labels)`, *optional*): multi-hot (or soft) targets.
        loss_mask (`torch.Tensor` of shape `(num_labels,)`, *optional*): the classes the loss is taken over (see
            `compute_loss`); the others are unknown, not negative.
        attention_mask: accepted for pipeline compatibility and ignored (inputs have a fixed length).
        """
        if input_values is None:
            raise ValueError("input_values is required")
        raw_logits = self.backbone(input_values)
        logits = self.propagate_logits(raw_logits) if self.config.post_hlp else raw_logits
        # Post-HLP is an inference-time step (as in the paper): the loss is taken on the raw logits, so
        # training does not depend on post_hlp and every class gets its own gradient.
        loss = self.compute_loss(raw_logits, labels, loss_mask) if labels is not None else None
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:  # with the HF Trainer, predictions are (logits, raw_logits)
            return (loss, logits, raw_logits) if loss is not None else (logits, raw_logits)
        return HLPAudioClassifierOutput(loss=loss, logits=logits, raw_logits=raw_logits)

    def compute_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, loss_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Binary cross-entropy with logits (float32) against ``labels``, HLP-propagated when ``config.hlp_targets``.

        ``loss_mask`` (num_labels,), bool or 0/1: partial-label training. The loss is the mean over the
        kept classes only (every clip, every class whose mask is true); the other classes are "unknown"
        rather than negative, so they give the logits exactly zero gradient. Targets are propagated
        before masking, so an ancestor that is kept gets its propagated target.
        """
        if tuple(labels.shape) != tuple(logits.shape):
            raise ValueError(
                f"labels of shape {tuple(labels.shape)} do not match the logits {tuple(logits.shape)}: expected "
                f"multi-hot targets (batch, {self.config.num_labels})"
            )
        targets = labels.to(device=logits.device, dtype=torch.float32)
        invalid = (targets < 0) | (targets > 1) | targets.isnan()
        if bool(invalid.any()):  # one reduction, one sync
            bad = torch.nonzero(invalid)[0].tolist()
            raise ValueError(
                f"labels must be multi-hot or soft targets in [0, 1]; labels{tuple(bad)} is {targets[tuple(bad)].item()}"
            )
        if self.config.hlp_targets:
            targets = self.propagate_targets(targets)
        logits = logits.float()
        if loss_mask is not None:
            keep = self._check_loss_mask(loss_mask).to(logits.device)
            logits, targets = logits[..., keep], targets[..., keep]
        return F.binary_cross_entropy_with_logits(logits, targets)

    def _check_loss_mask(self, loss_mask: torch.Tensor) -> torch.Tensor:
        """``loss_mask`` as a bool tensor (num_labels,), or a ValueError naming what is wrong with it."""
        loss_mask = torch.as_tensor(loss_mask)
        if tuple(loss_mask.shape) != (self.config.num_labels,):
            raise ValueError(
                f"loss_mask of shape {tuple(loss_mask.shape)}: expected one value per class, ({self.config.num_labels},)"
            )
        if loss_mask.dtype != torch.bool:
            if not ((loss_mask == 0) | (loss_mask == 1)).all():
                raise ValueError("loss_mask must be bool or 0/1 values (1: the class counts in the loss)")
            loss_mask = loss_mask.bool()
        if not loss_mask.any():
            raise ValueError("loss_mask keeps no class: the loss would be empty")
        return loss_mask


HLPAudioForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")
