"""Conversion of a transformers ``ASTForAudioClassification`` (e.g. ``MIT/ast-finetuned-audioset-10-10-0.4593``).

The AST backbone reuses transformers' ``ASTModel`` and ``ASTMLPHead`` under the same attribute names,
so the weights are copied under the ``backbone.`` prefix unchanged; with ``post_hlp=False`` the
logits are the AST's, bit for bit. The AST's own ``ASTFeatureExtractor`` is kept.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from .common import save_and_verify

__all__ = ["hlp_tagger_from_ast", "convert_ast"]

PathLike = Union[str, "os.PathLike[str]"]


def hlp_tagger_from_ast(
    model_or_path,
    ontology=None,
    *,
    post_hlp: bool = True,
    hlp_targets: bool = True,
    check_labels: bool = True,
    **from_pretrained_kwargs,
):
    """An ``HLPAudioForAudioClassification`` with the weights of an ``ASTForAudioClassification``.

    Args:
        model_or_path: the AST model, or what ``ASTForAudioClassification.from_pretrained`` accepts.
        ontology: an :class:`hlp_audio.Ontology` (or its ``to_dict()``); ``None`` means AudioSet's.
        post_hlp, hlp_targets: written to the new config.
        check_labels: require the AST's label names, in order, to equal the ontology's names.
        from_pretrained_kwargs: passed to ``ASTForAudioClassification.from_pretrained`` for a path.
    """
    from transformers import ASTForAudioClassification

    from ..modeling.configuration_hlp_audio import HLPAudioConfig
    from ..modeling.modeling_ast_backbone import ASTBackboneConfig
    from ..modeling.modeling_hlp_audio import HLPAudioForAudioClassification
    from ..ontology import Ontology

    if isinstance(model_or_path, (str, os.PathLike)):
        ast_model = ASTForAudioClassification.from_pretrained(model_or_path, **from_pretrained_kwargs)
    elif isinstance(model_or_path, ASTForAudioClassification):
        ast_model = model_or_path
    else:
        raise TypeError(f"expected an ASTForAudioClassification or a path, got {type(model_or_path).__name__}")
    if ontology is None:
        ontology = Ontology.from_audioset()
    ontology = ontology if isinstance(ontology, dict) else ontology.to_dict()
    source = ast_model.config
    if len(ontology["labels"]) != source.num_labels:
        raise ValueError(f"the AST has {source.num_labels} labels but the ontology {len(ontology['labels'])} classes")
    config = HLPAudioConfig(
        ontology=ontology,
        post_hlp=post_hlp,
        hlp_targets=hlp_targets,
        backbone_type="ast",
        backbone_config=ASTBackboneConfig.from_ast_config(source).to_dict(),
    )
    if check_labels:
        mismatched = [
            (index, source.id2label[index], config.id2label[index])
            for index in range(source.num_labels)
            if source.id2label[index] != config.id2label[index]
        ]
        if mismatched:
            shown = ", ".join(f"{i}: AST {a!r} vs ontology {b!r}" for i, a, b in mismatched[:5])
            raise ValueError(
                f"{len(mismatched)} AST labels differ from the ontology's names ({shown}); the class order must be "
                "the same (pass check_labels=False if only the names differ)"
            )
    config._attn_implementation = source._attn_implementation
    model = HLPAudioForAudioClassification(config)
    model.load_state_dict({f"backbone.{key}": tensor for key, tensor in ast_model.state_dict().items()}, strict=True)
    return model.to(dtype=ast_model.dtype).eval()


def convert_ast(
    source: PathLike,
    output_dir: PathLike,
    *,
    ontology=None,
    post_hlp: bool = True,
    hlp_targets: bool = True,
    check_labels: bool = True,
    **from_pretrained_kwargs,
) -> Path:
    """Convert a saved ``ASTForAudioClassification`` (folder or Hub id) into an HLP tagger folder.

    Writes the model (weights, config with the ontology, remote code) and the AST's own
    ``ASTFeatureExtractor`` to ``output_dir``, reloads it and checks the logits; returns its path.
    """
    from transformers import ASTFeatureExtractor

    source = os.fspath(source)
    try:
        feature_extractor = ASTFeatureExtractor.from_pretrained(source, **from_pretrained_kwargs)
    except OSError as err:
        raise FileNotFoundError(f"{source}: no ASTFeatureExtractor (preprocessor_config.json) to keep: {err}") from None
    model = hlp_tagger_from_ast(
        source,
        ontology,
        post_hlp=post_hlp,
        hlp_targets=hlp_targets,
        check_labels=check_labels,
        **from_pretrained_kwargs,
    )
    output_dir = Path(output_dir)
    probe_shape = (2, feature_extractor.max_length, feature_extractor.num_mel_bins)
    save_and_verify(model, feature_extractor, None, output_dir, probe_shape)
    return output_dir

