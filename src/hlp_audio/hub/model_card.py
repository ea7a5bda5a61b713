"""Model cards for HLP taggers: a small dataclass that fills ``hub_cards/model_card.md``.

The YAML header (license, tags, ``model-index`` with the mAP results) is written by
``huggingface_hub.ModelCardData``, so that the Hub parses it as it parses any card.

>>> card = HLPModelCard(model_name="ast-audioset-hlp", repo_id="me/ast-audioset-hlp", backbone="AST-base",
...                     results=[MAPResult("AS-HLP", post_hlp=True, value=0.47)])
>>> text = card.render()  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from .cards import render_card

__all__ = ["MAPResult", "HLPModelCard", "LABEL_SETS", "HEADLINE_MAPS", "MODEL_CARD_TEMPLATE"]

MODEL_CARD_TEMPLATE = "model_card.md"

#: The four headline figures: (reference labels, post-HLP) -> key of ``compute_hierarchical_map``'s result.
HEADLINE_MAPS = {
    ("AS-Base", False): "map",
    ("AS-Base", True): "map_post",
    ("AS-HLP", False): "map_hlp",
    ("AS-HLP", True): "map_hlp_post",
}

# The two label sets of the paper: AudioSet's original labels, and the same labels after HLP.
LABEL_SETS = {
    "AS-Base": ("as-base", "original labels"),
    "AS-HLP": ("as-hlp", "HLP-propagated labels"),
}


@dataclass
class MAPResult:
    """One mAP figure: on which labels (``"AS-Base"`` / ``"AS-HLP"``), with post-HLP on or off, and its value in [0, 1]."""

    labels: str
    post_hlp: bool
    value: float
    #: the evaluation set, as it should be named on the card (e.g. "AudioSet eval", "UrbanSound8K fold 10")
    dataset_name: str = "AudioSet eval"
    #: its number of clips, when known
    num_clips: Optional[int] = None
    split: str = "eval"
    #: where the figure comes from when it was not measured on this artifact (e.g. the original
    #: release's published mAP): written to the model-index as the result's source
    source_name: Optional[str] = None
    source_url: Optional[str] = None

    def __post_init__(self):
        if self.labels not in LABEL_SETS:
            raise ValueError(f"labels must be one of {sorted(LABEL_SETS)}, got {self.labels!r}")
        if not 0.0 <= float(self.value) <= 1.0:
            raise ValueError(f"mAP must be in [0, 1], got {self.value!r} (pass 0.459, not 45.9)")
        self.value = float(self.value)
        self.post_hlp = bool(self.post_hlp)


@dataclass
class HLPModelCard:
    """The fields of an HLP tagger's model card (``README.md`` of its Hub repository).

    Args:
        model_name: title of the card and name in ``model-index``.
        repo_id: Hub id used in the usage example (defaults to ``model_name``).
        backbone: human-readable backbone, e.g. ``"AST-base"``, ``"EfficientAT mn10"``.
        num_labels, num_edges, num_receiving: size of the label set and of its hierarchy.
        post_hlp, hlp_targets: the config flags of the checkpoint (``hlp_targets``: fine-tuning from it
            propagates the training labels).
        trained_with_hlp: whether these weights were trained on HLP-propagated labels (``None``: unknown).
        sampling_rate: the feature extractor's rate.
        results: mAP figures (:class:`MAPResult`), AS-Base / AS-HLP with post-HLP on / off.
        training: the training recipe, label -> value (data, epochs, batch size, learning rate...), in order.
        base_model: Hub id of the checkpoint the model was initialised from.
        ontology_name, license, datasets, tags: card metadata. ``license`` has no default: the licence of a
            model depends on its weights and data, and a card must not claim one by accident.
    """

    model_name: str
    backbone: str
    repo_id: Optional[str] = None
    num_labels: int = 527
    num_edges: int = 0
    num_receiving: int = 0
    post_hlp: bool = True
    hlp_targets: bool = True
    trained_with_hlp: Optional[bool] = None
    sampling_rate: int = 16000
    results: List[MAPResult] = field(default_factory=list)
    training: Dict[str, Any] = field(default_factory=dict)
    base_model: Optional[str] = None
    ontology_name: str = "AudioSet"
    license: Optional[str] = None
    datasets: List[str] = field(default_factory=list)
    tags: List[str] = field(
        default_factory=lambda: ["audio", "audio-tagging", "audioset", "hierarchical-label-propagation", "hlp-audio"]
    )

    @classmethod
    def from_model(
        cls, model, model_name: str, *, feature_extractor=None, backbone: Optional[str] = None, **fields
    ) -> "HLPModelCard":
        """Card fields read from an ``HLPAudioForAudioClassification`` (or its config) and its feature extractor."""
        import numpy as np

        config = getattr(model, "config", model)
        descendant, ancestor = config.ancestor_pairs()
        parents = config.labelled_parents
        defaults = dict(
            backbone=backbone or config.backbone_type,
            num_labels=config.num_labels,
            num_edges=sum(1 for row in parents if len(row) == 1),
            num_receiving=int(np.unique(ancestor).size),
            post_hlp=config.post_hlp,
            hlp_targets=config.hlp_targets,
        )
        if feature_extractor is not None:
            defaults["sampling_rate"] = int(feature_extractor.sampling_rate)
        defaults.update(fields)
        return cls(model_name=model_name, **defaults)

    def card_data(self):
        """The card's YAML metadata as a ``huggingface_hub.ModelCardData`` (with ``model-index``)."""
        from huggingface_hub import EvalResult, ModelCardData

        eval_results = []
        for result in self.results:
            config, description = LABEL_SETS[result.labels]
            eval_results.append(
                EvalResult(
                    task_type="audio-classification",
                    task_name="Audio tagging",
                    dataset_type=_slug(result.dataset_name),
                    dataset_name=f"{result.dataset_name} ({result.labels}: {description})",
                    dataset_config=config,
                    dataset_split=result.split,
                    metric_type="map",
                    metric_name=f"mAP (post-HLP {'on' if result.post_hlp else 'off'})",
                    metric_config="post-hlp" if result.post_hlp else "no-post-hlp",
                    metric_value=result.value,
                    source_name=result.source_name,
                    source_url=result.source_url,
                )
            )
        return ModelCardData(
            model_name=self.model_name,
            license=self.license,
            library_name="transformers",
            pipeline_tag="audio-classification",
            tags=list(self.tags),
            datasets=list(self.datasets) or None,
            base_model=self.base_model,
            metrics=["map"],
            eval_results=eval_results or None,
        )

    def render(self) -> str:
        """The card text (YAML header + markdown) from ``hub_cards/model_card.md``."""
        if not self.license:
            raise ValueError(
                f"the model card of {self.model_name} needs a licence (license=..., e.g. the training data's or the "
                "original weights'): none is assumed"
            )
        return render_card(
            MODEL_CARD_TEMPLATE,
            card_data=self.card_data().to_yaml(),
            model_name=self.model_name,
            repo_id=self.repo_id or self.model_name,
            backbone=self.backbone,
            num_labels=self.num_labels,
            num_edges=self.num_edges,
            num_receiving=self.num_receiving,
            post_hlp=self.post_hlp,
            hlp_targets=self.hlp_targets,
            trained_with_hlp=self.trained_with_hlp,
            sampling_rate=self.sampling_rate,
            results=self.results,
            training=self.training,
            base_model=self.base_model,
            ontology_name=self.ontology_name,
        )

    def save(self, folder: Union[str, "os.PathLike[str]"]) -> Path:
        """Write the card as ``folder/README.md`` (next to a saved model); returns the path."""
        path = Path(folder) / "README.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(), encoding="utf-8")
        return path


def _slug(name: str) -> str:
    """A model-index dataset type from a display name: ``"AudioSet eval"`` -> ``"audioset-eval"``."""
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split()) or "custom"
