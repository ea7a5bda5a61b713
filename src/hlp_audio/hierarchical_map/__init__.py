"""The ``hierarchical_map`` evaluate metric (mAP on original and HLP-propagated labels).

- ``evaluate.load("hierarchical_map")``: works from any directory in a process that imported
  ``hlp_audio`` (see :mod:`hlp_audio.registration`);
- ``evaluate.load(MODULE_PATH)``: the metric script shipped here;
- ``HierarchicalMAP``: the metric class (importing it imports ``evaluate``);
- :mod:`hlp_audio.hierarchical_map.space`: the self-contained Hub Space version.

The computation lives in :mod:`hlp_audio.metrics`.
"""

from pathlib import Path

__all__ = ["HierarchicalMAP", "MODULE_NAME", "MODULE_PATH"]

MODULE_NAME = "hierarchical_map"
#: the metric script shipped in the package: ``evaluate.load(MODULE_PATH)`` loads it
MODULE_PATH = str(Path(__file__).resolve().with_name(f"{MODULE_NAME}.py"))


def __getattr__(name):
    if name == "HierarchicalMAP":  # imported lazily: it needs evaluate and datasets
        from .hierarchical_map import HierarchicalMAP

        return HierarchicalMAP
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
