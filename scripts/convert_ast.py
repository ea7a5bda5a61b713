#!/usr/bin/env python
"""Convert an ``ASTForAudioClassification`` into an HLP tagger folder (AST weights + AudioSet ontology).

Usage::

    python scripts/convert_ast.py MIT/ast-finetuned-audioset-10-10-0.4593 ast-audioset-hlp
    python scripts/convert_ast.py ./my-ast ./my-ast-hlp --ontology my_ontology.json --no-post-hlp

SRC is a folder saved with ``save_pretrained`` or a Hub id; it must hold the AST's
``preprocessor_config.json``, which is kept unchanged (the HLP model reads the same filter banks). OUT receives
the ``HLPAudioForAudioClassification`` (weights under ``backbone.``, the ontology in ``config.json``, the model
code for ``trust_remote_code``) and the ``ASTFeatureExtractor``. With post-HLP off its logits equal the AST's.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", metavar="SRC", help="ASTForAudioClassification folder or Hub id")
    parser.add_argument("output", metavar="OUT", help="folder to write the HLP tagger to")
    parser.add_argument("--ontology", metavar="JSON", help="ontology as written by Ontology.to_json() (default: AudioSet)")
    parser.add_argument("--audioset-dir", help="folder with ontology.json and class_labels_indices.csv (default: $HLP_AUDIOSET_DIR)")
    parser.add_argument("--no-post-hlp", action="store_true", help="save the model with config.post_hlp = False")
    parser.add_argument("--no-hlp-targets", action="store_true", help="save the model with config.hlp_targets = False")
    args = parser.parse_args(argv)

    from hlp_audio import Ontology
    from hlp_audio.conversion import convert_ast

    if args.ontology:
        ontology = Ontology.from_json(args.ontology)
    else:
        ontology = Ontology.from_audioset(audioset_dir=args.audioset_dir)
    try:
        out = convert_ast(
            args.source,
            args.output,
            ontology=ontology,
            post_hlp=not args.no_post_hlp,
            hlp_targets=not args.no_hlp_targets,
        )
    except (OSError, ValueError) as err:
        print(f"convert_ast: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({len(ontology)} classes, post_hlp={not args.no_post_hlp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
