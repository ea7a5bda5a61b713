"""What every checkpoint converter shares: reading checkpoint files (and checking the published ones'
digests), renaming state dicts key by key, building the AudioSet tagger, saving and verifying the folder,
the card of a published checkpoint, tagging sample files, and the command-line options; plus the check of
torchlibrosa's front-end tensors, which PANNs and the audio ConvNeXt checkpoints both carry.

Each source model has its own module (``from_ast``, ``from_efficientat``, ``from_passt``, ``from_panns``,
``from_convnext``) with its state-dict mapping, config inference and card; ``scripts/convert_*.py`` are
argparse front ends.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch

__all__ = [
    "CheckpointError",
    "check_published_digest",
    "load_state_dict_file",
    "unwrap_state_dict",
    "rename_state_dict",
    "rename_by_rules",
    "torchlibrosa_front_end_tensors",
    "check_torchlibrosa_front_end",
    "audioset_tagger",
    "published_checkpoint_card",
    "convert_torchlibrosa_checkpoint",
    "save_and_verify",
    "save_converted",
    "print_top_tags",
    "add_converter_arguments",
    "push_if_asked",
]

PathLike = Union[str, Path]


class CheckpointError(ValueError):
    """A checkpoint that does not have the source model's layout; the message names the file and key at fault."""


def check_published_digest(path: PathLike, published: Mapping[str, Tuple[str, str]], error: Type[CheckpointError] = CheckpointError) -> bool:
    """When ``path`` has the name of a published file (``published``: name -> (hashlib algorithm, hex digest)),
    its digest must be the published one; returns whether it is a published file (False for any other name)."""
    path = Path(path)
    if path.name not in published:
        return False
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    algorithm, expected = published[path.name]
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise error(
            f"{path}: {algorithm} {digest.hexdigest()} is not the published {expected} of {path.name}: the file is "
            "damaged or is not the published one (download it again, or give another file another name)"
        )
    return True


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


def rename_state_dict(
    original: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    original_key: Callable[[str], str],
    *,
    ignored: Sequence[str] = (),
    source: str = "checkpoint",
    hint: str = "",
    error: Type[CheckpointError] = CheckpointError,
) -> Dict[str, torch.Tensor]:
    """``original`` renamed to the keys of ``expected`` (a backbone's ``state_dict()``), ``original_key(key)``
    giving the original name of each backbone key.

    Every backbone key needs its original tensor, of the same shape, and every original key but ``ignored``
    must be used: the first difference (in the backbone's order, then unused keys) is an error naming the original
    key (and the backbone key), so a file of another architecture or size is refused rather than half loaded.
    """
    mapping = {key: original_key(key) for key in expected}
    for key, old in mapping.items():  # in the backbone's order, from the input on
        if old not in original:
            raise error(f"{source}: no {old!r} key (the {key!r} tensor of the backbone){hint}")
        if tuple(original[old].shape) != tuple(expected[key].shape):
            raise error(
                f"{source}: {old!r} has shape {tuple(original[old].shape)} but the backbone's {key!r} is "
                f"{tuple(expected[key].shape)}{hint}"
            )
    used = set(mapping.values()) | set(ignored)
    unexpected = [key for key in original if key not in used]
    if unexpected:
        raise error(f"{source}: unexpected key {unexpected[0]!r} ({len(unexpected)} unused in all){hint}")
    return {key: original[old] for key, old in mapping.items()}


def rename_by_rules(key: str, rules: Sequence[Tuple[str, Callable[[re.Match], str]]], model_name: str) -> str:
    """The original name of a backbone key: the first ``(pattern, name of the match)`` rule whose pattern matches
    the whole key."""
    for pattern, original in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return original(match)
    raise KeyError(f"internal: no original name for {model_name} key {key!r}")


#: torchlibrosa's front-end tensors in PANNs-family checkpoints (frozen, not trainable): the STFT as two
#: convolutions (windowed cosines and sines) and the mel matrix.
TORCHLIBROSA_FRONT_END_KEYS = (
    "spectrogram_extractor.stft.conv_real.weight",
    "spectrogram_extractor.stft.conv_imag.weight",
    "logmel_extractor.melW",
)


def torchlibrosa_front_end_tensors(feature_extractor) -> Dict[str, torch.Tensor]:
    """The tensors torchlibrosa stores for the front end of a ``front_end="panns"`` feature extractor:
    ``conv_real[k, 0, n] = w[n] cos(2 pi k n / n_fft)``, ``conv_imag[k, 0, n] = -w[n] sin(2 pi k n / n_fft)`` (w the
    periodic Hann window centred in ``n_fft``) and ``melW`` = the Slaney filter bank transposed, float32."""
    front_end = feature_extractor.build_front_end()
    n_fft = feature_extractor.n_fft
    window = torch.zeros(n_fft, dtype=torch.float64)
    offset = (n_fft - feature_extractor.win_length) // 2
    window[offset : offset + feature_extractor.win_length] = torch.hann_window(feature_extractor.win_length, periodic=True, dtype=torch.float64)
    phase = 2.0 * math.pi * ((torch.arange(n_fft // 2 + 1)[:, None] * torch.arange(n_fft)[None, :]) % n_fft) / n_fft
    return {
        TORCHLIBROSA_FRONT_END_KEYS[0]: (torch.cos(phase) * window)[:, None, :].float(),
        TORCHLIBROSA_FRONT_END_KEYS[1]: (-torch.sin(phase) * window)[:, None, :].float(),
        TORCHLIBROSA_FRONT_END_KEYS[2]: front_end.mel_filters.T.contiguous().float(),
    }


def check_torchlibrosa_front_end(
    state_dict: Mapping[str, torch.Tensor], feature_extractor, *, source: str, error: Type[CheckpointError] = CheckpointError
) -> List[str]:
    """The torchlibrosa front-end tensors of ``state_dict`` must be those of ``feature_extractor``'s front end
    (checkpoints saved without them are accepted); returns the keys found. A difference is an error naming the key:
    the weights were trained on other features."""
    found = []
    for key, tensor in torchlibrosa_front_end_tensors(feature_extractor).items():
        if key not in state_dict:
            continue
        given = state_dict[key].float()
        if tuple(given.shape) != tuple(tensor.shape):
            raise error(
                f"{source}: {key!r} has shape {tuple(given.shape)} but the front end of "
                f"HLPAudioFeatureExtractor(front_end='panns', num_mel_bins={feature_extractor.num_mel_bins}) has {tuple(tensor.shape)}"
            )
        difference = float((given - tensor).abs().max())
        if difference > 1e-4 * float(tensor.abs().max()):
            raise error(
                f"{source}: {key!r} differs from the front end of HLPAudioFeatureExtractor(front_end='panns', "
                f"num_mel_bins={feature_extractor.num_mel_bins}) by up to {difference:.3g}: the weights were trained on "
                "other features (this converter expects 32 kHz, n_fft 1024, a Hann window of 1024, Slaney mel bands from "
                "50 Hz to 14 kHz)"
            )
        found.append(key)
    return found


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


def published_checkpoint_card(
    model,
    feature_extractor,
    *,
    model_name: str,
    backbone: str,
    repo_id: Optional[str],
    published_map: Optional[float],
    source_name: str,
    source_url: str,
    origin: str,
    conversion: str,
    license: str,
    training: Optional[Dict[str, str]] = None,
):
    """The model card of a converted published checkpoint (:class:`hlp_audio.hub.HLPModelCard`): the backbone with
    its parameter count, its published AS-Base mAP on AudioSet eval (original labels, no post-processing; ``None``
    for none) as a result whose source says where it comes from, and ``trained_with_hlp=False`` (published
    checkpoints were trained on the original labels). ``training`` adds lines to the card's training section."""
    from ..hub import HLPModelCard, MAPResult

    backbone = f"{backbone} ({sum(parameter.numel() for parameter in model.parameters()):,} parameters)"

    results = []
    if published_map is not None:
        results.append(
            MAPResult(
                "AS-Base", post_hlp=False, value=published_map, dataset_name="AudioSet eval",
                source_name=source_name, source_url=source_url,
            )
        )
    return HLPModelCard.from_model(
        model,
        model_name,
        feature_extractor=feature_extractor,
        backbone=backbone,
        repo_id=repo_id or model_name,
        results=results,
        trained_with_hlp=False,
        training={
            "origin": origin,
            "conversion": conversion,
            **(training or {}),
            "evaluation": "AudioSet mAP as published with the checkpoint, not re-measured here" if results else "none",
        },
        license=license,
    )


def convert_torchlibrosa_checkpoint(
    original: Mapping[str, torch.Tensor],
    backbone_type: str,
    config,
    out: PathLike,
    *,
    original_key: Callable[[str], str],
    head_key: str,
    source: str,
    hint: str,
    error: Type[CheckpointError],
    card: Mapping[str, Any],
    post_hlp: bool = True,
    audioset_dir: Optional[PathLike] = None,
    check_files: Sequence[PathLike] = (),
    top_k: int = 3,
) -> Path:
    """Convert a checkpoint of the PANNs family (PANNs, the audio ConvNeXt) to an AudioSet tagger folder at ``out``.

    Its torchlibrosa front-end tensors must be those of the backbone's feature extractor
    (:func:`check_torchlibrosa_front_end`), every other tensor is renamed onto the backbone of ``config``
    (:func:`rename_state_dict` with ``original_key``), and the folder is saved with the extractor and the card
    ``published_checkpoint_card(**card)``, then reloaded and verified; ``check_files`` are tagged with it.
    """
    from ..modeling.modeling_hlp_audio import backbone_class

    model = audioset_tagger(
        backbone_type,
        config.to_dict(),
        num_outputs=original[head_key].shape[0],
        post_hlp=post_hlp,
        audioset_dir=audioset_dir,
        source=f"{source}: {head_key!r}",
        error=error,
    )
    extractor = backbone_class(backbone_type).build_feature_extractor(config)
    front_end_keys = check_torchlibrosa_front_end(original, extractor, source=source, error=error)
    model.backbone.load_state_dict(
        rename_state_dict(original, model.backbone.state_dict(), original_key, ignored=front_end_keys, source=source, hint=hint, error=error),
        strict=True,
    )
    card = published_checkpoint_card(model, extractor, **card)
    probe_shape = (2, 300, config.num_mel_bins)  # (batch, frames, mel)
    return save_converted(model, extractor, card, out, probe_shape, check_files=check_files, top_k=top_k)


def save_converted(
    model, feature_extractor, card, out: PathLike, probe_shape: Sequence[int], *, check_files: Sequence[PathLike] = (), top_k: int = 3
) -> Path:
    """The last steps of a published checkpoint's conversion: :func:`save_and_verify` with its ``card``, a line saying
    so, and the ``check_files`` tagged by the reloaded folder (:func:`print_top_tags`); returns ``Path(out)``."""
    reloaded = save_and_verify(model, feature_extractor, card, out, probe_shape)
    print(f"saved {card.backbone}, post_hlp={model.config.post_hlp}, to {out}; the reloaded folder reproduces the converted logits")
    if check_files:
        print_top_tags(reloaded, feature_extractor, check_files, top_k)
    return Path(out)


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

