"""The ``hierarchical_map`` evaluate metric (mAP on original and HLP-propagated labels).

- ``evaluate.load("hierarchical_map")``: works from any directory once hlp-audio is installed
  (see :mod:`hlp_audio.hierarchical_map.registration`);
- ``evaluate.load(MODULE_PATH)``: the metric script shipped here;
- ``HierarchicalMAP``: the metric class (importing it imports ``evaluate``);
- :mod:`hlp_audio.hierarchical_map.space`: the self-contained Hub Space version.

The computation lives in :mod:`hlp_audio.metrics`.
"""

from .registration import CANONICAL_NAME, MODULE_NAME, MODULE_PATH, register_evaluate_module

__all__ = ["HierarchicalMAP", "MODULE_NAME", "CANONICAL_NAME", "MODULE_PATH", "register_evaluate_module"]


def __getattr__(name):
    if name == "HierarchicalMAP":  # imported lazily: it needs evaluate and datasets
        from .hierarchical_map import HierarchicalMAP

        return HierarchicalMAP
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

