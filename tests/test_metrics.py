"""hlp_audio.metrics: exact AP / ROC AUC / d-prime against scikit-learn and scipy, and the hierarchical mAP."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from hlp_audio import Ontology, load_segments, propagate_labels, propagate_scores
from hlp_audio.average_precision import _window_codes
from hlp_audio.metrics import (
    PER_CLASS_KEYS,
    RESULT_KEYS,
    Hierarchy,
    MetricInputError,
    average_precision,
    compute_hierarchical_map,
    d_prime,
    roc_auc,
)


def sklearn_ap(scores, references):
    """Per-class sklearn AP; NaN for a class without positives (sklearn warns and returns 0 there)."""
    scores, references = np.asarray(scores), np.asarray(references)
    return np.array(
        [
            average_precision_score(references[:, c], scores[:, c]) if references[:, c].any() else np.nan
            for c in range(scores.shape[1])
        ]
    )


def sklearn_auc(scores, references):
    scores, references = np.asarray(scores), np.asarray(references)
    return np.array(
        [
            roc_auc_score(references[:, c], scores[:, c]) if 0 < references[:, c].sum() < len(references) else np.nan
            for c in range(scores.shape[1])
        ]
    )


def assert_matches(ours, reference, atol=1e-12):
    ours, reference = np.asarray(ours), np.asarray(reference)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(reference))
    np.testing.assert_allclose(ours[~np.isnan(ours)], reference[~np.isnan(reference)], rtol=0, atol=atol)


def random_case(rng, kind):
    num_samples, num_classes = int(rng.integers(2, 400)), int(rng.integers(1, 12))
    references = rng.random((num_samples, num_classes)) < rng.uniform(0.02, 0.6)
    if kind == "normal64":
        scores = rng.standard_normal((num_samples, num_classes))
    elif kind == "probabilities32":
        scores = rng.random((num_samples, num_classes), dtype=np.float32)
    elif kind == "few_levels":  # heavy ties, within and across positives and negatives
        scores = rng.integers(0, 4, (num_samples, num_classes)).astype(np.float64) / 3
    elif kind == "signed_zeros":  # -0.0 and +0.0 must tie
        scores = rng.choice(np.array([-1.5, -0.0, 0.0, 2.0], dtype=np.float32), (num_samples, num_classes))
    elif kind == "tiny_spread":  # values closer than the 16-bit code resolution
        scores = 1.0 + rng.integers(0, 50, (num_samples, num_classes)) * np.finfo(np.float64).eps
    else:  # magnitudes from subnormal to near overflow, both signs
        exponents = rng.uniform(-40, 38, (num_samples, num_classes))
        scores = (rng.choice([-1.0, 1.0], (num_samples, num_classes)) * 10.0**exponents).astype(np.float32)
    return scores, references


@pytest.mark.parametrize(
    "kind", ["normal64", "probabilities32", "few_levels", "signed_zeros", "tiny_spread", "extreme_magnitudes"]
)
def test_average_precision_and_auc_equal_sklearn(kind):
    rng = np.random.default_rng(abs(hash(kind)) % 2**32)
    for _ in range(12):
        scores, references = random_case(rng, kind)
        assert_matches(average_precision(scores, references), sklearn_ap(scores, references))
        assert_matches(roc_auc(scores, references), sklearn_auc(scores, references))


def test_ties_quantised_to_256_levels_on_real_labels(audioset_ontology, audioset_dir):
    labels = load_segments(["eval"], audioset_ontology, audioset_dir=audioset_dir)["eval"].labels[:3000]
    references = np.zeros((len(labels), len(audioset_ontology)), dtype=bool)
    offsets = labels.offsets.to_numpy() - labels.offsets.to_numpy()[0]
    references[np.repeat(np.arange(len(labels)), np.diff(offsets)), labels.values.to_numpy()[: offsets[-1]]] = True
    rng = np.random.default_rng(0)
    scores = 1 / (1 + np.exp(-(rng.standard_normal(references.shape) - 3 + 2.5 * references)))
    quantised = (np.round(scores * 255) / 255).astype(np.float32)
    columns = slice(0, 527, 7)  # sklearn is slow: every 7th class
    expected = sklearn_ap(quantised[:, columns], references[:, columns])
    assert_matches(average_precision(quantised, references)[columns], expected)


def test_classes_without_positives_are_nan_and_single_row():
    scores = np.array([[0.3, 0.9, 0.1]])
    references = np.array([[1, 0, 0]])
    assert_matches(average_precision(scores, references), sklearn_ap(scores, references))
    assert_matches(average_precision(scores, references), [1.0, np.nan, np.nan])
    assert np.isnan(roc_auc(scores, references)).all()  # one row: no class has both positives and negatives
    all_positive = average_precision(np.array([[0.1], [0.1], [0.5]]), np.array([[1], [1], [1]]))
    assert all_positive.tolist() == [1.0]


def test_torch_and_integer_inputs_match_numpy():
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((64, 5)).astype(np.float32)
    references = rng.random((64, 5)) < 0.3
    expected = sklearn_ap(scores, references)
    assert_matches(average_precision(torch.from_numpy(scores), torch.from_numpy(references)), expected)
    with_grad = torch.from_numpy(scores).requires_grad_()
    assert_matches(average_precision(with_grad, torch.from_numpy(references).float()), expected)
    half = torch.from_numpy(scores).to(torch.bfloat16)
    assert_matches(average_precision(half, references), sklearn_ap(half.float().numpy(), references))
    levels = rng.integers(-3, 3, (64, 5))
    assert_matches(average_precision(levels, references.astype(np.int64)), sklearn_ap(levels, references))


def test_window_codes_are_monotone_and_equal_for_equal_scores():
    rng = np.random.default_rng(5)
    values = np.concatenate(
        [rng.standard_normal(500), [-0.0, 0.0, 1e-45, -1e-45, 3.4e38, -3.4e38, 1.0, 1.0, 5e-324]]
    ).astype(np.float32)
    for low, high in [(-1.0, 1.0), (1.0, 1.0), (-3.4e38, 3.4e38), (1e-45, 2e-45), (0.5, 0.50000006)]:
        codes = _window_codes(values[None, :], np.array([low], np.float32), np.array([high], np.float32))[0]
        order = np.argsort(values, kind="stable")
        assert np.all(np.diff(codes[order].astype(np.int64)) >= 0), (low, high)
        _, first = np.unique(values, return_inverse=True)
        for group in np.unique(first):  # equal scores (-0.0 == 0.0) share one code
            assert np.unique(codes[first == group]).size == 1
        inside = (values >= low) & (values <= high)
        assert np.all((codes[inside] >= 1) & (codes[inside] <= 65533))


def test_float64_scores_beyond_float32_range_are_exact():
    scores = np.array([[1e300, 0.0], [-1e300, 1e-300], [1e299, -1e-300], [2.0, 5e-324], [1e300, 0.0]])
    references = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [0, 1]])
    assert_matches(average_precision(scores, references), sklearn_ap(scores, references))
    assert_matches(roc_auc(scores, references), sklearn_auc(scores, references))


def test_d_prime_matches_scipy():
    auc = np.array([0.5, 0.75, 0.9, 0.99, 0.01, np.nan])
    expected = np.sqrt(2) * norm.ppf(auc)
    np.testing.assert_allclose(d_prime(auc)[:5], expected[:5], rtol=1e-12)
    assert np.isnan(d_prime(auc)[5])
    assert d_prime(1.0) == math.inf and d_prime(0.0) == -math.inf
    assert isinstance(d_prime(0.9), float)
    with pytest.raises(MetricInputError, match=r"\[0, 1\]"):
        d_prime([0.5, 1.2])


# ---------------------------------------------------------------------------- hierarchical mAP
ANIMALS = {"labels": ["animal", "dog", "cat"], "parents": [[], [0], [0]]}


@pytest.fixture(scope="module")
def eval_subset(audioset_ontology, audioset_dir):
    """The first 2,000 real AudioSet eval clips and scores correlated with their labels."""
    labels = load_segments(["eval"], audioset_ontology, audioset_dir=audioset_dir)["eval"].labels[:2000]
    offsets = labels.offsets.to_numpy()
    references = np.zeros((len(labels), len(audioset_ontology)), dtype=bool)
    references[np.repeat(np.arange(len(labels)), np.diff(offsets - offsets[0])),
               labels.values.to_numpy()[offsets[0]:offsets[-1]]] = True
    rng = np.random.default_rng(11)
    logits = (rng.standard_normal(references.shape) - 3 + 2.5 * references).astype(np.float32)
    return logits, references


def test_hierarchical_map_equals_sklearn_on_propagated_labels_and_scores(audioset_ontology, eval_subset):
    """Independent reference: sklearn per class on hlp_audio.propagate_labels / propagate_scores outputs."""
    logits, references = eval_subset
    result = compute_hierarchical_map(logits, references, audioset_ontology, return_per_class=True)
    assert set(result) == set(RESULT_KEYS) | set(PER_CLASS_KEYS)
    propagated, post = propagate_labels(references, audioset_ontology), propagate_scores(logits, audioset_ontology)
    receiving = audioset_ontology.receiving
    combos = {
        "": (logits, references),
        "_hlp": (logits, propagated),
        "_post": (post, references),
        "_hlp_post": (post, propagated),
    }
    for suffix, (scores, labels) in combos.items():
        expected = sklearn_ap(scores, labels)
        assert_matches(result[f"ap{suffix}_per_class"], expected)
        assert result[f"map{suffix}"] == pytest.approx(np.nanmean(expected), abs=1e-12)
        assert result[f"map{suffix}_receiving"] == pytest.approx(np.nanmean(expected[receiving]), abs=1e-12)
    auc = sklearn_auc(logits, references)
    assert_matches(result["auc_per_class"], auc)
    assert result["auc"] == pytest.approx(np.nanmean(auc), abs=1e-12)
    assert result["d_prime"] == pytest.approx(np.sqrt(2) * norm.ppf(np.nanmean(auc)), rel=1e-12)
    # 2,000 clips leave some classes without positives: counted, not averaged in
    without = int((~references.any(axis=0)).sum())
    assert without > 0
    assert result["num_classes_without_positives"] == without
    assert result["num_classes_without_positives_hlp"] == int((~propagated.any(axis=0)).sum()) <= without
    assert result["num_receiving_classes"] == 109 and result["receiving_classes"] == receiving.tolist()
    assert (result["num_samples"], result["num_classes"], result["num_classes_without_negatives"]) == (2000, 527, 0)


def test_single_clip(audioset_ontology, eval_subset):
    logits, references = eval_subset[0][:1], eval_subset[1][:1]
    result = compute_hierarchical_map(logits, references, audioset_ontology, return_per_class=True)
    propagated = propagate_labels(references, audioset_ontology)
    assert_matches(result["ap_hlp_per_class"], sklearn_ap(logits, propagated))
    assert result["map"] == result["map_hlp"] == 1.0  # every positive is the only clip
    assert result["num_classes_without_positives"] == 527 - references.sum()
    assert math.isnan(result["auc"]) and result["d_prime"] is None
    assert result["num_classes_without_negatives"] == references.sum()


def test_perfect_ranking_gives_a_null_d_prime_not_infinity():
    import json

    ontology = Ontology.from_parents(["animal", "dog", "cat"], {"dog": ["animal"], "cat": ["animal"]})
    references = np.array([[1, 1, 0], [1, 0, 1], [0, 0, 0], [0, 0, 0]])
    scores = references + 0.5 * np.arange(4)[:, None] / 10  # every positive above every negative
    result = compute_hierarchical_map(scores, references, ontology)
    assert result["auc"] == 1.0 and result["d_prime"] is None
    json.loads(json.dumps(result, allow_nan=False).replace("NaN", "null"))  # no Infinity anywhere


def test_logits_and_probabilities_give_the_same_result(audioset_ontology, eval_subset):
    logits, references = eval_subset
    logits = logits.astype(np.float64)
    probabilities = 1 / (1 + np.exp(-logits))  # monotone, and injective at these magnitudes in float64
    assert compute_hierarchical_map(logits, references, audioset_ontology) == compute_hierarchical_map(
        probabilities, references, audioset_ontology
    )


def test_every_ontology_form_gives_the_same_result(audioset_ontology, eval_subset, tmp_path):
    logits, references = eval_subset[0][:300], eval_subset[1][:300]
    expected = compute_hierarchical_map(logits, references, audioset_ontology)
    path = tmp_path / "ontology.json"
    audioset_ontology.to_json(path)
    forms = [
        audioset_ontology.to_dict(),
        audioset_ontology.to_json(),
        str(path),
        path,
        Hierarchy.from_ontology(audioset_ontology),
    ]
    for form in forms:
        assert compute_hierarchical_map(logits, references, form) == expected


def test_small_ontology_by_hand():
    """animal <- dog, animal <- cat; mammal is ambiguous (two labelled parents) and propagates nothing."""
    ontology = Ontology.from_parents(
        ["animal", "dog", "cat", "pet", "mammal"], {"dog": ["animal"], "cat": ["animal"], "mammal": ["animal", "pet"]}
    )
    scores = np.array(
        [[0.1, 0.9, 0.1, 0.2, 0.8], [0.7, 0.1, 0.8, 0.1, 0.1], [0.2, 0.1, 0.1, 0.9, 0.1], [0.6, 0.2, 0.1, 0.1, 0.9]]
    )
    references = np.array([[0, 1, 0, 0, 1], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [1, 0, 0, 0, 0]])
    result = compute_hierarchical_map(scores, references, ontology, return_per_class=True)
    assert result["receiving_classes"] == [0]  # animal only: mammal's parents do not receive
    # propagated animal positives: rows 0, 1, 3; post animal scores: max(animal, dog, cat) = .9, .8, .2, .6
    assert result["ap_hlp_per_class"][0] == pytest.approx(average_precision_score([1, 1, 0, 1], [0.1, 0.7, 0.2, 0.6]))
    assert result["ap_hlp_post_per_class"][0] == pytest.approx(1.0)
    assert result["ap_post_per_class"][0] == pytest.approx(average_precision_score([0, 0, 0, 1], [0.9, 0.8, 0.2, 0.6]))
    assert result["ap_per_class"][1:] == result["ap_hlp_per_class"][1:] == result["ap_post_per_class"][1:]


def test_no_positive_at_all_gives_nan_means_and_counts():
    scores = np.random.default_rng(0).random((5, 3))
    result = compute_hierarchical_map(scores, np.zeros((5, 3)), ANIMALS, return_per_class=True)
    assert all(math.isnan(result[key]) for key in RESULT_KEYS[:9]) and result["d_prime"] is None
    assert (result["num_classes_without_positives"], result["num_classes_without_positives_hlp"]) == (3, 3)
    assert np.isnan(result["ap_hlp_post_per_class"]).all()


def test_flat_ontology_has_no_receiving_classes():
    ontology = {"labels": ["a", "b"], "parents": [[], []]}
    result = compute_hierarchical_map([[0.1, 0.2], [0.3, 0.1]], [[0, 1], [1, 0]], ontology)
    assert result["num_receiving_classes"] == 0
    assert result["map"] == result["map_hlp"] == result["map_post"] == result["map_hlp_post"] == 1.0
    assert math.isnan(result["map_receiving"])


# ---------------------------------------------------------------------------- bad input
TWO_CLASSES = {"labels": ["parent", "child"], "parents": [[], [0]]}


@pytest.mark.parametrize(
    "predictions, references, message",
    [
        ([[0.1, 0.2]], [[1, 0], [0, 1]], r"references must have the shape of the predictions \(1, 2\).*\(2, 2\)"),
        ([0.1, 0.2], [1, 0], r"shape \(N, C\).*got shape \(2,\).*reshape\(-1, 1\)"),
        (np.zeros((0, 2)), np.zeros((0, 2)), r"at least one sample"),
        ([[0.1, 0.2], [0.3, 0.4]], [[1, 0], [2, 0]], r"binary \(0 or 1\): found 2 at \(row 1, class 0\)"),
        ([[0.1, 0.2], [0.3, 0.4]], [[1, 0], [0, 0.5]], r"binary .*found 0.5 at \(row 1, class 1\)"),
        ([[0.1, 0.2], [0.3, 0.4]], [[1, np.nan], [0, 1]], r"binary .*found nan at \(row 0, class 1\)"),
        ([[0.1, np.nan], [0.3, 0.4]], [[1, 0], [0, 1]], r"finite: found nan at \(row 0, class 1\)"),
        ([[0.1, 0.2], [np.inf, 0.4]], [[1, 0], [0, 1]], r"finite: found inf at \(row 1, class 0\)"),
        ([[0.1, 0.2, 0.3]], [[1, 0, 0]], r"3 classes but the ontology has 2"),
        ([["a", "b"]], [[1, 0]], r"real numbers, got dtype <U1"),
        ([[0.1, 0.2]], [["x", "y"]], r"multi-hot 0/1 values, got dtype <U1"),
    ],
)
def test_bad_input_is_named(predictions, references, message):
    with pytest.raises(MetricInputError, match=message):
        compute_hierarchical_map(np.asarray(predictions), np.asarray(references), TWO_CLASSES)


@pytest.mark.parametrize(
    "ontology, message",
    [
        ({"labels": ["a", "b"]}, r"ontology dict: the ontology dict lacks \['parents'\]"),
        ({"labels": ["a", "b"], "parents": [[]]}, r"1 parent lists for 2 labels"),
        ({"labels": ["a", "b"], "parents": [[], [5]]}, r"class 1 \('b'\) has parent index 5, outside \[0, 2\)"),
        ({"labels": ["a", "b"], "parents": [[1], [0]]}, r"cycle"),
        ({"format": "other/2", "labels": [], "parents": []}, r"unknown ontology dict format 'other/2'"),
        ("not json and not a file", r"neither JSON text nor an existing JSON file"),
        ('{"labels": [', r"invalid JSON"),
        (42, r"must be an hlp_audio.Ontology.*got int"),
    ],
)
def test_bad_ontology_is_named(ontology, message):
    with pytest.raises(MetricInputError, match=message):
        Hierarchy.from_ontology(ontology)


def test_ontology_json_roundtrip_matches_ontology(audioset_ontology):
    hierarchy = Hierarchy.from_ontology(json.loads(audioset_ontology.to_json()))
    np.testing.assert_array_equal(hierarchy.receiving, audioset_ontology.receiving)
    scores = np.random.default_rng(0).standard_normal((5, len(audioset_ontology)))
    np.testing.assert_array_equal(hierarchy.ancestor_max(scores), audioset_ontology.ancestor_max(scores))
