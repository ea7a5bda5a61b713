#!/usr/bin/env python
"""Write small local replicas of ``agkphysics/AudioSet`` (parquet) and ``confit/audioset-16khz-wds`` (WebDataset).

From the real UrbanSound8K clips in ``../shared/data/urbansound8k`` (CC BY-NC: write to a private or
temporary folder, never into the repository)::

    python scripts/write_audioset_replicas.py /tmp/replicas
    python scripts/train.py --train-data /tmp/replicas/agkphysics --train-config balanced --train-split train ...

See :mod:`hlp_audio.audioset_replicas`.
"""

import argparse
from pathlib import Path

from hlp_audio.audioset_replicas import write_agkphysics_replica, write_confit_replica


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write agkphysics/ and confit/ into")
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "urbansound8k"
    parser.add_argument("--urbansound-dir", type=Path, default=default, help="UrbanSound8K folder (metadata.csv, audio/)")
    parser.add_argument("--train-clips", type=int, default=24, help="clips per training split")
    parser.add_argument("--eval-clips", type=int, default=12, help="clips per evaluation split")
    parser.add_argument("--rows-per-shard", type=int, default=8)
    parser.add_argument("--confit-format", choices=["wav", "flac"], default="wav", help="audio files in the tar shards")
    args = parser.parse_args()
    agk = write_agkphysics_replica(
        args.out / "agkphysics", args.urbansound_dir, rows_per_shard=args.rows_per_shard,
        clips={"bal_train": args.train_clips, "unbal_train": args.train_clips, "eval": args.eval_clips},
    )
    confit = write_confit_replica(
        args.out / "confit", args.urbansound_dir, rows_per_shard=args.rows_per_shard, audio_format=args.confit_format,
        clips={"train": args.train_clips, "test": args.eval_clips},
    )
    print(f"wrote {agk} (configs balanced, unbalanced, full) and {confit} (configs 20k, 500k, 2m)")


if __name__ == "__main__":
    main()
