# MIT License. Part of hlp-audio (Hierarchical Label Propagation for audio tagging).
"""hierarchical_map: mAP of a multi-label audio tagger on its original and on HLP-propagated labels.

This file is an ``evaluate`` metric script. It imports its computation from the sibling
``_hlp_core.py``, which ``evaluate`` copies together with the script (relative import). Inside the
hlp-audio package that file re-exports ``hlp_audio.metrics``; in the Hub Space it is a
self-contained bundle of the same source files, so Hub users need neither hlp-audio nor its
AudioSet downloads.

Loading:

- ``evaluate.load("hierarchical_map")`` from any working directory, offline, in a process that has
  imported ``hlp_audio``: the package writes this script into evaluate's module cache under the
  name of a canonical metric (``evaluate-metric--hierarchical_map``), where evaluate looks when a
  name is neither a local folder nor found on the Hub (see ``hlp_audio.registration``).
- ``evaluate.load(hlp_audio.hierarchical_map.MODULE_PATH)``: the script shipped in the package.
- ``from hlp_audio.hierarchical_map import HierarchicalMAP``: the class itself.
- ``evaluate.load("<namespace>/hierarchical_map")``: the Hub Space built by
  ``scripts/push_metric_space.py``, without hlp-audio.
"""

import datasets
import evaluate
import numpy as np
import pyarrow as pa

from ._hlp_core import PER_CLASS_KEYS, RESULT_KEYS, Hierarchy, MetricInputError
from ._hlp_core import compute_hierarchical_map, default_ontology

__all__ = ["HierarchicalMAP", "RESULT_KEYS", "PER_CLASS_KEYS"]

_CITATION = """\
@inproceedings{tuncay2025hlp,
  title     = {Hierarchical Label Propagation: A Model-Size-Dependent Performance Booster for AudioSet Tagging},
  author    = {Tuncay, Ludovic and Labb{\\'e}, Etienne and Pellegrini, Thomas},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  year      = {2025},
  eprint    = {2503.21826},
  archivePrefix = {arXiv}
}
@inproceedings{gemmeke2017audioset,
  title     = {Audio Set: An ontology and human-labeled dataset for audio events},
  author    = {Gemmeke, Jort F. and Ellis, Daniel P. W. and Freedman, Dylan and Jansen, Aren and
               Lawrence, Wade and Moore, R. Channing and Plakal, Manoj and Ritter, Marvin},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  year      = {2017}
}
"""

_DESCRIPTION = """\
Mean average precision (mAP) of a multi-label tagger, as reported for Hierarchical Label
Propagation (HLP) on AudioSet: on the original references ("AS-Base") and on references propagated
up the ontology ("AS-HLP"), each with and without post-HLP on the scores (every parent's score
raised to the maximum of its unambiguous descendants'). HLP propagates a label to a class's parent
only when the class has exactly one labelled parent, transitively; on AudioSet, 109 of the 527
classes can receive propagated labels, and the four mAPs are also given over those classes alone.

Average precision is exact and equal to scikit-learn's `average_precision_score` per class, ties
included. Classes without a positive reference are left out of the means and counted. The mean
ROC AUC and its d-prime (sqrt(2) * inverse normal CDF of the mean AUC, the AudioSet convention of
PANNs and AST) are returned for the original references and raw scores.

The ontology defaults to AudioSet (527 classes in the order of `class_labels_indices.csv`). Any
other one can be given when loading: `evaluate.load("hierarchical_map", ontology=...)` with an
`hlp_audio.Ontology`, its `to_dict()` mapping ({"labels": [...], "parents": [[parent indices], ...]}),
that mapping as JSON text, or the path of such a JSON file.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`array-like` of shape (N, C)): raw scores of every class for every clip, BEFORE
        post-HLP: logits or probabilities (any monotone scale gives the same result), finite. C is
        the number of classes of the ontology. With an hlp-audio tagger pass `outputs.raw_logits`
        (with the transformers `Trainer`, `eval_pred.predictions[1]`): the metric applies post-HLP
        itself for the `*_post` keys, and already post-HLP'd logits would make `map` equal `map_post`.
    references (`array-like` of shape (N, C)): the original multi-hot labels, 0 or 1. Do not
        propagate them: the metric does it for the `*_hlp*` keys.
    return_per_class (`bool`, defaults to `False`): also return the per-class values.

Returns:
    map (`float`): mAP on the original references and raw scores ("AS-Base").
    map_hlp (`float`): mAP on the HLP-propagated references and raw scores ("AS-HLP").
    map_post (`float`): mAP on the original references and post-HLP'd scores.
    map_hlp_post (`float`): mAP on the propagated references and post-HLP'd scores.
    map_receiving, map_hlp_receiving, map_post_receiving, map_hlp_post_receiving (`float`): the
        same four, averaged over the classes that can receive propagated labels only.
    auc (`float`): mean ROC AUC on the original references and raw scores.
    d_prime (`float` or `None`): sqrt(2) * inverse standard normal CDF of `auc`; `None` when `auc` is
        1 or 0 (d' is infinite, which JSON cannot hold) or undefined.
    num_samples (`int`): N.
    num_classes (`int`): C.
    num_receiving_classes (`int`): classes that can receive propagated labels.
    num_classes_without_positives (`int`): classes with no positive original reference, left out
        of `map`, `map_post` and `auc`.
    num_classes_without_positives_hlp (`int`): the same for the propagated references, left out
        of `map_hlp` and `map_hlp_post`.
    num_classes_without_negatives (`int`): classes whose references are all positive, left out of
        `auc` (their AP is 1).
    With `return_per_class=True`, lists in class order (NaN for a class left out):
    ap_per_class, ap_hlp_per_class, ap_post_per_class, ap_hlp_post_per_class (`list` of `float`),
    auc_per_class (`list` of `float`), and receiving_classes (`list` of `int`).

Examples:
    A three-class ontology where "dog" and "cat" have the unique parent "animal":

    >>> import evaluate
    >>> ontology = {"labels": ["animal", "dog", "cat"], "parents": [[], [0], [0]]}
    >>> metric = evaluate.load("hierarchical_map", ontology=ontology)
    >>> results = metric.compute(
    ...     predictions=[[0.2, 0.9, 0.1], [0.6, 0.2, 0.7], [0.4, 0.3, 0.2], [0.1, 0.6, 0.3], [0.5, 0.1, 0.4]],
    ...     references=[[0, 1, 0], [1, 0, 1], [0, 0, 0], [0, 0, 1], [0, 0, 0]],
    ... )
    >>> [round(results[key], 4) for key in ("map", "map_hlp", "map_post", "map_hlp_post")]
    [0.9444, 0.8444, 0.7778, 0.9444]
    >>> results["num_receiving_classes"], results["num_classes_without_positives"]
    (1, 0)

    Batches can be added one at a time; per-class values on request:

    >>> batches = [
    ...     ([[0.2, 0.9, 0.1], [0.6, 0.2, 0.7], [0.4, 0.3, 0.2]], [[0, 1, 0], [1, 0, 1], [0, 0, 0]]),
    ...     ([[0.1, 0.6, 0.3], [0.5, 0.1, 0.4]], [[0, 0, 1], [0, 0, 0]]),
    ... ]
    >>> for scores, labels in batches:
    ...     metric.add_batch(predictions=scores, references=labels)
    >>> results = metric.compute(return_per_class=True)
    >>> [round(ap, 4) for ap in results["ap_hlp_per_class"]]
    [0.7, 1.0, 0.8333]
"""


def _dense_rows(values, dtype):
    """A numpy array or torch tensor as a 2-D numpy array of ``dtype``; None for anything else."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor, without importing torch
        values = values.detach().cpu()
        if str(values.dtype) in ("torch.float16", "torch.bfloat16"):  # exact in float32; numpy has no bfloat16
            values = values.float()
        values = values.numpy()
    if not isinstance(values, np.ndarray) or values.ndim != 2:
        return None
    return values.astype(dtype, copy=False)


def _rows_as_arrow(values: np.ndarray) -> pa.Array:
    """(N, C) array as an Arrow list array, without a Python object per value."""
    num_rows, num_columns = values.shape
    offsets = np.arange(0, (num_rows + 1) * num_columns, num_columns, dtype=np.int64)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values.reshape(-1)))


def _rows_as_numpy(column, what: str):
    """A list column (Arrow, as the metric reads its cache) as an (N, C) numpy array; other inputs unchanged."""
    if isinstance(column, pa.ChunkedArray):
        column = pa.concat_arrays(column.chunks) if column.num_chunks else pa.array([], type=column.type)
    if not isinstance(column, pa.Array):
        return column
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise MetricInputError(f"{what}: row {row} is missing (None)")
    lengths = pa.compute.list_value_length(column).to_numpy(zero_copy_only=False)
    if lengths.size and np.any(lengths != lengths[0]):
        row = int(np.flatnonzero(lengths != lengths[0])[0])
        raise MetricInputError(
            f"{what}: every row must have the same number of classes; "
            f"row 0 has {lengths[0]}, row {row} has {lengths[row]}"
        )
    values = column.flatten()
    if values.null_count:
        raise MetricInputError(f"{what}: a class value is missing (None)")
    return values.to_numpy(zero_copy_only=False).reshape(len(column), int(lengths[0]) if lengths.size else 0)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class HierarchicalMAP(evaluate.Metric):
    """mAP on original and HLP-propagated labels, with and without post-HLP (see the module description).

    Args:
        ontology: the label hierarchy; AudioSet when omitted. An ``hlp_audio.Ontology``, its
            ``to_dict()`` mapping, that mapping as JSON text, or the path of such a JSON file.
            Passed through ``evaluate.load("hierarchical_map", ontology=...)``.
        All other arguments are those of ``evaluate.Metric``.
    """

    def __init__(self, config_name=None, ontology=None, **kwargs):
        super().__init__(config_name=config_name, **kwargs)
        # resolved (and checked) now: a bad ontology fails when the metric is loaded, not at compute
        self.hierarchy = Hierarchy.from_ontology(default_ontology() if ontology is None else ontology)

    def _info(self):
        info = evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    # float64 holds float32 and float64 scores exactly: ties are never created
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    # float64 too, so that any non-binary value reaches the metric's own check unchanged
                    "references": datasets.Sequence(datasets.Value("float64")),
                }
            ),
            reference_urls=[
                "https://arxiv.org/abs/2503.21826",
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.average_precision_score.html",
            ],
        )
        # Read the cached columns as Arrow and densify them in _compute: exact (datasets' numpy
        # formatter turns float64 into float32, which can create ties) and zero-copy. MetricInfo
        # only accepts a format for scalar features, hence the assignment after construction.
        info.format = "arrow"
        return info

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of predictions and references (see the inputs description).

        Numpy arrays and torch tensors (any device) are written to the metric's cache as Arrow arrays
        directly, not value by value: a (20371, 527) batch then takes milliseconds, not seconds.
        Other inputs (lists) take evaluate's generic path.
        """
        dense_predictions = _dense_rows(predictions, np.float64)
        dense_references = _dense_rows(references, np.float64)
        if kwargs or dense_predictions is None or dense_references is None:
            return super().add_batch(predictions=predictions, references=references, **kwargs)
        if dense_predictions.shape != dense_references.shape:
            raise MetricInputError(
                f"predictions {dense_predictions.shape} and references {dense_references.shape} must have the same "
                "shape (samples, classes)"
            )
        if self.writer is None:  # as evaluate's add_batch does on its first batch
            self.selected_feature_format = self._infer_feature_from_batch(
                {"predictions": dense_predictions[:1], "references": dense_references[:1]}
            )
            self._init_writer()
        self.writer.write_batch(
            {"predictions": _rows_as_arrow(dense_predictions), "references": _rows_as_arrow(dense_references)}
        )

    def _compute(self, predictions=None, references=None, return_per_class=False):
        return compute_hierarchical_map(
            _rows_as_numpy(predictions, "predictions"),
            _rows_as_numpy(references, "references"),
            self.hierarchy,
            return_per_class=return_per_class,
        )

