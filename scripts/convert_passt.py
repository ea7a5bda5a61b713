#!/usr/bin/env python
"""Convert a PaSST checkpoint (kkoutini/PaSST release or ``hear21passt`` layout) into an HLP-audio model folder.

Usage::

    python scripts/convert_passt.py passt-s-f128-p16-s10-ap.476-swa.pt --out passt-s-hlp
    python scripts/convert_passt.py passt-s-f128-p16-s16-ap.468.pt --out passt-s16-hlp --variant passt-s-f128-p16-s16

See :mod:`hlp_audio.conversion.from_passt`.
"""

import argparse
import sys
from pathlib import Path

from hlp_audio.conversion import convert_passt
from hlp_audio.conversion.common import add_converter_arguments, push_if_asked


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="PaSST .pt checkpoint, e.g. passt-s-f128-p16-s10-ap.476-swa.pt")
    parser.add_argument("--variant", default=None, help="PaSST variant, e.g. passt-s-f128-p16-s16 (default: inferred from the grid)")
    parser.add_argument("--num-attention-heads", type=int, default=None, help="default: hidden_size // 64")
    add_converter_arguments(parser)
    args = parser.parse_args(argv)
    try:
        out = convert_passt(
            args.checkpoint, args.out, variant=args.variant, num_attention_heads=args.num_attention_heads,
            post_hlp=args.post_hlp, audioset_dir=args.audioset_dir, check_files=args.check, repo_id=args.push_to_hub,
        )
    except (ValueError, FileNotFoundError) as error:  # a CheckpointError, an unknown --variant, a rejected config
        print(f"convert_passt: error: {error}", file=sys.stderr)
        return 2
    push_if_asked(args, out, f"PaSST {args.checkpoint.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
