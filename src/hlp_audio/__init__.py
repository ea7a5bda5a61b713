"""hlp-audio: Hierarchical Label Propagation (HLP) for audio tagging in the Hugging Face ecosystem.

The core (``Ontology``, ``propagate_labels``, ``propagate_scores``, ``compute_hierarchical_map``,
the AudioSet metadata readers) needs only numpy, pyarrow and torch. The Hugging Face integrations
are thin layers on it; their names are imported on first use:

- datasets: ``hlp_propagate`` (a ``Dataset.map`` function), ``load_audioset``;
- transformers: ``HLPAudioConfig``, ``HLPAudioForAudioClassification``, ``HLPAudioFeatureExtractor``,
  ``HLPAudioClassificationPipeline``;
- evaluate: ``evaluate.load("hierarchical_map")``.

Importing the package registers the tagger with transformers' Auto classes and the metric with
evaluate, where those are installed: see :mod:`hlp_audio.registration`, the one place that does it.
"""

import importlib

__version__ = "0.2.0"

from .audioset import AudioSetFileError, Segments, load_segments, read_segments, resolve_file
from .labels import HLPInputError
from .metrics import compute_hierarchical_map
from .ontology import Ontology, OntologyError
from .propagation import propagate_labels, propagate_scores

# name -> submodule that defines it, imported on first attribute access (PEP 562)
_LAZY_EXPORTS = {
    "hlp_propagate": "datasets_map",
    "HLPPropagate": "datasets_map",
    "load_audioset": "audioset_dataset",
    "HLPAudioConfig": "modeling.configuration_hlp_audio",
    "HLPAudioForAudioClassification": "modeling.modeling_hlp_audio",
    "HLPAudioFeatureExtractor": "modeling.feature_extraction_hlp_audio",
    "HLPAudioClassificationPipeline": "pipeline",
}

__all__ = [
    "__version__",
    "Ontology",
    "OntologyError",
    "HLPInputError",
    "propagate_labels",
    "propagate_scores",
    "compute_hierarchical_map",
    "AudioSetFileError",
    "Segments",
    "read_segments",
    "load_segments",
    "resolve_file",
    *_LAZY_EXPORTS,
]


def __getattr__(name):
    if name in _LAZY_EXPORTS:
        value = getattr(importlib.import_module(f".{_LAZY_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hlp_audio' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


from .registration import register  # noqa: E402

register()
