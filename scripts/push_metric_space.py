#!/usr/bin/env python
"""Build the hierarchical_map metric Space and push it to the Hub (or only build it).

The Space works for users without hlp-audio: ``evaluate.load("<namespace>/hierarchical_map")``.
See ``hlp_audio.hierarchical_map.space`` for what it contains.

Usage:
    python scripts/push_metric_space.py <namespace>/hierarchical_map [--private] [--token TOKEN]
    python scripts/push_metric_space.py <namespace>/hierarchical_map --output-dir DIR   # build only
"""

from __future__ import annotations

import argparse

from hlp_audio import Ontology
from hlp_audio.hierarchical_map.space import build_space_folder, push_space


def main(argv=None, *, api=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("repo_id", help="the Space to create or update, e.g. my-org/hierarchical_map")
    parser.add_argument("--output-dir", help="write the Space folder here instead of pushing it")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    parser.add_argument(
        "--audioset-dir", default=None, help="folder of ontology.json and class_labels_indices.csv (default: "
        "$HLP_AUDIOSET_DIR, the cache, or a verified download); the Space bundles this hierarchy"
    )
    args = parser.parse_args(argv)
    if args.repo_id.count("/") != 1:
        parser.error(f"repo_id must look like <namespace>/<name>, got {args.repo_id!r}")
    ontology = Ontology.from_audioset(audioset_dir=args.audioset_dir)
    if args.output_dir:
        folder = build_space_folder(args.output_dir, args.repo_id, ontology=ontology)
        print(f"Space files written to {folder}; load them with evaluate.load({str(folder / 'hierarchical_map.py')!r})")
        return
    commit = push_space(args.repo_id, ontology=ontology, private=args.private, token=args.token, api=api)
    print(f"pushed https://huggingface.co/spaces/{args.repo_id} ({getattr(commit, 'oid', commit)})")
    print(f'load it with evaluate.load("{args.repo_id}")')


if __name__ == "__main__":
    main()
