"""The computation behind the ``hierarchical_map`` metric script: hlp-audio's own implementation.

``evaluate`` copies this file next to the script (it is a relative import of the script). Here it
re-exports :mod:`hlp_audio.metrics`, and the default ontology is AudioSet as
:meth:`hlp_audio.Ontology.from_audioset` finds it (``$HLP_AUDIOSET_DIR``, the cache, or a verified
download). The Hub Space ships, under this same name, a self-contained bundle of the same source
files with the AudioSet hierarchy inlined (see :mod:`hlp_audio.hierarchical_map.space`).
"""

from hlp_audio.metrics import PER_CLASS_KEYS, RESULT_KEYS, Hierarchy, MetricInputError, compute_hierarchical_map

__all__ = [
    "PER_CLASS_KEYS",
    "RESULT_KEYS",
    "Hierarchy",
    "MetricInputError",
    "compute_hierarchical_map",
    "default_ontology",
]


def default_ontology():
    """The 527-class AudioSet ontology."""
    from hlp_audio import Ontology

    return Ontology.from_audioset()
