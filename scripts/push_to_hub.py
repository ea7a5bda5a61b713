#!/usr/bin/env python
"""Publish a trained HLP tagger folder to the Hugging Face Hub, with its model card, in one commit.

Usage::

    python scripts/push_to_hub.py runs/ast-hlp/best me/ast-audioset-hlp
    python scripts/push_to_hub.py runs/ast-hlp/best me/ast-audioset-hlp --dry-run hub_folder/  # write, don't push

MODEL_DIR is a folder written by ``scripts/train.py`` (``OUTPUT_DIR/best`` or ``OUTPUT_DIR/final``) or any
``save_pretrained`` folder of an ``HLPAudioForAudioClassification`` with its feature extractor. The pushed
repository holds the weights (safetensors), ``config.json`` (with the ontology), the feature extractor, the
model code for ``trust_remote_code``, ``eval_results.json`` and a ``README.md`` rendered from
``hub_cards/model_card.md``: ``model-index`` with the mAP on AS-Base and AS-HLP with and without post-HLP,
the training recipe (from ``training_args.json``), the ontology attribution and the paper citation.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="trained model folder (e.g. OUTPUT_DIR/best)")
    parser.add_argument("repo_id", metavar="REPO_ID", help="Hub repository, e.g. me/ast-audioset-hlp")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--token", help="Hub token (default: the logged-in one)")
    parser.add_argument("--commit-message", help="message of the upload commit")
    parser.add_argument("--license", required=True, help="licence of the model, written on its card (e.g. that of its training data)")
    parser.add_argument("--eval-name", help="the evaluation set as the card names it (default: the one the training run recorded)")
    parser.add_argument("--base-model", help="Hub id of the checkpoint the model started from (card metadata)")
    parser.add_argument("--backbone", help="backbone as named in the card, e.g. 'AST-base' (default: from the config)")
    parser.add_argument("--ontology-name", help="name of the label hierarchy in the card (default: AudioSet when recognised)")
    parser.add_argument("--dry-run", metavar="DIR", help="write the repository folder to DIR and push nothing")
    return parser


def main(argv: Optional[List[str]] = None, *, api=None) -> int:
    args = build_parser().parse_args(argv)
    from hlp_audio.hub import prepare_hub_folder, publish_model

    card_fields = dict(
        license=args.license, base_model=args.base_model, backbone=args.backbone, ontology_name=args.ontology_name,
        eval_name=args.eval_name,
    )
    try:
        if args.dry_run:
            folder = prepare_hub_folder(args.model_dir, args.dry_run, repo_id=args.repo_id, **card_fields)
            print(f"wrote the repository folder of {args.repo_id} to {folder}")
            return 0
        commit = publish_model(
            args.model_dir,
            args.repo_id,
            private=args.private,
            token=args.token,
            api=api,
            commit_message=args.commit_message,
            **card_fields,
        )
    except (OSError, ValueError) as err:
        print(f"push_to_hub: error: {err}", file=sys.stderr)
        return 2
    print(f"pushed {args.model_dir} to {args.repo_id}: {getattr(commit, 'commit_url', commit)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
