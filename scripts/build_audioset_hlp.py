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
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

from tqdm.auto import tqdm

from hlp_audio import Ontology, __version__
from hlp_audio.audioset import (
    AUDIOSET_FILES,
    SPLITS,
    AudioSetFileError,
    Segments,
    load_segments,
    resolve_file,
    sha256_of,
)
from hlp_audio.cards import render_card
from hlp_audio.datasets_integration import segments_to_dataset
from hlp_audio.hub import push_folder

DEFAULT_OUT = os.path.join("outputs", "audioset-hlp")
ONTOLOGY_FILE = "hlp_ontology.json"
CARD_TEMPLATE = "dataset_card.md"


def data_file(split: str) -> str:
    """Path of a split's parquet file inside the dataset folder (the Hub's naming)."""
    return f"data/{split}-00000-of-00001.parquet"


def size_category(rows: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < bound:
            return label
    return "1M<n<10M" if rows < 10_000_000 else "10M<n<100M"


def verify_sources(splits: Sequence[str], audioset_dir: Optional[str]) -> list:
    """Check every source file against the pinned sha256 of the official release (the card cites them)."""
    names = ["ontology.json", "class_labels_indices.csv"] + [SPLITS[split] for split in splits]
    verified = []
    for name in tqdm(names, desc="Verifying AudioSet source files (sha256)", unit="file"):
        path = resolve_file(name, audioset_dir=audioset_dir)
        digest = sha256_of(path)
        if digest != AUDIOSET_FILES[name].sha256:
            raise AudioSetFileError(
                f"{path}: sha256 {digest} is not that of the official {name} ({AUDIOSET_FILES[name].sha256}); "
                "AS-HLP is built from the official files only"
            )
        verified.append({"name": name, "sha256": digest})
    return verified


def example_propagation(ontology: Ontology) -> dict:
    """A class and the ancestors HLP adds to it, for the card's first paragraph (Bark when it exists)."""
    names = list(ontology.names)
    index = names.index("Bark") if "Bark" in names else max(range(len(names)), key=lambda i: len(ontology.ancestors(i)))
    ancestors = [f"*{ontology.names[j]}*" for j in ontology.ancestors(index)]
    phrase = ancestors[0] if len(ancestors) == 1 else ", ".join(ancestors[:-1]) + " and " + ancestors[-1]
    return {"name": ontology.names[index], "ancestors": phrase}


def read_splits(ontology: Ontology, splits: Sequence[str], audioset_dir: Optional[str]) -> Dict[str, Segments]:
    segments = {}
    for split in tqdm(splits, desc="Reading AudioSet segment lists", unit="split"):
        segments.update(load_segments([split], ontology, audioset_dir=audioset_dir))
    return segments


def render_dataset_card(
    ontology: Ontology, segments: Mapping[str, Segments], stats: dict, repo_id: str, source_files: Sequence[dict]
) -> str:
    """The README.md of the dataset: Hub metadata, then the card with the statistics of ``stats``."""
    from huggingface_hub import DatasetCardData

    total = sum(len(split) for split in segments.values())
    card_data = DatasetCardData(
        pretty_name="AudioSet labels with Hierarchical Label Propagation (AS-HLP)",
        license=["cc-by-4.0", "cc-by-sa-4.0"],
        task_categories=["audio-classification"],
        size_categories=[size_category(total)],
        tags=["audioset", "hierarchical-label-propagation", "multi-label", "audio-tagging"],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": data_file(split)} for split in segments],
            }
        ],
    )
    return render_card(
        CARD_TEMPLATE,
        card_data=card_data.to_yaml(),
        repo_id=repo_id,
        total_clips=total,
        split_names=list(segments),
        splits=[{"name": split, "path": data_file(split), "clips": len(segments[split])} for split in segments],
        stats=stats,
        growth_scope="all splits together" if "all" in stats["splits"] else f"split {next(iter(segments))}",
        source_files=list(source_files),
        example=example_propagation(ontology),
        hlp_audio_version=__version__,
    )


def build(
    out_dir: "os.PathLike[str] | str",
    ontology: Ontology,
    segments: Mapping[str, Segments],
    *,
    source_files: Sequence[dict],
    repo_id: Optional[str] = None,
    overwrite: bool = False,
) -> Path:
    """Write the parquet files, the ontology and the dataset card of AS-HLP to ``out_dir``.

    ``source_files`` are the verified inputs (``verify_sources``), cited in the card.
    """
    from hlp_audio.stats import compute_stats

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} is not empty; choose another --out or pass --overwrite")
        shutil.rmtree(out_dir)
    (out_dir / "data").mkdir(parents=True)
    for split, split_segments in tqdm(segments.items(), desc="Writing parquet files", unit="split"):
        dataset = segments_to_dataset(split_segments, ontology, hlp=True, split=split)
        dataset.to_parquet(str(out_dir / data_file(split)))
    ontology.to_json(out_dir / ONTOLOGY_FILE)
    with tqdm(total=1, desc="Computing statistics for the card", unit="card") as progress:
        stats = compute_stats(ontology, segments)
        card = render_dataset_card(ontology, segments, stats, repo_id or str(out_dir), source_files)
        (out_dir / "README.md").write_text(card, encoding="utf-8")
        progress.update()
    return out_dir


def main(argv: Optional[Sequence[str]] = None, api=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--audioset-dir", help="folder with the AudioSet metadata files (default: $HLP_AUDIOSET_DIR, else download)"
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument(
        "--push-to-hub", metavar="REPO_ID", help="upload the folder to this Hub dataset repo (one commit)"
    )
    parser.add_argument(
        "--splits", nargs="+", choices=list(SPLITS), default=list(SPLITS), help="splits to include (default: all three)"
    )
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--token", help="Hub token (default: the logged-in one)")
    parser.add_argument("--overwrite", action="store_true", help="replace the content of a non-empty --out folder")
    args = parser.parse_args(argv)

    try:
        source_files = verify_sources(args.splits, args.audioset_dir)
        ontology = Ontology.from_audioset(audioset_dir=args.audioset_dir)
        segments = read_splits(ontology, args.splits, args.audioset_dir)
        out_dir = build(
            args.out, ontology, segments, source_files=source_files, repo_id=args.push_to_hub, overwrite=args.overwrite
        )
    except (FileExistsError, AudioSetFileError) as err:
        print(f"build_audioset_hlp: error: {err}", file=sys.stderr)
        return 2
    total = sum(len(split) for split in segments.values())
    print(f"Wrote {total:,} clips ({', '.join(segments)}) with base and HLP labels to {out_dir}")
    if args.push_to_hub:
        commit = push_folder(
            out_dir,
            args.push_to_hub,
            repo_type="dataset",
            commit_message=f"AS-HLP: AudioSet labels with Hierarchical Label Propagation ({', '.join(segments)})",
            private=args.private,
            token=args.token,
            api=api,
        )
        print(f"Pushed {out_dir} to https://huggingface.co/datasets/{args.push_to_hub} ({commit})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
