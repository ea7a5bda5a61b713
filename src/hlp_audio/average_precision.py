"""Exact multi-label ranking metrics: average precision, ROC AUC and d-prime, per class.

Pure numpy (torch tensors are accepted as inputs); no Hugging Face import. The hierarchical mAP
(:mod:`hlp_audio.metrics`) and the ``evaluate`` module ``hierarchical_map`` are built on these.

Definitions (identical to scikit-learn, ties included):

- average precision of one class, ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct score
  thresholds in decreasing order, which is ``1/P * sum over positives p of TP(>= s_p) / ALL(>= s_p)``:
  the precision at the end of the tie group of each positive, averaged over the positives;
- ROC AUC of one class, the Mann-Whitney statistic with ties counted one half;
- d-prime, ``sqrt(2) * Phi^-1(AUC)`` (the AudioSet convention of PANNs and AST).

A class without positive references has no AP (NaN in per-class arrays); it is left out of every
mean and counted. ROC AUC also needs a negative.

How it is fast without a full sort (numpy's sort is not vectorised here: ~30 ns per value). Only
the rank of each *positive* entry within its class is needed: how many entries of the class are
>= and > it. Each class's scores are mapped to 16-bit codes by a monotone affine map of the window
spanned by its positives' scores (lower scores share code 0, higher ones the top codes), and every
class is ordered by code with numpy's O(n) radix sort for 16-bit keys. Entries with a larger code
are larger; only the entries that share a code with a positive are compared exactly. With
realistic scores they are about as many as the positives; with heavy ties there are more, and the
result stays exact. One ranking of a score matrix serves every label set (see ``_Ranks``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Tuple

import numpy as np

try:  # torch tensors are accepted but never required
    import torch
except ImportError:  # pragma: no cover - torch is a dependency of hlp-audio, optional in the Space
    torch = None

__all__ = ["MetricInputError", "average_precision", "roc_auc", "d_prime"]

_CODE_BITS = 16  # numpy sorts 16-bit integers with a radix sort when kind="stable"


class MetricInputError(ValueError):
    """Scores or references that cannot be evaluated: shapes, non-binary labels, NaN or inf."""


# ---------------------------------------------------------------------------- input checks
def _to_numpy(values, what: str) -> np.ndarray:
    if torch is not None and isinstance(values, torch.Tensor):
        values = values.detach()
        if values.dtype in (torch.bfloat16, torch.float16):
            values = values.float()  # exact; numpy has no bfloat16
        return values.cpu().numpy()
    if isinstance(values, np.ndarray):
        return values
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as err:
        raise MetricInputError(f"{what} cannot be read as an array: {err}") from None


def _check_scores(scores, what: str = "predictions") -> np.ndarray:
    """(N, C) float32 or float64 array of finite scores (logits or probabilities)."""
    scores = _to_numpy(scores, what)
    if scores.ndim != 2:
        raise MetricInputError(
            f"{what} must have shape (N, C) (samples, classes); got shape {scores.shape}"
            + ("; use .reshape(-1, 1) for a single class" if scores.ndim == 1 else "")
        )
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise MetricInputError(f"{what} must hold at least one sample and one class; got shape {scores.shape}")
    if scores.dtype == np.float16:
        scores = scores.astype(np.float32)  # exact
    elif scores.dtype not in (np.float32, np.float64):
        if not (np.issubdtype(scores.dtype, np.number) or scores.dtype == bool) or np.issubdtype(
            scores.dtype, np.complexfloating
        ):
            raise MetricInputError(f"{what} must be real numbers, got dtype {scores.dtype}")
        scores = scores.astype(np.float64)
    finite = np.isfinite(scores)
    if not finite.all():
        row, column = np.argwhere(~finite)[0]
        raise MetricInputError(
            f"{what} must be finite: found {scores[row, column]} at (row {row}, class {column})"
        )
    return scores


def _check_references(references, shape: Tuple[int, int], what: str = "references") -> np.ndarray:
    """(N, C) bool multi-hot array with the same shape as the scores."""
    references = _to_numpy(references, what)
    if references.shape != shape:
        raise MetricInputError(
            f"{what} must have the shape of the predictions {shape} (samples, classes); got {references.shape}"
        )
    if references.dtype == bool:
        return references
    if not np.issubdtype(references.dtype, np.number) or np.issubdtype(references.dtype, np.complexfloating):
        raise MetricInputError(f"{what} must be multi-hot 0/1 values, got dtype {references.dtype}")
    positive = references == 1
    bad = ~(positive | (references == 0))
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise MetricInputError(
            f"{what} must be binary (0 or 1): found {references[row, column]} at (row {row}, class {column})"
        )
    return positive


# ---------------------------------------------------------------------------- ranking
def _counts_at_least(segment: np.ndarray, value: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """For each entry i: how many entries of its segment have a value >= value[i], and > value[i].

    One lexsort by (segment, value), then the bounds of each tie group and of each segment.
    """
    size = segment.size
    order = np.lexsort((value, segment))
    sorted_segment, sorted_value = segment[order], value[order]
    segment_starts = np.empty(size, dtype=bool)
    segment_starts[:1] = True
    np.not_equal(sorted_segment[1:], sorted_segment[:-1], out=segment_starts[1:])
    group_starts = segment_starts.copy()
    group_starts[1:] |= sorted_value[1:] != sorted_value[:-1]
    index = np.arange(size)
    group_first = np.maximum.accumulate(np.where(group_starts, index, 0))
    # the end (exclusive) of a group or segment is the start of the next one
    group_stop = np.minimum.accumulate(np.where(np.r_[group_starts[1:], True], index + 1, size)[::-1])[::-1]
    segment_stop = np.minimum.accumulate(np.where(np.r_[segment_starts[1:], True], index + 1, size)[::-1])[::-1]
    at_least = np.empty(size, dtype=np.int64)
    above = np.empty(size, dtype=np.int64)
    at_least[order] = segment_stop - group_first
    above[order] = segment_stop - group_stop
    return at_least, above


_CODE_MAX = 2**_CODE_BITS - 1
_WINDOW = _CODE_MAX - 3  # a class's window [low, high] maps onto codes 1 .. _WINDOW + 1 (65533)


def _window_codes(scores_by_class: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """16-bit codes, non-decreasing in the score within each class (row).

    A class's window [low, high] maps affinely onto codes 1 .. 65533, lower scores onto 0, higher
    ones onto 65534-65535. Every step (cast to float32, subtraction, scaling, rounding) is
    monotone, so a larger code always means a strictly larger score, and equal codes are resolved
    exactly by the caller; overflow only saturates.
    """
    bound = max(float(np.max(np.abs(low), initial=0)), float(np.max(np.abs(high), initial=0)))
    # float32 arithmetic halves the memory traffic; float64 when the window itself would overflow it
    work = np.float32 if bound < float(np.finfo(np.float32).max) / 4 else np.float64
    span = high.astype(np.float64) - low.astype(np.float64)
    with np.errstate(divide="ignore", over="ignore"):
        scale = np.where(span > 0, _WINDOW / np.where(span > 0, span, 1.0), 1.0)
    scale = np.minimum(scale, np.finfo(work).max).astype(work)[:, None]
    with np.errstate(over="ignore", invalid="ignore"):
        position = np.subtract(scores_by_class, low.astype(work)[:, None], dtype=work)
        position *= scale
    position += 1
    np.clip(position, 0, _CODE_MAX, out=position)
    return position.astype(np.uint16)


def _rank_entries(
    scores_by_class: np.ndarray, classes: np.ndarray, positions: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """For given entries of a (C, N) class-major score matrix: the entries of their class >= them, and > them.

    ``positions`` are flat (``class * N + sample``), unique, ``classes`` their classes; pass the
    positives of every label set evaluated on these scores at once. Each class is ranked by 16-bit
    window codes (one radix sort); entries with a larger code are larger, and only the runs of
    entries that share a code with a queried entry are compared exactly.
    """
    num_classes, num_samples = scores_by_class.shape
    if num_classes >= 2 ** (32 - _CODE_BITS):
        raise MetricInputError(f"at most {2 ** (32 - _CODE_BITS) - 1} classes are supported; got {num_classes}")
    values = scores_by_class.reshape(-1)
    query_values = values[positions]
    # Each class's window spans its queried scores, so the codes resolve them finely.
    low = np.full(num_classes, np.inf, dtype=values.dtype)
    high = np.full(num_classes, -np.inf, dtype=values.dtype)
    np.minimum.at(low, classes, query_values)
    np.maximum.at(high, classes, query_values)
    unqueried = low > high
    low[unqueried] = high[unqueried] = 0
    codes = _window_codes(scores_by_class, low, high)
    order = np.argsort(codes, axis=1, kind="stable")  # a radix sort for 16-bit keys
    order += (np.arange(num_classes, dtype=order.dtype) * num_samples)[:, None]
    order = order.reshape(-1)  # flat positions, each class's entries by increasing code
    codes = codes.reshape(-1)
    class_bits = (np.arange(num_classes, dtype=np.uint32) << np.uint32(_CODE_BITS))[:, None]
    sorted_class_codes = (codes[order].reshape(num_classes, num_samples) | class_bits).reshape(-1)

    # Entries with a larger code are larger; the run of entries sharing a code is compared exactly.
    query_class_code = (classes.astype(np.uint32) << np.uint32(_CODE_BITS)) | codes[positions]
    run_class_code, query_run = np.unique(query_class_code, return_inverse=True)
    query_run = query_run.reshape(-1)
    run_first = np.searchsorted(sorted_class_codes, run_class_code, "left")
    run_stop = np.searchsorted(sorted_class_codes, run_class_code, "right")
    class_stop = ((run_class_code >> np.uint32(_CODE_BITS)).astype(np.int64) + 1) * num_samples
    larger_code = (class_stop - run_stop)[query_run]

    run_size = run_stop - run_first
    run_offset = np.zeros(run_class_code.size + 1, dtype=np.int64)
    np.cumsum(run_size, out=run_offset[1:])
    member_run = np.repeat(np.arange(run_class_code.size), run_size)
    member_position = order[np.arange(run_offset[-1]) + (run_first - run_offset[:-1])[member_run]]
    member_at_least, member_above = _counts_at_least(member_run, values[member_position])
    # A queried entry is a member of its run; a run's members come by increasing position (stable sort).
    slot = np.searchsorted(member_run * values.size + member_position, query_run * values.size + positions)
    return larger_code + member_at_least[slot], larger_code + member_above[slot]


@dataclass
class _Ranks:
    """Ranks of the positives of one or more label sets on one score matrix, looked up by position."""

    positions: np.ndarray  # sorted flat positions
    values: np.ndarray
    at_least: np.ndarray  # entries of the class >= the entry
    above: np.ndarray  # entries of the class > the entry

    @classmethod
    def of(cls, scores_by_class: np.ndarray, classes: np.ndarray, positions: np.ndarray) -> "_Ranks":
        order = np.argsort(positions)
        classes, positions = classes[order], positions[order]
        at_least, above = _rank_entries(scores_by_class, classes, positions)
        return cls(positions, scores_by_class.reshape(-1)[positions], at_least, above)

    def lookup(self, positions: np.ndarray):
        slot = np.searchsorted(self.positions, positions)
        return self.values[slot], self.at_least[slot], self.above[slot]


@dataclass
class _ClassStatistics:
    average_precision: np.ndarray  # (C,) float64, NaN without positives
    roc_auc: np.ndarray  # (C,) float64, NaN without positives or without negatives
    num_positives: np.ndarray  # (C,) int64


def _class_statistics(
    ranks: _Ranks, classes: np.ndarray, positions: np.ndarray, num_samples: int, num_classes: int
) -> _ClassStatistics:
    """AP and ROC AUC of every class from its positive entries (flat ``positions``, all in ``ranks``)."""
    num_positives = np.bincount(classes, minlength=num_classes)
    num_negatives = num_samples - num_positives
    if positions.size == 0:
        nan = np.full(num_classes, np.nan)
        return _ClassStatistics(nan, nan.copy(), num_positives)
    values, all_at_least, all_above = ranks.lookup(positions)
    positives_at_least, positives_above = _counts_at_least(classes, values)
    negatives_at_least = all_at_least - positives_at_least
    negatives_tied = negatives_at_least - (all_above - positives_above)
    negatives_below = num_negatives[classes] - negatives_at_least
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.bincount(classes, weights=positives_at_least / all_at_least, minlength=num_classes) / num_positives
        wins = np.bincount(classes, weights=negatives_below + 0.5 * negatives_tied, minlength=num_classes)
        auc = wins / (num_positives * num_negatives.astype(np.float64))
    ap[num_positives == 0] = np.nan
    auc[(num_positives == 0) | (num_negatives == 0)] = np.nan
    return _ClassStatistics(ap, auc, num_positives)


def _statistics(scores: np.ndarray, positive: np.ndarray) -> _ClassStatistics:
    num_samples, num_classes = scores.shape
    samples, classes = np.nonzero(positive)
    positions = classes * num_samples + samples
    ranks = _Ranks.of(np.ascontiguousarray(scores.T), classes, positions)
    return _class_statistics(ranks, classes, positions, num_samples, num_classes)


# ---------------------------------------------------------------------------- public metrics
def average_precision(scores, references) -> np.ndarray:
    """Average precision of each class, equal to ``sklearn.metrics.average_precision_score`` per column.

    Args:
        scores: (N, C) scores, logits or probabilities (numpy array or torch tensor).
        references: (N, C) multi-hot references (bool, or 0/1 numbers).

    Returns:
        (C,) float64 array; NaN for a class without positive references.

    >>> average_precision([[0.9, 0.1], [0.4, 0.8], [0.4, 0.3]], [[1, 0], [0, 1], [1, 0]]).round(4).tolist()
    [0.8333, 1.0]
    """
    scores = _check_scores(scores, "scores")
    positive = _check_references(references, scores.shape)
    return _statistics(scores, positive).average_precision


def roc_auc(scores, references) -> np.ndarray:
    """Area under the ROC curve of each class, equal to ``sklearn.metrics.roc_auc_score`` per column.

    Returns a (C,) float64 array; NaN for a class without positive or without negative references.
    """
    scores = _check_scores(scores, "scores")
    positive = _check_references(references, scores.shape)
    return _statistics(scores, positive).roc_auc


_STANDARD_NORMAL = statistics.NormalDist()


def d_prime(auc):
    """``sqrt(2) * Phi^-1(auc)``: the sensitivity index that PANNs and AST report next to mAP.

    Works on a float or an array (NaN stays NaN; AUC 1 and 0 give +inf and -inf). AudioSet papers
    apply it to the mean AUC over classes.
    """
    values = np.asarray(auc, dtype=np.float64)
    if np.any((values < 0) | (values > 1)):
        raise MetricInputError(f"AUC values must lie in [0, 1]; got {values[(values < 0) | (values > 1)][:5]}")
    out = np.full(values.shape, np.nan)
    inside = (values > 0) & (values < 1)
    out[inside] = [_STANDARD_NORMAL.inv_cdf(float(v)) * math.sqrt(2.0) for v in values[inside]]
    out[values == 1] = np.inf
    out[values == 0] = -np.inf
    return float(out) if out.ndim == 0 else out
