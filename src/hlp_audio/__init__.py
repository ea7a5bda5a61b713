"""hlp-audio: Hierarchical Label Propagation for audio tagging.

The core (``Ontology``, ``propagate_labels``, ``propagate_scores``, AudioSet metadata) needs only
numpy, pyarrow and torch. The Hugging Face integrations are imported lazily on first use.
"""

__version__ = "0.1.0"

from .audioset import AudioSetFileError, Segments, load_segments, read_segments, resolve_file
from .ontology import Ontology, OntologyError
from .propagation import HLPInputError, propagate_labels, propagate_scores

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
]
