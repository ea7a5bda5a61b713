"""hlp-audio: Hierarchical Label Propagation for audio tagging.

The core (``Ontology``, ``propagate_labels``, ``propagate_scores``, AudioSet metadata) needs only
numpy, pyarrow and torch. The Hugging Face integrations are thin layers on it, imported lazily on
first use of their names (``hlp_propagate``, ``load_audioset``, ...).
"""

import importlib

__version__ = "0.1.0"

from .audioset import AudioSetFileError, Segments, load_segments, read_segments, resolve_file
from .ontology import Ontology, OntologyError
from .propagation import HLPInputError, propagate_labels, propagate_scores

# name -> submodule that defines it; imported on first attribute access (PEP 562)
_LAZY_EXPORTS = {
    "hlp_propagate": "datasets_integration",
    "register_with_transformers": "transformers_integration",
    "HLPPropagate": "datasets_integration",
    "load_audioset": "datasets_integration",
}

__all__ = [
    "__version__",
    "Ontology",
    "OntologyError",
    "HLPInputError",
    "AudioSetFileError",
    "Segments",
    "propagate_labels",
    "propagate_scores",
    "read_segments",
    "load_segments",
    "resolve_file",
    *_LAZY_EXPORTS,
]


def __getattr__(name):  # noqa: E302
    if name in _LAZY_EXPORTS:
        value = getattr(importlib.import_module(f".{_LAZY_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hlp_audio' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


from .transformers_integration import register_when_transformers_is_imported  # noqa: E402

# Auto classes + the audio-classification pipeline know HLP taggers as soon as transformers is
# imported (now if it already is); importing hlp_audio alone does not import transformers.
register_when_transformers_is_imported()
