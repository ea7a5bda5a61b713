"""Models to train and evaluate: building one (from scratch or from a checkpoint, with a new head for new
classes), the batched front end of its feature extractor, and predictions before post-HLP."""

from __future__ import annotations

import os
import warnings
from typing import Optional, Union

import numpy as np
import torch
from transformers import AutoFeatureExtractor

from ..modeling.configuration_hlp_audio import HLPAudioConfig
from ..modeling.modeling_hlp_audio import HLPAudioForAudioClassification, backbone_class
from ..ontology import Ontology

__all__ = ["build_model", "build_front_end", "feature_axes", "predict"]

PathLike = Union[str, "os.PathLike[str]"]


def build_front_end(model, feature_extractor) -> torch.nn.Module:
    """The batched, device-side equivalent of ``model``'s feature extractor (waveforms -> ``input_values``)."""
    config = getattr(model, "config", model)
    return backbone_class(config.backbone_type).build_front_end(feature_extractor)


def feature_axes(model) -> tuple:
    """``(time_axis, freq_axis)`` of ``model``'s ``input_values`` (for time / frequency masks)."""
    config = getattr(model, "config", model)
    backbone = backbone_class(config.backbone_type)
    return backbone.time_axis, backbone.freq_axis


def build_model(
    *,
    ontology: Optional[Ontology] = None,
    model_name_or_path: Optional[PathLike] = None,
    backbone_type: Optional[str] = None,
    backbone_size: Optional[str] = None,
    backbone_overrides: Optional[dict] = None,
    post_hlp: bool = True,
    hlp_targets: bool = False,
):
    """An ``HLPAudioForAudioClassification`` to fine-tune, its feature extractor and its ontology.

    Either from a saved HLP tagger (``model_name_or_path``: e.g. a converted AST, PaSST or
    EfficientAT checkpoint) or from scratch (``backbone_type`` + ``backbone_size``). When
    ``ontology`` differs from the checkpoint's, the head's output layer is rebuilt for the new
    classes and freshly initialised; everything else keeps its pre-trained weights. ``backbone_overrides`` update the backbone config
    (e.g. PaSST's patchout or dropout rates). ``ontology`` defaults to the checkpoint's.
    """
    overrides = dict(backbone_overrides or {})
    if model_name_or_path is None:
        if backbone_type is None or backbone_size is None:
            raise ValueError("pass model_name_or_path, or backbone_type and backbone_size to train from scratch")
        if ontology is None:
            raise ValueError("training from scratch needs an ontology")
        backbone = backbone_class(backbone_type)
        backbone_config = backbone.default_config(backbone_size).replace(**overrides)
        config = HLPAudioConfig(
            ontology=ontology.to_dict(),
            post_hlp=post_hlp,
            hlp_targets=hlp_targets,
            backbone_type=backbone_type,
            backbone_config=backbone_config.to_dict(),
        )
        return HLPAudioForAudioClassification(config), backbone.build_feature_extractor(backbone_config), ontology

    saved = HLPAudioConfig.from_pretrained(model_name_or_path)
    saved_ontology = Ontology.from_dict(saved.ontology) if saved.ontology is not None else None
    if ontology is None:
        if saved_ontology is None:
            raise ValueError(f"{model_name_or_path} has no ontology in its config; pass one")
        ontology = saved_ontology
    # A new output layer only when the classes differ (ids and order); names alone do not matter.
    new_head = saved_ontology is None or saved_ontology.labels != ontology.labels
    config = HLPAudioConfig(
        ontology=ontology.to_dict(),
        post_hlp=post_hlp,
        hlp_targets=hlp_targets,
        backbone_type=saved.backbone_type,
        backbone_config={**(saved.backbone_config or {}), **overrides},
    )
    model = HLPAudioForAudioClassification.from_pretrained(
        model_name_or_path, config=config, ignore_mismatched_sizes=new_head, dtype=torch.float32
    )
    if new_head:
        _reset_output_layers(model.classifier, len(ontology))
        warnings.warn(
            f"{model_name_or_path}: its classes differ from the {len(ontology)} given ones; the output layer "
            "was re-initialised (the rest of the model keeps its pre-trained weights)"
        )
    return model, AutoFeatureExtractor.from_pretrained(model_name_or_path), ontology


def _reset_output_layers(head: torch.nn.Module, num_labels: int) -> None:
    """Re-initialise the head's output layers (those with ``num_labels`` outputs) for a new label set.

    ``ignore_mismatched_sizes`` already re-initialises them when the class count changes; with the
    same count the old weights, which score other classes, would load silently. The rest of the
    head (e.g. EfficientAT's hidden layer, AST's layer norm) keeps its pre-trained weights.
    """
    outputs = [m for m in head.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_labels]
    if not outputs:
        raise ValueError(f"the classifier head has no Linear layer with {num_labels} outputs to re-initialise")
    for layer in outputs:
        layer.reset_parameters()


@torch.no_grad()
def predict(model, loader, front_end, accelerator=None, *, progress: bool = False, desc: str = "evaluating", skipped=None):
    """Logits before post-HLP (the model's ``raw_logits``) and targets of every clip of ``loader``: two (N, C)
    float32 arrays.

    ``loader`` gives this process's batches (each clip once over all processes: see
    :func:`~hlp_audio.training.data.eval_loader`); with an ``accelerator`` the results of all processes
    are gathered, so every process returns the whole set. Clips a batch lists as ``skipped`` are
    appended to ``skipped`` (a list) when given.
    """
    from tqdm.auto import tqdm

    unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
    device = accelerator.device if accelerator is not None else next(unwrapped.parameters()).device
    was_training = model.training
    model.eval()
    logits, targets = [], []
    show = progress and (accelerator is None or accelerator.is_local_main_process)
    try:
        for batch in tqdm(loader, desc=desc, disable=not show, leave=False):
            if skipped is not None:
                skipped.extend(batch.get("skipped", ()))
            if "waveform" not in batch:  # every clip of the batch was skipped
                continue
            features = front_end(batch["waveform"].to(device, non_blocking=True))
            logits.append(model(input_values=features).raw_logits.float().cpu())
            targets.append(batch["labels"].float().cpu())
    finally:
        model.train(was_training)
    num_classes = unwrapped.config.num_labels
    logits = torch.cat(logits).numpy() if logits else np.zeros((0, num_classes), np.float32)
    targets = torch.cat(targets).numpy() if targets else np.zeros((0, num_classes), np.float32)
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        parts = gather_object([(logits, targets)])
        logits = np.concatenate([part[0] for part in parts])
        targets = np.concatenate([part[1] for part in parts])
    return logits, targets
