"""Helpers of the training tests: generated audio (a small tone / noise hierarchy with missing parent labels), and a fresh accelerate state.

Classes (ids, display names in brackets)::

    tone [Tone]                 noise [Noise]
    ├── low_tone [Low tone]      └── white_noise [White noise]
    └── high_tone [High tone]
    buzz [Buzz]: parents tone AND noise -> ambiguous, propagates nothing

Each clip is one kind of sound (low tone 200-400 Hz, high tone 2-4 kHz, white noise, or a buzz:
a 150 Hz square wave plus noise); its label always names the kind, and names the parent only with
probability ``parent_keep`` -- the way AudioSet's annotators often omit a parent. HLP restores
those parents.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import List, Tuple

import numpy as np

from hlp_audio import Ontology

LABELS = ["tone", "low_tone", "high_tone", "noise", "white_noise", "buzz"]
NAMES = ["Tone", "Low tone", "High tone", "Noise", "White noise", "Buzz"]
PARENTS = {"low_tone": ["tone"], "high_tone": ["tone"], "white_noise": ["noise"], "buzz": ["tone", "noise"]}
KINDS = ["low_tone", "high_tone", "white_noise", "buzz"]


def reset_accelerate_state() -> None:
    """Accelerate keeps its process state in singletons: start every in-process run afresh."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def tone_noise_ontology() -> Ontology:
    return Ontology.from_parents(LABELS, PARENTS, names=NAMES)


def synthesize(kind: str, num_samples: int, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(num_samples) / sampling_rate
    if kind == "low_tone":
        audio = np.sin(2 * np.pi * rng.uniform(200, 400) * t)
    elif kind == "high_tone":
        audio = np.sin(2 * np.pi * rng.uniform(2000, 4000) * t)
    elif kind == "white_noise":
        audio = rng.standard_normal(num_samples)
    elif kind == "buzz":
        audio = np.sign(np.sin(2 * np.pi * 150 * t)) + 0.3 * rng.standard_normal(num_samples)
    else:
        raise ValueError(kind)
    audio = audio / np.max(np.abs(audio)) * rng.uniform(0.2, 0.8)
    return audio.astype(np.float32)


def make_corpus(
    folder: Path,
    num_clips: int,
    *,
    name: str = "train",
    sampling_rate: int = 32000,
    seconds: float = 1.0,
    parent_keep: float = 0.5,
    seed: int = 0,
) -> Tuple[Path, List[List[str]]]:
    """Write ``num_clips`` wav files under ``folder/name/`` and a ``folder/name.csv`` manifest.

    The manifest has columns ``audio`` (paths relative to ``folder``) and ``labels`` (class ids
    joined by commas). Returns the manifest path and the label lists.
    """
    import soundfile as sf

    rng = np.random.default_rng(seed)
    (folder / name).mkdir(parents=True, exist_ok=True)
    rows, all_labels = [], []
    for i in range(num_clips):
        kind = KINDS[i % len(KINDS)]
        labels = [kind]
        for parent in PARENTS.get(kind, []):
            if kind != "buzz" and rng.random() < parent_keep:
                labels.append(parent)
        relative = f"{name}/clip_{i:04d}.wav"
        sf.write(folder / relative, synthesize(kind, int(seconds * sampling_rate), sampling_rate, rng), sampling_rate)
        rows.append((relative, ",".join(labels)))
        all_labels.append(labels)
    manifest = folder / f"{name}.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio", "labels"])
        writer.writerows(rows)
    return manifest, all_labels


def train_briefly_from_scratch(folder: Path, backbone_type: str, backbone_size: str, *extra: str):
    """One short epoch of ``scripts/train.py``'s loop from scratch on a small generated corpus (HLP labels,
    mixup, time and frequency masks); returns the run's results and its saved ``final`` folder."""
    from hlp_audio.training import parse_train_args, train

    train_manifest, _ = make_corpus(folder, 8, name="train", seconds=1.0, seed=0)
    eval_manifest, _ = make_corpus(folder, 4, name="eval", seconds=1.0, seed=1)
    ontology = folder / "ontology.json"
    tone_noise_ontology().to_json(ontology)
    argv = [
        "--train-manifest", str(train_manifest), "--eval-manifest", str(eval_manifest), "--ontology", str(ontology),
        "--backbone-type", backbone_type, "--backbone-size", backbone_size, "--clip-seconds", "1.0",
        "--epochs", "1", "--batch-size", "4", "--lr", "1e-3", "--warmup-steps", "1", "--num-workers", "0",
        "--hlp", "--mixup", "0.3", "--time-mask", "8", "--freq-mask", "3", "--logging-steps", "1", "--seed", "3",
        "--no-progress", "--report-to", "none", "--output-dir", str(folder / "run"), *extra,
    ]
    reset_accelerate_state()
    try:
        results = train(parse_train_args(argv))
    finally:  # leave no process state behind: a later test that forks processes (debug_launcher) would inherit it
        reset_accelerate_state()
    return results, folder / "run" / "final"
