#!/usr/bin/env python
"""Rewrite a split once at a model's rate as mono 16-bit WAV bytes in Arrow (a save_to_disk folder), cheap to decode.

    python scripts/prepare_data.py agkphysics/AudioSet --config full --split bal_train+unbal_train \\
        --sampling-rate 32000 --streaming --num-workers 16 --out /data/audioset-32k-train
    python scripts/train.py --train-data /data/audioset-32k-train ...   # read memory-mapped, ~1 ms a clip

See :mod:`hlp_audio.training.prepare` (why, and the disk cost).
"""

import argparse

from hlp_audio import Ontology
from hlp_audio.training.data import add_data_arguments
from hlp_audio.training.manifests import manifest_options
from hlp_audio.training.prepare import prepare_split
from hlp_audio.training.sources import open_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", metavar="SOURCE", help="what train.py's --train-data takes")
    parser.add_argument("--config", metavar="NAME")
    parser.add_argument("--split", metavar="SPLIT")
    parser.add_argument("--out", required=True, help="new folder to write")
    rate = parser.add_mutually_exclusive_group(required=True)
    rate.add_argument("--sampling-rate", type=int, help="target rate, e.g. 32000 (EfficientAT, PaSST) or 16000 (AST)")
    rate.add_argument("--model", help="a saved HLP tagger: its feature extractor's rate and its ontology")
    parser.add_argument("--audioset-dir", help="AudioSet metadata folder (the labels' ontology without --model)")
    add_data_arguments(parser)
    args = parser.parse_args()
    if args.model:
        from transformers import AutoConfig, AutoFeatureExtractor  # the HLP classes are registered by importing hlp_audio

        sampling_rate = int(AutoFeatureExtractor.from_pretrained(args.model).sampling_rate)
        ontology = Ontology.from_dict(AutoConfig.from_pretrained(args.model).ontology)
    else:
        sampling_rate, ontology = args.sampling_rate, Ontology.from_audioset(audioset_dir=args.audioset_dir)
    source = open_source(
        args.data, ontology, config=args.config, split=args.split, streaming=args.streaming, cache_dir=args.cache_dir,
        min_shards=max(1, args.num_workers), **manifest_options(args),
    )
    counts = prepare_split(
        source, ontology, args.out, sampling_rate=sampling_rate, num_workers=args.num_workers, skip_bad_audio=args.skip_bad_audio
    )
    print(f"wrote {counts['clips']} clips ({counts['bytes'] / 1e9:.2f} GB in {counts['files']} files) to {args.out}; "
          f"{counts['skipped']} skipped")


if __name__ == "__main__":
    main()
