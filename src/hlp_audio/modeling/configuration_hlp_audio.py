"""Configuration of the HLP audio tagger: the label hierarchy travels inside ``config.json``.

This file imports only numpy, transformers and its sibling ``hierarchy_ops``, so that it is copied
to the Hub as remote code (``register_for_auto_class``) and loads where ``hlp-audio`` is not installed.
The class names live once in ``config.json``, in the ontology; ``id2label`` / ``label2id`` are derived
from them (and written only when they differ, e.g. names given by hand).
"""

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig

from .hierarchy_ops import ONTOLOGY_FORMAT, ancestor_pairs, check_ontology_dict, unique_parent_array

__all__ = ["HLPAudioConfig", "ONTOLOGY_FORMAT"]


@strict
class HLPAudioConfig(PreTrainedConfig):
    r"""Configuration of [`HLPAudioForAudioClassification`]: a backbone, a multi-label head and the label hierarchy.

    Args:
        ontology (`dict`, *optional*):
            The label hierarchy in the compact form of ``hlp_audio.Ontology.to_dict()``: ``labels`` (class ids, in
            output order), ``names`` (display names) and ``parents`` (for each class, the indices of its labelled
            parents). ``id2label`` / ``label2id`` default to the names.
            Without an ontology the classes are flat (``num_labels`` of them) and post-HLP changes nothing.
        post_hlp (`bool`, *optional*, defaults to `True`):
            Apply HLP post-processing in ``forward``: the logit of every class becomes the maximum over itself and its
            descendants along unique-parent chains, so a parent never scores below an unambiguous child.
        hlp_targets (`bool`, *optional*, defaults to `True`):
            Propagate the training labels up the same chains before the loss (idempotent on labels that are
            already propagated).
        backbone_type (`str`, *optional*, defaults to `"ast"`):
            Key of the backbone in ``modeling_hlp_audio.BACKBONES`` (``"ast"``, ``"efficientat"``, ``"passt"``,
            ``"cnn6"``, ``"convnext"``).
        backbone_config (`dict`, *optional*):
            The backbone's typed config as a dict (``ASTBackboneConfig``, ``EfficientATConfig``, ``PaSSTConfig``,
            ``CNN6Config``, ``ConvNeXtConfig``: ``BACKBONES[backbone_type].default_config(size).to_dict()``);
            missing keys take its defaults.

    ``problem_type`` is ``"multi_label_classification"``, so pipelines apply a sigmoid, never a softmax.

    Example:

    ```python
    >>> from hlp_audio import HLPAudioConfig, Ontology
    >>> ontology = Ontology.from_parents(["dog", "animal"], {"dog": ["animal"]}, names=["Dog", "Animal"])
    >>> config = HLPAudioConfig(ontology=ontology.to_dict(), backbone_config={"hidden_size": 32})
    >>> config.num_labels, config.id2label[1], config.problem_type
    (2, 'Animal', 'multi_label_classification')
    ```
    """

    model_type = "hlp_audio"

    ontology: dict | None = None
    post_hlp: bool = True
    hlp_targets: bool = True
    backbone_type: str = "ast"
    backbone_config: dict | None = None
    problem_type: str | None = "multi_label_classification"

    def __post_init__(self, **kwargs):
        if self.ontology is not None:
            self.ontology = _checked_ontology(self.ontology)
            names = _unique_names(self.ontology)
            num_labels = kwargs.get("num_labels")
            if num_labels is not None and int(num_labels) != len(names):
                raise ValueError(f"num_labels={num_labels} but the ontology has {len(names)} classes")
            if self.id2label is None:
                self.id2label = dict(enumerate(names))
            elif len(self.id2label) != len(names):
                raise ValueError(f"id2label has {len(self.id2label)} entries but the ontology has {len(names)} classes")
        if self.id2label is not None and self.label2id is None:
            self.label2id = {str(name): int(index) for index, name in self.id2label.items()}
        if not isinstance(self.backbone_type, str) or not self.backbone_type:
            raise ValueError(f"backbone_type must be a non-empty string, got {self.backbone_type!r}")
        if self.backbone_config is not None and not isinstance(self.backbone_config, dict):
            raise ValueError(
                f"backbone_config must be a dict of backbone arguments, got {type(self.backbone_config).__name__}"
            )
        if self.problem_type != "multi_label_classification":
            raise ValueError(
                f"HLPAudioConfig is a multi-label tagger: problem_type must be 'multi_label_classification', "
                f"got {self.problem_type!r}"
            )
        super().__post_init__(**kwargs)

    def to_dict(self) -> dict:
        """The config as a dict; ``id2label`` / ``label2id`` are left out when they are the ontology's names, which
        ``config.json`` then holds once (they are derived again on loading)."""
        output = super().to_dict()
        if self.ontology is not None:
            names = _unique_names(self.ontology)
            if {int(k): v for k, v in (output.get("id2label") or {}).items()} == dict(enumerate(names)) and (
                output.get("label2id") == {name: index for index, name in enumerate(names)}
            ):
                output.pop("id2label", None)
                output.pop("label2id", None)
        return output

    # ------------------------------------------------------------------ hierarchy
    @property
    def labelled_parents(self) -> list[list[int]]:
        """Labelled parents of each class (empty lists when the config has no ontology)."""
        if self.ontology is None:
            return [[] for _ in range(self.num_labels or 0)]
        return [list(row) for row in self.ontology["parents"]]

    def ancestor_pairs(self):
        """``(descendant, ancestor)`` int64 arrays of the unique-parent closure, sorted by ancestor."""
        return ancestor_pairs(unique_parent_array(self.labelled_parents))


def _checked_ontology(ontology: dict) -> dict:
    """Validate the compact ontology (the checks ``post_hlp`` relies on) and return a JSON-safe copy."""
    try:
        return check_ontology_dict(ontology)
    except ValueError as err:
        raise ValueError(f"invalid ontology: {err}") from None


def _unique_names(ontology: dict) -> list[str]:
    """Display names for ``id2label``; a name shared by several classes gets its label id appended."""
    names, labels = ontology["names"], ontology["labels"]
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return [name if counts[name] == 1 else f"{name} ({label})" for name, label in zip(names, labels)]


HLPAudioConfig.register_for_auto_class()
