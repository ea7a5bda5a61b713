"""Conversion of the original PANNs CNN6 AudioSet checkpoint (github.com/qiuqiangkong/audioset_tagging_cnn, MIT).

The checkpoint is what PANNs' training saves: ``{"iteration": ..., "model": state_dict, ...}`` (the public
``Cnn6_mAP=0.343.pth``, Zenodo record 3987831), with the original names: ``bn0.*``,
``conv_block{1..4}.conv1.weight`` and ``.bn1.*``, ``fc1.*``, ``fc_audioset.*``, and the frozen torchlibrosa
front end (``spectrogram_extractor.stft.conv_real/conv_imag.weight``, ``logmel_extractor.melW``). The
front-end tensors must be those of ``HLPAudioFeatureExtractor(front_end="panns", num_mel_bins=64)``, which
replaces them (features are computed with ``torch.stft``); every other tensor is renamed onto
:class:`~hlp_audio.modeling.modeling_cnn6.CNN6Backbone` (the first missing, unexpected or differently
shaped key is an error). The saved folder is reloaded and must give the same logits.

The converted logits are the original model's ``fc_audioset`` outputs before its sigmoid; this is checked
against an independent implementation of the original forward on a state dict with the original layout
(``tests/test_cnn6.py``), not yet against the real file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from ..modeling.modeling_cnn6 import CNN6Backbone
from .common import (
    CheckpointError,
    check_published_digest,
    convert_torchlibrosa_checkpoint,
    load_state_dict_file,
    rename_by_rules,
    unwrap_state_dict,
)

__all__ = [
    "PANNS_PUBLISHED",
    "PANNsCheckpointError",
    "cnn6_original_key",
    "convert_panns",
    "load_panns_checkpoint",
]

#: The published CNN6 AudioSet checkpoint: file name -> (hashlib algorithm, digest), and its mAP.
PANNS_PUBLISHED = {"Cnn6_mAP=0.343.pth": ("sha256", "8a17541944f2623a2a0164e072ac2f915dcedca99968083cc44bfbc7eb682275")}
PANNS_PUBLISHED_MAP = {"Cnn6_mAP=0.343.pth": 0.343}

# backbone key -> original key; the original counts blocks from 1
_KEY_RULES = (
    (r"input_norm\.(.+)", lambda m: f"bn0.{m[1]}"),
    (r"blocks\.(\d+)\.convolution\.weight", lambda m: f"conv_block{int(m[1]) + 1}.conv1.weight"),
    (r"blocks\.(\d+)\.normalization\.(.+)", lambda m: f"conv_block{int(m[1]) + 1}.bn1.{m[2]}"),
    (r"embedding\.(weight|bias)", lambda m: f"fc1.{m[1]}"),
    (r"classifier\.(weight|bias)", lambda m: f"fc_audioset.{m[1]}"),
)


class PANNsCheckpointError(CheckpointError):
    """The file is not a PANNs CNN6 checkpoint; the message names the file and the key at fault."""


def cnn6_original_key(key: str) -> str:
    """The original PANNs name of a ``CNN6Backbone`` state-dict key (``blocks.0.convolution.weight`` ->
    ``conv_block1.conv1.weight``)."""
    return rename_by_rules(key, _KEY_RULES, "CNN6")


def load_panns_checkpoint(path) -> Dict[str, torch.Tensor]:
    """The bare state dict of a PANNs checkpoint (``weights_only=True``): unwraps ``{"model": ...}`` (PANNs'
    format) or ``{"state_dict": ...}`` and a ``module.`` prefix."""
    return unwrap_state_dict(
        load_state_dict_file(path, PANNsCheckpointError),
        required=("conv_block1.conv1.weight", "fc_audioset.weight"),
        model_name="a PANNs CNN6 checkpoint",
        source=str(path),
        error=PANNsCheckpointError,
    )


def convert_panns(
    checkpoint,
    out,
    *,
    post_hlp: bool = True,
    audioset_dir=None,
    check_files: Sequence = (),
    top_k: int = 3,
    repo_id: Optional[str] = None,
) -> Path:
    """Convert the PANNs CNN6 ``checkpoint`` and save the model folder to ``out``; returns ``out``.

    A file named like the published checkpoint (:data:`PANNS_PUBLISHED`) must have its published sha256.
    ``repo_id`` is the Hub id written in the card's usage example (default: the model name).
    """
    checkpoint = Path(checkpoint)
    published = check_published_digest(checkpoint, PANNS_PUBLISHED, PANNsCheckpointError)
    return convert_torchlibrosa_checkpoint(
        load_panns_checkpoint(checkpoint),
        "cnn6",
        CNN6Backbone.default_config("base"),
        out,
        original_key=cnn6_original_key,
        head_key="fc_audioset.weight",
        source=str(checkpoint),
        hint="; expected PANNs' Cnn6 (64 mel bins, 4 blocks of 5x5 convolutions: 64, 128, 256, 512 channels)",
        error=PANNsCheckpointError,
        card=dict(
            model_name="panns-cnn6-as-hlp",
            backbone="PANNs CNN6",
            repo_id=repo_id,
            published_map=PANNS_PUBLISHED_MAP[checkpoint.name] if published else None,
            source_name="PANNs (published, not re-measured here)",
            source_url="https://github.com/qiuqiangkong/audioset_tagging_cnn",
            origin=f"PANNs (github.com/qiuqiangkong/audioset_tagging_cnn, MIT) AudioSet checkpoint `{checkpoint.name}` "
            "(Kong, Cao, Iqbal, Wang, Wang, Plumbley, IEEE/ACM TASLP 2020)",
            conversion="hlp-audio scripts/convert_panns.py (weights unchanged, keys renamed; torchlibrosa front end "
            "re-implemented with torch.stft; logits are the original's before its sigmoid)",
            license="mit",
        ),
        post_hlp=post_hlp,
        audioset_dir=audioset_dir,
        check_files=check_files,
        top_k=top_k,
    )
