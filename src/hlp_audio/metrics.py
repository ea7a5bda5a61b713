"""The hierarchical mAP: mAP on the original and on HLP-propagated labels, with and without post-HLP.

Pure numpy (torch tensors are accepted as inputs); no Hugging Face import. The ``evaluate`` module
``hierarchical_map`` is a thin wrapper around :func:`compute_hierarchical_map`. Per-class average
precision is exact (:mod:`hlp_audio.average_precision`). Post-HLP changes only the receiving
classes' scores and propagation adds positives only in receiving classes, so the other classes are
ranked once for all four mAPs, and each score matrix is ranked once for both label sets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np

from .average_precision import MetricInputError, _check_references, _check_scores, _class_statistics, _Ranks, d_prime
from .average_precision import average_precision, roc_auc
from .modeling.hierarchy_ops import AncestorMax, ancestor_pairs, check_ontology_dict, unique_parent_array

__all__ = [
    "MetricInputError",
    "average_precision",
    "roc_auc",
    "d_prime",
    "compute_hierarchical_map",
    "Hierarchy",
    "RESULT_KEYS",
    "PER_CLASS_KEYS",
]

#: Keys of :func:`compute_hierarchical_map`'s result, in order.
RESULT_KEYS: Tuple[str, ...] = (
    "map",
    "map_hlp",
    "map_post",
    "map_hlp_post",
    "map_receiving",
    "map_hlp_receiving",
    "map_post_receiving",
    "map_hlp_post_receiving",
    "auc",
    "d_prime",
    "num_samples",
    "num_classes",
    "num_receiving_classes",
    "num_classes_without_positives",
    "num_classes_without_positives_hlp",
    "num_classes_without_negatives",
)

#: Extra keys returned with ``return_per_class=True``.
PER_CLASS_KEYS: Tuple[str, ...] = (
    "ap_per_class",
    "ap_hlp_per_class",
    "ap_post_per_class",
    "ap_hlp_post_per_class",
    "auc_per_class",
    "receiving_classes",
)

# ---------------------------------------------------------------------------- hierarchy
@dataclass(frozen=True)
class Hierarchy:
    """What the hierarchical mAP needs of an ontology: its size, the receiving classes and the HLP plan.

    Build it with :meth:`from_ontology`; :func:`compute_hierarchical_map` accepts it wherever it
    accepts an ontology, so a metric resolves its ontology (and builds its plan) once.
    """

    num_classes: int
    receiving: np.ndarray  # classes that can receive propagated labels, ascending
    ancestor_max: AncestorMax  # the max over the lookup table (post-HLP, and propagation of dense labels)

    @classmethod
    def from_pairs(cls, num_classes: int, descendant, ancestor) -> "Hierarchy":
        """From the (descendant, ancestor) pairs of the lookup table."""
        descendant = np.asarray(descendant, dtype=np.int64)
        ancestor = np.asarray(ancestor, dtype=np.int64)
        return cls(num_classes, np.unique(ancestor), AncestorMax(descendant, ancestor))

    @classmethod
    def from_ontology(cls, ontology) -> "Hierarchy":
        """From an ``hlp_audio.Ontology``, its ``to_dict()`` mapping, that mapping as JSON text, or a JSON file path."""
        if isinstance(ontology, Hierarchy):
            return ontology
        if isinstance(ontology, (str, os.PathLike)):
            text = os.fspath(ontology)
            if not text.lstrip().startswith("{"):
                if not os.path.isfile(text):
                    raise MetricInputError(f"ontology: {text!r} is neither JSON text nor an existing JSON file")
                with open(text, encoding="utf-8") as handle:
                    text = handle.read()
            try:
                ontology = json.loads(text)
            except json.JSONDecodeError as err:
                raise MetricInputError(f"ontology: invalid JSON ({err})") from None
        if isinstance(ontology, Mapping):
            return cls._from_dict(ontology)
        if hasattr(ontology, "ancestor_max") and hasattr(ontology, "receiving"):  # an hlp_audio.Ontology
            return cls(len(ontology), np.asarray(ontology.receiving, dtype=np.int64), ontology.ancestor_max)
        raise MetricInputError(
            "ontology must be an hlp_audio.Ontology, its to_dict() mapping, that mapping as JSON text, "
            f"or the path of such a JSON file; got {type(ontology).__name__}"
        )

    @classmethod
    def _from_dict(cls, data: Mapping) -> "Hierarchy":
        try:
            checked = check_ontology_dict(dict(data))
        except (ValueError, TypeError) as err:
            raise MetricInputError(f"ontology dict: {err}") from None
        return cls.from_pairs(len(checked["labels"]), *ancestor_pairs(unique_parent_array(checked["parents"])))


# ---------------------------------------------------------------------------- hierarchical mAP
def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _replace(base: np.ndarray, columns: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = base.copy()
    out[columns] = values
    return out


def compute_hierarchical_map(
    predictions,
    references,
    ontology,
    *,
    return_per_class: bool = False,
) -> Dict[str, Any]:
    """mAP on the original and on HLP-propagated references, with and without post-HLP on the scores.

    Args:
        predictions: (N, C) scores, logits or probabilities (numpy array or torch tensor), C the
            number of classes of ``ontology``.
        references: (N, C) multi-hot references (bool or 0/1), the original labels.
        ontology: an :class:`hlp_audio.Ontology`, its ``to_dict()`` mapping, that mapping as JSON
            text, the path of such a JSON file, or a :class:`Hierarchy`.
        return_per_class: also return the per-class arrays (lists, NaN for excluded classes).

    Returns:
        A dict with the keys of :data:`RESULT_KEYS` (and :data:`PER_CLASS_KEYS`): ``map`` (AS-Base),
        ``map_hlp`` (AS-HLP: references propagated), ``map_post`` (scores post-HLP'd),
        ``map_hlp_post`` (both), the same four over the receiving classes only (``*_receiving``),
        ``auc`` / ``d_prime`` (mean ROC AUC on the original references and raw scores, and its
        d-prime: ``None`` when the mean AUC is 0 or 1, where d' is infinite, or undefined), and
        counts. Means leave out classes without positives.

    Post-HLP changes only the receiving classes' scores and propagation adds positives only in
    receiving classes, so the other classes' APs are computed once and shared by all four means;
    each score matrix is ranked once and serves both label sets.
    """
    hierarchy = Hierarchy.from_ontology(ontology)
    scores = _check_scores(predictions)
    positive = _check_references(references, scores.shape)
    num_samples, num_classes = scores.shape
    if num_classes != hierarchy.num_classes:
        raise MetricInputError(
            f"predictions have {num_classes} classes but the ontology has {hierarchy.num_classes}; "
            f"got predictions of shape {scores.shape}"
        )
    receiving = hierarchy.receiving
    post_hlp = hierarchy.ancestor_max
    receiving_index = np.full(num_classes, -1, dtype=np.int64)
    receiving_index[receiving] = np.arange(receiving.size)

    # Positives as flat positions of the class-major (C, N) layout: class * N + sample.
    samples, classes = np.nonzero(positive)
    positions = classes * num_samples + samples
    # Propagation adds positives only in the receiving classes.
    hlp_samples, hlp_index = np.nonzero(post_hlp(positive)[:, receiving])
    hlp_classes = receiving[hlp_index]
    hlp_positions = hlp_classes * num_samples + hlp_samples

    # Raw scores, ranked once for both label sets (base positives outside the receiving classes,
    # propagated ones inside, which include the base ones there).
    scores_by_class = np.ascontiguousarray(scores.T)
    outside = receiving_index[classes] < 0
    ranks = _Ranks.of(
        scores_by_class,
        np.concatenate([classes[outside], hlp_classes]),
        np.concatenate([positions[outside], hlp_positions]),
    )
    base = _class_statistics(ranks, classes, positions, num_samples, num_classes)
    hlp = _class_statistics(ranks, hlp_classes, hlp_positions, num_samples, num_classes)

    # Post-HLP'd scores differ only in the receiving classes: rank those once for both label sets.
    # The HLP kernel takes the class axis last: give it the (N, C) view of the class-major copy.
    post_by_class = np.ascontiguousarray(post_hlp(scores_by_class.T).T[receiving])
    post_hlp_positions = hlp_index * num_samples + hlp_samples
    post_ranks = _Ranks.of(post_by_class, hlp_index, post_hlp_positions)
    inside = ~outside
    post_base_index = receiving_index[classes[inside]]
    post = _class_statistics(
        post_ranks, post_base_index, post_base_index * num_samples + samples[inside], num_samples, receiving.size
    )
    hlp_post = _class_statistics(post_ranks, hlp_index, post_hlp_positions, num_samples, receiving.size)

    ap = base.average_precision
    ap_hlp = _replace(ap, receiving, hlp.average_precision[receiving])
    ap_post = _replace(ap, receiving, post.average_precision)
    ap_hlp_post = _replace(ap, receiving, hlp_post.average_precision)
    mean_auc = _mean(base.roc_auc)
    result: Dict[str, Any] = {
        "map": _mean(ap),
        "map_hlp": _mean(ap_hlp),
        "map_post": _mean(ap_post),
        "map_hlp_post": _mean(ap_hlp_post),
        "map_receiving": _mean(ap[receiving]),
        "map_hlp_receiving": _mean(ap_hlp[receiving]),
        "map_post_receiving": _mean(ap_post[receiving]),
        "map_hlp_post_receiving": _mean(ap_hlp_post[receiving]),
        "auc": mean_auc,
        # JSON has no infinity: at a mean AUC of 0 or 1 (or none at all) d' is null, never inf or NaN
        "d_prime": float(d_prime(mean_auc)) if 0.0 < mean_auc < 1.0 else None,
        "num_samples": int(num_samples),
        "num_classes": int(num_classes),
        "num_receiving_classes": int(receiving.size),
        "num_classes_without_positives": int(np.count_nonzero(base.num_positives == 0)),
        "num_classes_without_positives_hlp": int(
            np.count_nonzero(_replace(base.num_positives, receiving, hlp.num_positives[receiving]) == 0)
        ),
        "num_classes_without_negatives": int(np.count_nonzero(base.num_positives == num_samples)),
    }
    if return_per_class:
        result.update(
            ap_per_class=ap.tolist(),
            ap_hlp_per_class=ap_hlp.tolist(),
            ap_post_per_class=ap_post.tolist(),
            ap_hlp_post_per_class=ap_hlp_post.tolist(),
            auc_per_class=base.roc_auc.tolist(),
            receiving_classes=receiving.tolist(),
        )
    return result
