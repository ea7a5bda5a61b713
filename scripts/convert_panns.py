#!/usr/bin/env python
"""Convert the original PANNs CNN6 AudioSet checkpoint into an HLP-audio model folder.

Usage::

    python scripts/convert_panns.py Cnn6_mAP=0.343.pth --out cnn6-as-hlp [--check speech.wav ...] [--push-to-hub user/cnn6-as-hlp]

The published file (Zenodo record 3987831) is checked against its sha256. See :mod:`hlp_audio.conversion.from_panns`.
"""

import argparse
import sys

from hlp_audio.conversion import convert_panns
from hlp_audio.conversion.common import add_converter_arguments, push_if_asked


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="PANNs checkpoint, e.g. Cnn6_mAP=0.343.pth")
    add_converter_arguments(parser)
    args = parser.parse_args(argv)
    try:
        out = convert_panns(
            args.checkpoint, args.out, post_hlp=args.post_hlp, audioset_dir=args.audioset_dir,
            check_files=args.check, repo_id=args.push_to_hub,
        )
    except (ValueError, FileNotFoundError) as error:  # a CheckpointError, or bad AudioSet metadata (checksum, format)
        print(f"convert_panns: error: {error}", file=sys.stderr)
        return 2
    push_if_asked(args, out, "PANNs CNN6")
    return 0


if __name__ == "__main__":
    sys.exit(main())
