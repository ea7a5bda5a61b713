#!/usr/bin/env python
"""Convert an audio ConvNeXt AudioSet checkpoint (topel/audioset-convnext-inf) into an HLP-audio model folder.

Usage::

    python scripts/convert_convnext.py convnext_tiny_471mAP.pth --size tiny --out convnext-tiny-as-hlp \
        [--check speech.wav ...] [--push-to-hub user/convnext-tiny-as-hlp]

The published file (Zenodo record 8020843) is checked against its md5; the stem is read from the checkpoint
(``--after-stem-dim 504,56`` for the one stem that cannot be). See :mod:`hlp_audio.conversion.from_convnext`.
"""

import argparse
import sys

from hlp_audio.conversion import convert_convnext
from hlp_audio.conversion.common import add_converter_arguments, push_if_asked
from hlp_audio.modeling.modeling_convnext import ConvNeXtBackbone


def _dims(text: str):
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints such as 252,56, got {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="audio ConvNeXt checkpoint, e.g. convnext_tiny_471mAP.pth")
    sizes = sorted(name for name in ConvNeXtBackbone.sizes if name != "toy")
    parser.add_argument("--size", required=True, choices=sizes, help="depths and widths of the checkpoint")
    parser.add_argument("--after-stem-dim", type=_dims, default=None, help="the reference's stem (default: from the stem weight)")
    add_converter_arguments(parser)
    args = parser.parse_args(argv)
    try:
        out = convert_convnext(
            args.checkpoint, args.size, args.out, after_stem_dim=args.after_stem_dim, post_hlp=args.post_hlp,
            audioset_dir=args.audioset_dir, check_files=args.check, repo_id=args.push_to_hub,
        )
    except (ValueError, FileNotFoundError) as error:  # a CheckpointError, or a stem the reference does not have
        print(f"convert_convnext: error: {error}", file=sys.stderr)
        return 2
    push_if_asked(args, out, f"audio ConvNeXt-{args.size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
