"""What every checkpoint converter shares: reading checkpoint files, building the AudioSet tagger,
saving and verifying the folder, tagging sample files, and the command-line options.

Each source model has its own module (``from_ast``, ``from_efficientat``, ``from_passt``) with its
state-dict mapping, config inference and card; ``scripts/convert_*.py`` are argparse front ends.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Type, Union

import torch

__all__ = [
    "CheckpointError",
    "load_state_dict_file",
    "unwrap_state_dict",
    "audioset_tagger",
    "save_and_verify",
    "print_top_tags",
    "add_converter_arguments",
    "push_if_asked",
]

PathLike = Union[str, Path]


class CheckpointError(ValueError):
    """A checkpoint that does not have the source model's layout; the message names the file and key at fault."""


def load_state_dict_file(path: PathLike, error: Type[CheckpointError] = CheckpointError) -> Mapping:
    """Load a torch checkpoint with ``weights_only=True``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for corrupt or non-torch files
        raise error(f"{path}: cannot be read as a torch checkpoint ({err})") from err
    if not isinstance(checkpoint, Mapping):
        raise error(f"{path}: expected a state dict, got {type(checkpoint).__name__}")
    return checkpoint


def unwrap_state_dict(
    checkpoint: Mapping,
    *,
    required: Sequence[str],
    model_name: str,
    source: str,
    wrapper_keys: Sequence[str] = ("state_dict", "model"),
    prefixes: Sequence[str] = ("module.", "net.", "model."),
    error: Type[CheckpointError] = CheckpointError,
) -> Dict[str, torch.Tensor]:
    """The bare state dict inside a checkpoint: unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` and strips a
    prefix that every key shares (DDP ``module.``, lightning ``net.``...). ``required`` keys must then be present."""
    for wrapper in wrapper_keys:
        if isinstance(checkpoint.get(wrapper), Mapping):
            checkpoint = checkpoint[wrapper]
    state_dict = dict(checkpoint)
    for prefix in prefixes:
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix):]: value for key, value in state_dict.items()}
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise error(
            f"{source}: no {missing[0]!r} key; this is not {model_name} (first keys: {sorted(state_dict)[:5]})"
        )
    return state_dict


def audioset_tagger(
    backbone_type: str,
    backbone_config: Mapping[str, Any],
    *,
    num_outputs: int,
    post_hlp: bool = True,
    hlp_targets: bool = True,
    audioset_dir: Optional[PathLike] = None,
    source: str = "checkpoint",
    error: Type[CheckpointError] = CheckpointError,
):
    """A fresh ``HLPAudioForAudioClassification`` over the 527 AudioSet classes (eval mode), for ``num_outputs`` logits."""
    from ..modeling.configuration_hlp_audio import HLPAudioConfig
    from ..modeling.modeling_hlp_audio import HLPAudioForAudioClassification
    from ..ontology import Ontology

    ontology = Ontology.from_audioset(audioset_dir=audioset_dir)
    if num_outputs != len(ontology):
        raise error(f"{source}: the head has {num_outputs} outputs but the AudioSet ontology has {len(ontology)} classes")
    config = HLPAudioConfig(
        ontology=ontology.to_dict(),
        post_hlp=post_hlp,
        hlp_targets=hlp_targets,
        backbone_type=backbone_type,
        backbone_config=dict(backbone_config),
    )
    return HLPAudioForAudioClassification(config).eval()


def save_and_verify(model, feature_extractor, card, out: PathLike, probe_shape: Sequence[int]):
    """Save model, feature extractor and card (if any) to ``out``; reload and require identical logits.

    Returns the reloaded model (eval mode). ``probe_shape`` is the ``input_values`` shape of a
    random probe batch, e.g. ``(2, 128, 300)`` for the 32 kHz mel input.
    """
    from ..modeling.modeling_hlp_audio import HLPAudioForAudioClassification

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    feature_extractor.save_pretrained(out)
    if card is not None:
        card.save(out)
    reloaded = HLPAudioForAudioClassification.from_pretrained(out).eval()
    probe = torch.randn(*probe_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if not torch.equal(reloaded(input_values=probe).logits, model(input_values=probe).logits):
            raise RuntimeError(f"{out}: the reloaded model does not reproduce the converted logits")
    return reloaded


def print_top_tags(model, feature_extractor, paths: Sequence[PathLike], top_k: int = 3) -> None:
    """Tag audio files with ``model`` and print the ``top_k`` sigmoid scores of each."""
    from ..audio_loading import load_audio

    for path in paths:
        audio = load_audio(path, sampling_rate=feature_extractor.sampling_rate)
        features = feature_extractor(audio, sampling_rate=feature_extractor.sampling_rate, return_tensors="pt")
        with torch.no_grad():
            scores = torch.sigmoid(model(**features).logits[0])
        top = torch.argsort(scores, descending=True, stable=True)[:top_k]  # ties in class order, as the pipeline
        listed = ", ".join(f"{model.config.id2label[int(i)]} {float(scores[i]):.3f}" for i in top)
        print(f"  {Path(path).name}: {listed}")


def add_converter_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every converter script has (output folder, post-HLP, AudioSet files, checks, Hub push)."""
    parser.add_argument("--out", type=Path, required=True, help="output model folder")
    parser.add_argument("--no-post-hlp", dest="post_hlp", action="store_false", help="save with post_hlp=False")
    parser.add_argument("--audioset-dir", default=None, help="AudioSet metadata folder (default: $HLP_AUDIOSET_DIR, else download)")
    parser.add_argument("--check", nargs="*", default=[], metavar="AUDIO", help="audio files to tag with the converted model")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="upload the folder to this Hub model repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")


def push_if_asked(args: argparse.Namespace, out: Path, description: str, api=None) -> None:
    """Upload ``out`` in one commit when ``--push-to-hub`` was given."""
    if not args.push_to_hub:
        return
    from ..hub import push_folder

    push_folder(out, args.push_to_hub, commit_message=f"Add {description} converted with hlp-audio", private=args.private, api=api)
    print(f"pushed {out} to {args.push_to_hub}")

