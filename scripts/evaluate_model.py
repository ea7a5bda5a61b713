#!/usr/bin/env python
"""Evaluate an HLP tagger on a manifest: the paper's four mAPs, AUC, d' and per-class AP.

Usage::

    python scripts/evaluate_model.py runs/ast-hlp/best eval.csv --out results/ast-hlp
    accelerate launch scripts/evaluate_model.py MODEL_DIR eval.parquet --out DIR   # several GPUs

Writes ``metrics.json``, ``metrics.md`` and ``ap_change.png`` to ``--out``; see
:mod:`hlp_audio.training.evaluation`.
"""

from hlp_audio.training import build_evaluate_parser, evaluate_model

if __name__ == "__main__":
    evaluate_model(build_evaluate_parser().parse_args())
