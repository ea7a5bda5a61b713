"""Label statistics of HLP on AudioSet splits (the paper's Section 3 figures and Table II)."""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional

import numpy as np
import pyarrow as pa

from .audioset import Segments
from .ontology import Ontology
from .propagation import list_offsets_and_values, propagate_labels

__all__ = ["ontology_stats", "split_stats", "compute_stats", "format_stats", "plot_growth"]


def ontology_stats(ontology: Ontology) -> Dict[str, int]:
    """Structure of the hierarchy under the HLP rule."""
    return {
        "classes": len(ontology),
        "receiving_classes": int(len(ontology.receiving)),
        "propagating_classes": int(len(ontology.propagating)),
        "ambiguous_classes": int(len(ontology.ambiguous)),
        "root_classes": int(len(ontology.roots)),
        "ancestor_pairs": int(len(ontology.ancestor_pairs[0])),
    }


def split_stats(labels: pa.ListArray, ontology: Ontology) -> Dict[str, object]:
    """Before/after figures for one split given as a list array of class indices."""
    propagated = propagate_labels(labels, ontology)
    clips = len(labels)
    before_counts = np.diff(labels.offsets.to_numpy())
    after_counts = np.diff(propagated.offsets.to_numpy())
    num_classes = len(ontology)
    per_class_before = np.bincount(list_offsets_and_values(labels)[1], minlength=num_classes)
    per_class_after = np.bincount(list_offsets_and_values(propagated)[1], minlength=num_classes)
    labels_before = int(before_counts.sum())
    labels_after = int(after_counts.sum())
    changed = int(np.count_nonzero(after_counts > before_counts))
    return {
        "clips": clips,
        "labels_before": labels_before,
        "labels_after": labels_after,
        "mean_labels_before": labels_before / clips if clips else 0.0,
        "mean_labels_after": labels_after / clips if clips else 0.0,
        "clips_changed": changed,
        "clips_changed_pct": 100.0 * changed / clips if clips else 0.0,
        "labels_added": labels_after - labels_before,
        "classes_gaining": int(np.count_nonzero(per_class_after > per_class_before)),
        "per_class_before": per_class_before.tolist(),
        "per_class_after": per_class_after.tolist(),
    }


def top_growth(ontology: Ontology, before: List[int], after: List[int], top: int) -> List[dict]:
    """Classes ranked by growth factor after/before (the paper's Table II)."""
    before_arr, after_arr = np.asarray(before), np.asarray(after)
    gaining = np.flatnonzero(after_arr > before_arr)
    with np.errstate(divide="ignore"):
        factor = np.where(before_arr[gaining] > 0, after_arr[gaining] / np.maximum(before_arr[gaining], 1), np.inf)
    order = gaining[np.lexsort((gaining, -factor))][:top]
    rows = []
    for index in order:
        b, a = int(before_arr[index]), int(after_arr[index])
        rows.append(
            {
                "index": int(index),
                "label": ontology.labels[index],
                "name": ontology.names[index],
                "before": b,
                "after": a,
                "growth": (a / b) if b else None,
            }
        )
    return rows


def compute_stats(ontology: Ontology, segments: Mapping[str, Segments], top: int = 10) -> dict:
    """The JSON object of ``hlp-audio stats --json``.

    ``{"ontology": {...}, "splits": {<split>: {...}, ..., "all": {...}}, "top_growth": [...]}``; the
    per-split keys are clips, mean_labels_before/after, clips_changed(_pct), labels_added,
    classes_gaining (and the raw label totals). ``top_growth`` ranks classes over all splits.
    """
    splits: Dict[str, dict] = {}
    for name, split in segments.items():
        splits[name] = split_stats(split.labels, ontology)
    if len(segments) > 1:
        combined = pa.concat_arrays([split.labels for split in segments.values()])
        splits["all"] = split_stats(combined, ontology)
    overall = splits["all"] if "all" in splits else next(iter(splits.values()))
    growth = top_growth(ontology, overall["per_class_before"], overall["per_class_after"], top)
    for figures in splits.values():
        del figures["per_class_before"], figures["per_class_after"]
    return {"ontology": ontology_stats(ontology), "splits": splits, "top_growth": growth}


def format_stats(stats: dict) -> str:
    """Plain-text report: ontology structure, a per-split table, and the top growth classes."""
    onto = stats["ontology"]
    lines = [
        "Ontology under the HLP rule",
        f"  classes               {onto['classes']}",
        f"  receiving classes     {onto['receiving_classes']}  (can gain propagated labels)",
        f"  propagating classes   {onto['propagating_classes']}  (have a unique labelled parent)",
        f"  ambiguous classes     {onto['ambiguous_classes']}  (2+ labelled parents: propagate nothing)",
        f"  ancestor pairs        {onto['ancestor_pairs']}  (off-diagonal cells of the lookup table)",
        "",
        f"{'split':<18}{'clips':>11}{'labels/clip':>13}{'after HLP':>11}{'clips changed':>16}{'labels added':>14}{'classes gaining':>17}",
    ]
    for name, s in stats["splits"].items():
        lines.append(
            f"{name:<18}{s['clips']:>11,}{s['mean_labels_before']:>13.3f}{s['mean_labels_after']:>11.3f}"
            f"{s['clips_changed']:>9,} ({s['clips_changed_pct']:4.1f}%){s['labels_added']:>14,}{s['classes_gaining']:>17}"
        )
    if stats.get("top_growth"):
        lines += ["", f"Top {len(stats['top_growth'])} classes by growth factor (after / before HLP)"]
        lines.append(f"  {'class':<40}{'before':>10}{'after':>10}{'growth':>9}")
        for row in stats["top_growth"]:
            growth = "new" if row["growth"] is None else f"x{row['growth']:.2f}"
            lines.append(f"  {row['name'][:39]:<40}{row['before']:>10,}{row['after']:>10,}{growth:>9}")
    return "\n".join(lines)


def plot_growth(stats: dict, path: str, title: Optional[str] = None) -> None:
    """Horizontal bar chart of the top growth classes (labels before vs after HLP) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = stats["top_growth"]
    if not rows:
        raise ValueError("no class gains labels: nothing to plot")
    names = [row["name"] for row in rows][::-1]
    before = np.array([row["before"] for row in rows][::-1])
    after = np.array([row["after"] for row in rows][::-1])
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    y = np.arange(len(rows))
    ax.barh(y, after, color="#f28e2b", label="after HLP")
    ax.barh(y, before, color="#4e79a7", label="before HLP")
    for yi, b, a in zip(y, before, after):
        ax.text(a, yi, f"  x{a / b:.1f}" if b else "  new", va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("clips with the label (log scale)")
    splits = [name for name in stats["splits"] if name != "all"]
    ax.set_title(title or f"HLP label growth, top {len(rows)} classes ({', '.join(splits)})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
