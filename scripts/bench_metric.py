#!/usr/bin/env python
"""Benchmark the hierarchical mAP against scikit-learn and torchmetrics, in one run.

Data: the real AudioSet evaluation references (20,371 clips x 527 classes, 2.54 labels per clip) and
synthetic float32 probabilities correlated with them (per-class separation drawn so that the mAP is
in the range of real taggers).

Figures (issue 4 goals):
- all four mAPs (AS-Base / AS-HLP, raw / post-HLP scores) plus ROC AUC in under 0.5 s on one CPU core,
  next to the AS-Base mAP alone with scikit-learn (``average_precision_score`` per class) and with
  torchmetrics (``multilabel_average_precision``, exact mode), measured in the same run;
- per-class AP equal to scikit-learn within 1e-9 for all four combinations (scikit-learn on labels
  and scores propagated with ``hlp_audio.propagate_labels`` / ``propagate_scores``), on the scores,
  on scores quantised to 256 levels (ties), and with classes emptied of positives (left out, NaN).

Usage: python scripts/bench_metric.py [--audioset-dir DIR] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from hlp_audio import Ontology, load_segments, propagate_labels, propagate_scores
from hlp_audio.metrics import average_precision, compute_hierarchical_map


def default_audioset_dir() -> str:
    if os.environ.get("HLP_AUDIOSET_DIR"):
        return os.environ["HLP_AUDIOSET_DIR"]
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "audioset"
    return str(shared) if shared.is_dir() else ""


def eval_references(ontology: Ontology, audioset_dir: str) -> np.ndarray:
    """Dense (20371, 527) bool references of the AudioSet evaluation split."""
    labels = load_segments(["eval"], ontology, audioset_dir=audioset_dir or None)["eval"].labels
    offsets = labels.offsets.to_numpy()
    references = np.zeros((len(labels), len(ontology)), dtype=bool)
    references[np.repeat(np.arange(len(labels)), np.diff(offsets)), labels.values.to_numpy()] = True
    return references


def synthetic_scores(references: np.ndarray, seed: int = 0) -> np.ndarray:
    """Sigmoid probabilities (float32): logits N(bias_c, 1), shifted by a per-class separation on positives."""
    rng = np.random.default_rng(seed)
    num_samples, num_classes = references.shape
    bias = rng.normal(-4.0, 1.0, num_classes).astype(np.float32)
    separation = rng.uniform(1.0, 4.0, num_classes).astype(np.float32)
    logits = rng.standard_normal((num_samples, num_classes), dtype=np.float32) + bias + separation * references
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def timed(fn, repeats: int):
    """Best wall time, its CPU time, and the last result (after one warm-up call)."""
    result = fn()
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, result


def sklearn_per_class(scores: np.ndarray, references: np.ndarray) -> np.ndarray:
    from sklearn.metrics import average_precision_score

    out = np.full(scores.shape[1], np.nan)
    for column in np.flatnonzero(references.any(axis=0)):
        out[column] = average_precision_score(references[:, column], scores[:, column])
    return out


def torchmetrics_per_class(scores: np.ndarray, references: np.ndarray) -> np.ndarray:
    from torchmetrics.functional.classification import multilabel_average_precision

    with torch.no_grad():
        return multilabel_average_precision(
            torch.from_numpy(scores), torch.from_numpy(references.astype(np.int64)),
            num_labels=scores.shape[1], average=None, thresholds=None,
        ).numpy()


def check_against_sklearn(name: str, scores: np.ndarray, references: np.ndarray, ontology: Ontology) -> float:
    """Largest per-class |AP - sklearn| over the four combinations; NaN placement must match exactly."""
    result = compute_hierarchical_map(scores, references, ontology, return_per_class=True)
    propagated, post = propagate_labels(references, ontology), propagate_scores(scores, ontology)
    combos = {
        "ap_per_class": (scores, references),
        "ap_hlp_per_class": (scores, propagated),
        "ap_post_per_class": (post, references),
        "ap_hlp_post_per_class": (post, propagated),
    }
    worst, sklearn_seconds = 0.0, 0.0
    for key, (combo_scores, combo_references) in combos.items():
        start = time.perf_counter()
        reference = sklearn_per_class(combo_scores, combo_references)
        sklearn_seconds += time.perf_counter() - start
        ours = np.asarray(result[key])
        if not np.array_equal(np.isnan(ours), np.isnan(reference)):
            raise SystemExit(f"{name} {key}: the classes left out differ from those without positives")
        defined = ~np.isnan(reference)
        worst = max(worst, float(np.max(np.abs(ours[defined] - reference[defined]), initial=0.0)))
        means = result[key.replace("ap", "map", 1).replace("_per_class", "")], float(np.mean(reference[defined]))
        if abs(means[0] - means[1]) > 1e-9:
            raise SystemExit(f"{name} {key}: mean {means[0]} != sklearn {means[1]}")
    print(f"  {name:<34s} max |AP - sklearn| over 4 x {scores.shape[1]} classes: {worst:.1e}"
          f"   (classes without positives: {result['num_classes_without_positives']}; "
          f"sklearn took {sklearn_seconds:.1f} s for the four)")
    if worst > 1e-9:
        raise SystemExit(f"{name}: per-class AP differs from sklearn by {worst}")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--audioset-dir", default=default_audioset_dir())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="check exactness on the raw scores only")
    args = parser.parse_args()
    torch.set_num_threads(1)  # every figure on one core

    ontology = Ontology.from_audioset(audioset_dir=args.audioset_dir or None)
    references = eval_references(ontology, args.audioset_dir)
    scores = synthetic_scores(references)
    print(f"AudioSet eval references {references.shape}, {references.sum() / len(references):.2f} labels/clip; "
          f"float32 synthetic scores; {len(ontology.receiving)} receiving classes; 1 thread")

    wall, cpu, result = timed(lambda: compute_hierarchical_map(scores, references, ontology), args.repeats)
    base_wall, base_cpu, base = timed(lambda: average_precision(scores, references), args.repeats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk_wall, sk_cpu, sk = timed(lambda: sklearn_per_class(scores, references), 1)
        tm_wall, tm_cpu, tm = timed(lambda: torchmetrics_per_class(scores, references), 1)
    print(f"\nmAP: AS-Base {result['map']:.4f}  AS-HLP {result['map_hlp']:.4f}  "
          f"post {result['map_post']:.4f}  HLP+post {result['map_hlp_post']:.4f}  (AUC {result['auc']:.4f}, "
          f"d' {result['d_prime']:.3f})")
    print(f"\n{'computation':<58s} {'wall s':>8s} {'cpu s':>8s}")
    rows = [
        ("hlp_audio: all four mAPs + AUC (compute_hierarchical_map)", wall, cpu),
        ("hlp_audio: AS-Base mAP only (average_precision)", base_wall, base_cpu),
        ("sklearn average_precision_score per class: AS-Base only", sk_wall, sk_cpu),
        ("torchmetrics multilabel_average_precision: AS-Base only", tm_wall, tm_cpu),
    ]
    for label, w, c in rows:
        print(f"{label:<58s} {w:8.3f} {c:8.3f}")
    print(f"\nall four mAPs vs one sklearn mAP: {sk_wall / wall:.1f}x faster (wall); "
          f"vs one torchmetrics mAP: {tm_wall / wall:.1f}x; goal < 0.5 s: {'met' if wall < 0.5 else 'NOT met'} "
          f"(wall {wall:.3f} s, cpu {cpu:.3f} s)")
    print(f"AS-Base |ours - sklearn| {np.nanmax(np.abs(base - sk)):.1e}, |ours - torchmetrics| "
          f"{np.nanmax(np.abs(base - tm)):.1e} (torchmetrics computes in float32)")

    print("\nexactness (per class, all four combinations, sklearn on hlp_audio-propagated labels/scores):")
    check_against_sklearn("synthetic probabilities", scores, references, ontology)
    if not args.quick:
        quantised = np.round(scores * 255) / np.float32(255)
        check_against_sklearn("quantised to 256 levels (ties)", quantised, references, ontology)
        emptied = references.copy()
        empty = np.unique([3, 72, 137, int(ontology.receiving[1]), int(ontology.receiving[-1])])
        emptied[:, empty] = False
        check_against_sklearn(f"{empty.size} classes emptied of positives", scores, emptied, ontology)
        tied_wall, tied_cpu, _ = timed(lambda: compute_hierarchical_map(quantised, references, ontology), args.repeats)
        print(f"\nall four mAPs on the 256-level scores (many ties resolved exactly): wall {tied_wall:.3f} s, "
              f"cpu {tied_cpu:.3f} s")


if __name__ == "__main__":
    main()
