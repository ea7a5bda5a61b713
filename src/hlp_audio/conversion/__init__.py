"""Conversion of original checkpoints into HLP tagger folders, one module per source model.

- :mod:`.from_ast`: transformers' ``ASTForAudioClassification`` (``convert_ast``);
- :mod:`.from_efficientat`: EfficientAT "mn" state dicts (``convert_efficientat``);
- :mod:`.from_passt`: PaSST / ``hear21passt`` checkpoints (``convert_passt``);
- :mod:`.from_panns`: the PANNs CNN6 checkpoint (``convert_panns``);
- :mod:`.from_convnext`: the audio ConvNeXt checkpoints of Pellegrini et al. (``convert_convnext``);
- :mod:`.common`: checkpoint reading, the AudioSet tagger, save-and-verify, sample tagging.

``scripts/convert_*.py`` are the command-line front ends.
"""

from .common import CheckpointError, print_top_tags, save_and_verify
from .from_ast import convert_ast, hlp_tagger_from_ast
from .from_convnext import ConvNeXtCheckpointError, convert_convnext
from .from_efficientat import EfficientATCheckpointError, convert_efficientat
from .from_panns import PANNsCheckpointError, convert_panns
from .from_passt import PaSSTCheckpointError, convert_passt

__all__ = [
    "CheckpointError",
    "ConvNeXtCheckpointError",
    "EfficientATCheckpointError",
    "PANNsCheckpointError",
    "PaSSTCheckpointError",
    "convert_ast",
    "convert_convnext",
    "convert_efficientat",
    "convert_panns",
    "convert_passt",
    "hlp_tagger_from_ast",
    "print_top_tags",
    "save_and_verify",
]
