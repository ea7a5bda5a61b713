#!/usr/bin/env python
"""Convert an original EfficientAT "mn" AudioSet checkpoint into an HLP-audio model folder.

Usage::

    python scripts/convert_efficientat.py ../shared/data/models/efficientat_mn04_as/mn04_as_mAP_432.pt \
        --width-mult 0.4 --out mn04-as-hlp [--check speech.wav ...] [--push-to-hub user/mn04-as-hlp]

See :mod:`hlp_audio.conversion.from_efficientat`.
"""

import argparse
import sys

from hlp_audio.conversion import convert_efficientat
from hlp_audio.conversion.common import add_converter_arguments, push_if_asked
from hlp_audio.conversion.from_efficientat import size_name


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="original EfficientAT state dict, e.g. mn04_as_mAP_432.pt")
    parser.add_argument("--width-mult", type=float, required=True, help="width multiplier of the checkpoint (mn04: 0.4)")
    add_converter_arguments(parser)
    args = parser.parse_args(argv)
    if not 0.0 < args.width_mult <= 4.0:
        parser.error(f"--width-mult must be in (0, 4], got {args.width_mult}")
    try:
        out = convert_efficientat(
            args.checkpoint, args.width_mult, args.out, post_hlp=args.post_hlp, audioset_dir=args.audioset_dir,
            check_files=args.check, repo_id=args.push_to_hub,
        )
    except (ValueError, FileNotFoundError) as error:  # a CheckpointError, or bad AudioSet metadata (checksum, format)
        print(f"convert_efficientat: error: {error}", file=sys.stderr)
        return 2
    push_if_asked(args, out, f"EfficientAT {size_name(args.width_mult)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
