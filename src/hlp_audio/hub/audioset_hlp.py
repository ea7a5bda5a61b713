"""The AS-HLP dataset: AudioSet's labels with Hierarchical Label Propagation, as parquet + card (``scripts/build_audioset_hlp.py``).

Writes, under the output folder::

    README.md                                  dataset card (hub_cards/dataset_card.md, real statistics)
    hlp_ontology.json                          the label hierarchy used (Ontology.to_dict())
    data/<split>-00000-of-00001.parquet        ytid, start_seconds, end_seconds, labels, hlp_labels

and can upload that folder to a Hub dataset repo in one commit.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

from tqdm.auto import tqdm

from .. import __version__
from ..audioset import AUDIOSET_FILES, SPLITS, Segments, load_segments
from ..audioset_dataset import segments_to_dataset
from ..ontology import Ontology
from ..stats import compute_stats
from .cards import render_card
from .push import push_folder

__all__ = ["DEFAULT_OUT", "build_audioset_hlp", "publish_audioset_hlp", "render_dataset_card", "official_sources"]

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


def official_sources(splits: Sequence[str]) -> list:
    """The official files AS-HLP is built from and their pinned sha256 (the card cites them; the readers check them)."""
    names = ["ontology.json", "class_labels_indices.csv"] + [SPLITS[split] for split in splits]
    return [{"name": name, "sha256": AUDIOSET_FILES[name].sha256} for name in names]


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


def build_audioset_hlp(
    out_dir: "os.PathLike[str] | str",
    ontology: Ontology,
    segments: Mapping[str, Segments],
    *,
    source_files: Sequence[dict],
    repo_id: Optional[str] = None,
    overwrite: bool = False,
) -> Path:
    """Write the parquet files, the ontology and the dataset card of AS-HLP to ``out_dir``.

    ``source_files`` are the official inputs (:func:`official_sources`), cited in the card.
    """
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


def publish_audioset_hlp(
    out_dir,
    *,
    splits: Sequence[str] = tuple(SPLITS),
    audioset_dir: Optional[str] = None,
    repo_id: Optional[str] = None,
    private: bool = False,
    token: Optional[str] = None,
    overwrite: bool = False,
    api=None,
) -> Path:
    """Read the official files (their sha256 checked), build the AS-HLP folder in ``out_dir`` and, with ``repo_id``,
    push it (one commit)."""
    ontology = Ontology.from_audioset(audioset_dir=audioset_dir)
    source_files = official_sources(splits)
    segments = read_splits(ontology, splits, audioset_dir)
    out_dir = build_audioset_hlp(out_dir, ontology, segments, source_files=source_files, repo_id=repo_id, overwrite=overwrite)
    total = sum(len(split) for split in segments.values())
    print(f"Wrote {total:,} clips ({', '.join(segments)}) with base and HLP labels to {out_dir}")
    if repo_id:
        commit = push_folder(
            out_dir,
            repo_id,
            repo_type="dataset",
            commit_message=f"AS-HLP: AudioSet labels with Hierarchical Label Propagation ({', '.join(segments)})",
            private=private,
            token=token,
            api=api,
        )
        print(f"Pushed {out_dir} to https://huggingface.co/datasets/{repo_id} ({commit})")
    return out_dir
