"""Build the AS-HLP dataset: AudioSet's labels with Hierarchical Label Propagation, as parquet + card.

Writes, under ``--out`` (default ``outputs/audioset-hlp``)::

    README.md                                  dataset card (hub_cards/dataset_card.md, real statistics)
    hlp_ontology.json                          the label hierarchy used (Ontology.to_dict())
    data/<split>-00000-of-00001.parquet        ytid, start_seconds, end_seconds, labels, hlp_labels

and, with ``--push-to-hub REPO_ID``, uploads that folder to a Hub dataset repo in one commit.

Usage: python scripts/build_audioset_hlp.py [--audioset-dir DIR] [--out DIR] [--push-to-hub REPO_ID]
       [--splits balanced_train eval unbalanced_train] [--private] [--token TOKEN] [--overwrite]
"""


from __future__ import annotations

import argparse
import sys

from hlp_audio.audioset import SPLITS, AudioSetFileError
from hlp_audio.hub.audioset_hlp import DEFAULT_OUT, publish_audioset_hlp


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audioset-dir", help="folder with the AudioSet metadata files (default: $HLP_AUDIOSET_DIR, else download)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the folder to this Hub dataset repo (one commit)")
    parser.add_argument("--splits", nargs="+", choices=list(SPLITS), default=list(SPLITS), help="splits to include (default: all three)")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--token", help="Hub token (default: the logged-in one)")
    parser.add_argument("--overwrite", action="store_true", help="replace the content of a non-empty --out folder")
    args = parser.parse_args(argv)
    try:
        publish_audioset_hlp(
            args.out, splits=args.splits, audioset_dir=args.audioset_dir, repo_id=args.push_to_hub,
            private=args.private, token=args.token, overwrite=args.overwrite,
        )
    except (FileExistsError, AudioSetFileError) as err:
        print(f"build_audioset_hlp: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
