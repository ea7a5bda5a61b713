"""The ``hlp-audio`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

__all__ = ["main", "build_parser"]


def _add_stats(subparsers) -> None:
    from .audioset import SPLITS

    parser = subparsers.add_parser(
        "stats",
        help="HLP label statistics on AudioSet (the paper's figures)",
        description="Mean labels per clip before/after HLP, clips changed, the ontology's structure "
        "and the classes that grow most, per split and for all splits together.",
    )
    parser.add_argument("--audioset-dir", help="folder with the AudioSet metadata files (default: $HLP_AUDIOSET_DIR, else download)")
    parser.add_argument("--splits", nargs="+", choices=list(SPLITS), default=list(SPLITS), help="splits to read (default: all three)")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="classes to list by growth factor (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the growth chart of the top-N classes as a PNG")
    parser.add_argument(
        "--no-verify", dest="verify", action="store_false",
        help="read edited copies of the official files (by default their sha256 must be the official one)",
    )
    parser.set_defaults(handler=_run_stats)


def _run_stats(args) -> int:
    from .audioset import load_segments
    from .ontology import Ontology
    from .stats import compute_stats, format_stats, plot_growth

    if args.top < 0:
        raise SystemExit("--top must be >= 0")
    ontology = Ontology.from_audioset(audioset_dir=args.audioset_dir, verify=args.verify)
    segments = load_segments(args.splits, ontology, audioset_dir=args.audioset_dir, verify=args.verify)
    stats = compute_stats(ontology, segments, top=args.top)
    if args.plot:
        plot_growth(stats, args.plot)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(format_stats(stats))
        if args.plot:
            print(f"\ngrowth chart written to {args.plot}")
    return 0


def _add_tag(subparsers) -> None:
    parser = subparsers.add_parser(
        "tag",
        help="tag audio files with an HLP tagger (sigmoid scores, post-HLP)",
        description="Decode each file (wav, flac, ogg; resampled to the model's rate, no ffmpeg needed), run the "
        "model and print its top labels with sigmoid scores.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio files to tag")
    parser.add_argument(
        "--model", required=True, metavar="DIR_OR_REPO", help="a saved HLP tagger: local folder or Hub repo id"
    )
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="labels to print per file (default 5, as the pipeline)")
    parser.add_argument("--no-post-hlp", action="store_true", help="print the raw scores, without HLP post-processing")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(handler=_run_tag)


def _run_tag(args) -> int:
    """Exit status: 0 when every file was tagged, 1 when some could not be (each reported), 2 for a usage error."""
    from transformers import AutoConfig, pipeline
    from transformers.utils import logging as transformers_logging

    from .audio_loading import AudioLoadingError
    from .pipeline import HLP_AUDIO_MODEL_TYPE, HLPAudioClassificationPipeline

    if args.top_k < 1:
        print(f"hlp-audio tag: error: --top-k must be >= 1, got {args.top_k}", file=sys.stderr)
        return 2
    transformers_logging.disable_progress_bar()  # no "Loading weights" bars in this command's output
    try:
        model_type = AutoConfig.from_pretrained(args.model).model_type
        if model_type != HLP_AUDIO_MODEL_TYPE:
            print(
                f"hlp-audio tag: error: {args.model} is not an HLP tagger "
                f"(model_type {model_type!r}, expected {HLP_AUDIO_MODEL_TYPE!r})",
                file=sys.stderr,
            )
            return 2
        tagger = pipeline("audio-classification", model=args.model, pipeline_class=HLPAudioClassificationPipeline)
    except (OSError, ValueError) as err:
        print(f"hlp-audio tag: error: cannot load the model {args.model}: {err}", file=sys.stderr)
        return 2
    if args.no_post_hlp:
        tagger.model.config.post_hlp = False
    results, failed = [], []
    for path in args.files:
        try:
            tags = tagger(path, top_k=args.top_k)
        except (OSError, AudioLoadingError) as err:  # OSError: missing or unreadable file
            failed.append({"file": path, "error": str(err)})
            print(f"hlp-audio tag: {path}: not tagged: {err}", file=sys.stderr)
            continue
        results.append({"file": path, "tags": tags})
    if args.json:
        print(json.dumps(
            {"model": args.model, "post_hlp": tagger.model.config.post_hlp, "results": results, "failed": failed},
            indent=2,
        ))
    else:
        for result in results:
            print(result["file"])
            for tag in result["tags"]:
                print(f"  {tag['score']:.4f}  {tag['label']}")
    if failed:
        print(f"hlp-audio tag: {len(failed)} of {len(args.files)} files could not be tagged", file=sys.stderr)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hlp-audio", description="Hierarchical Label Propagation for audio tagging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_stats(subparsers)
    _add_tag(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from .audioset import AudioSetFileError
    from .ontology import OntologyError

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (AudioSetFileError, OntologyError) as err:
        print(f"hlp-audio {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
