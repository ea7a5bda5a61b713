"""Evaluation of a saved tagger (``scripts/evaluate_model.py``): the four mAPs, AUC, d' and per-class AP.

The references are the manifest's labels (AS-Base) and the same labels after HLP (AS-HLP) with the
ontology of the model's config; scores are the model's logits with post-HLP off and on. Writes to
``--out``: ``metrics.json`` (every figure, and per class the AP on AS-Base and AS-HLP with post-HLP
off and on, and the ROC AUC), ``metrics.md`` (the markdown table printed at the end) and
``ap_change.png`` (per-class AP change, AS-HLP vs AS-Base, of the classes that can receive labels).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from accelerate import Accelerator
from transformers import AutoFeatureExtractor

from ..metrics import compute_hierarchical_map
from ..modeling.modeling_hlp_audio import HLPAudioForAudioClassification
from ..ontology import Ontology
from .clips import AudioClipDataset
from .manifests import add_manifest_arguments, manifest_options, read_manifest
from .models import build_front_end, predict

__all__ = ["build_evaluate_parser", "evaluate_model", "markdown_table", "per_class_rows", "plot_ap_change", "predict_saved_model"]


def build_evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate_model.py",
        description="Evaluate an HLP tagger on a manifest: the paper's four mAPs, AUC, d' and per-class AP.",
    )
    parser.add_argument("model", metavar="MODEL", help="saved HLP tagger folder")
    parser.add_argument("manifest", metavar="MANIFEST", help="CSV / TSV / parquet file or saved datasets folder")
    parser.add_argument("--out", metavar="DIR", help="folder for metrics.json, metrics.md and ap_change.png")
    parser.add_argument("--split", help="split of a saved DatasetDict")
    add_manifest_arguments(parser)
    parser.add_argument("--clip-seconds", type=float, default=10.0, help="clips are cut or zero-padded to this length")
    parser.add_argument("--batch-size", type=int, default=32, help="per device")
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"])
    parser.add_argument("--no-progress", action="store_true")
    return parser


def markdown_table(metrics: dict) -> str:
    """The four mAPs (references x post-HLP) and the ranking figures as a markdown table."""
    lines = [
        "| References | mAP, post-HLP off | mAP, post-HLP on |",
        "| --- | --- | --- |",
        f"| AS-Base (original labels) | {metrics['map']:.4f} | {metrics['map_post']:.4f} |",
        f"| AS-HLP (propagated labels) | {metrics['map_hlp']:.4f} | {metrics['map_hlp_post']:.4f} |",
        f"| receiving classes only, AS-Base | {metrics['map_receiving']:.4f} | {metrics['map_post_receiving']:.4f} |",
        f"| receiving classes only, AS-HLP | {metrics['map_hlp_receiving']:.4f} | {metrics['map_hlp_post_receiving']:.4f} |",
        "",
        f"AUC {metrics['auc']:.4f}, d' {metrics['d_prime']:.3f} (AS-Base, post-HLP off); "
        f"{metrics['num_samples']} clips, {metrics['num_classes']} classes "
        f"({metrics['num_receiving_classes']} can receive propagated labels; "
        f"{metrics['num_classes_without_positives']} without positives are left out of the means).",
    ]
    return "\n".join(lines) + "\n"


def plot_ap_change(per_class: List[dict], post_hlp: bool, path: Path) -> Optional[Path]:
    """Horizontal bars of AP(AS-HLP) - AP(AS-Base) per receiving class, sorted; None if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suffix = "_post" if post_hlp else ""
    rows = [
        (row["name"], row[f"ap_hlp{suffix}"] - row[f"ap{suffix}"])
        for row in per_class
        if row["receiving"] and row[f"ap{suffix}"] is not None and row[f"ap_hlp{suffix}"] is not None
    ]
    if not rows:
        return None
    rows.sort(key=lambda row: row[1])
    names, changes = zip(*rows)
    height = max(3.0, 0.16 * len(rows) + 1.2)
    figure, axis = plt.subplots(figsize=(7.5, height))
    colors = ["tab:green" if change >= 0 else "tab:red" for change in changes]
    axis.barh(np.arange(len(rows)), changes, color=colors)
    axis.set_yticks(np.arange(len(rows)), labels=names, fontsize=7 if len(rows) > 40 else 9)
    axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set_xlabel("AP on AS-HLP references - AP on AS-Base references")
    axis.set_title(
        f"Per-class AP change of the {len(rows)} receiving classes (post-HLP {'on' if post_hlp else 'off'})",
        fontsize=10,
    )
    axis.margins(y=0.005)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _none_if_nan(value):
    """JSON has no NaN or infinity: a class without positives (NaN AP), or d' of a perfect AUC, becomes null."""
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def predict_saved_model(
    model_dir,
    manifest,
    accelerator: Accelerator,
    *,
    clip_seconds: float,
    batch_size: int,
    num_workers: int,
    split: Optional[str] = None,
    progress: bool = False,
    **manifest_kwargs,
):
    """Load a saved tagger and score every clip of ``manifest`` (read with the model's ontology).

    Returns ``(logits, references, ontology, post_hlp)``: (N, C) logits before post-HLP, the
    manifest's (N, C) multi-hot labels, the model's :class:`Ontology` and its ``config.post_hlp``.
    """
    model = HLPAudioForAudioClassification.from_pretrained(model_dir, dtype=torch.float32)
    feature_extractor = AutoFeatureExtractor.from_pretrained(model_dir)
    if model.config.ontology is None:
        raise SystemExit(f"{model_dir}: the config has no ontology; HLP references cannot be built")
    ontology = Ontology.from_dict(model.config.ontology)
    clips = read_manifest(manifest, ontology, split=split, **manifest_kwargs)
    dataset = AudioClipDataset(clips, sampling_rate=feature_extractor.sampling_rate, clip_seconds=clip_seconds)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=accelerator.device.type == "cuda"
    )
    model, loader = accelerator.prepare(model, loader)
    front_end = build_front_end(accelerator.unwrap_model(model), feature_extractor).to(accelerator.device)
    logits, labels = predict(model, loader, front_end, accelerator, progress=progress)
    return logits, labels, ontology, bool(accelerator.unwrap_model(model).config.post_hlp)


def per_class_rows(metrics: dict, ontology: Ontology) -> List[dict]:
    """Pop the per-class arrays of ``compute_hierarchical_map(..., return_per_class=True)`` into one row per class:
    index, label, name, receiving, and the AP on AS-Base / AS-HLP with post-HLP off / on and the AUC (None: no positives)."""
    receiving = set(metrics.pop("receiving_classes"))
    per_class_keys = ("ap_per_class", "ap_hlp_per_class", "ap_post_per_class", "ap_hlp_post_per_class", "auc_per_class")
    columns = {key: metrics.pop(key) for key in per_class_keys}
    return [
        {
            "index": index,
            "label": ontology.labels[index],
            "name": ontology.names[index],
            "receiving": index in receiving,
            **{key[: -len("_per_class")]: _none_if_nan(columns[key][index]) for key in per_class_keys},
        }
        for index in range(len(ontology))
    ]


def evaluate_model(args: argparse.Namespace) -> dict:
    """Evaluate from parsed options (:func:`build_evaluate_parser`); returns the figures and per-class rows."""
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    logits, labels, ontology, post_hlp = predict_saved_model(
        args.model,
        args.manifest,
        accelerator,
        clip_seconds=args.clip_seconds,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        split=args.split,
        progress=not args.no_progress,
        **manifest_options(args),
    )
    metrics = compute_hierarchical_map(logits, labels, ontology, return_per_class=True)
    per_class = per_class_rows(metrics, ontology)
    summary = {key: _none_if_nan(value) for key, value in metrics.items()}
    table = markdown_table(metrics)
    if accelerator.is_main_process:
        print(table)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            record = {"model": str(args.model), "manifest": str(args.manifest), "post_hlp": post_hlp, **summary, "per_class": per_class}
            (out / "metrics.json").write_text(json.dumps(record, indent=2))
            (out / "metrics.md").write_text(table)
            plot = plot_ap_change(per_class, record["post_hlp"], out / "ap_change.png")
            print(f"wrote {out / 'metrics.json'}, {out / 'metrics.md'}" + (f" and {plot}" if plot else ""))
    accelerator.wait_for_everyone()
    return {**summary, "per_class": per_class}
