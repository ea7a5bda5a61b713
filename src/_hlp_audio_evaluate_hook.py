"""Start-up hook of hlp-audio: register the ``hierarchical_map`` metric when ``evaluate`` is imported.

``hlp_audio-evaluate.pth`` (installed at the root of site-packages) runs :func:`install` when
Python starts. It costs one entry in ``sys.meta_path`` and imports nothing (``os`` and ``sys`` are
already loaded). When a program later imports ``evaluate``, the hook lets the import finish, then calls
``hlp_audio.hierarchical_map.register_evaluate_module()``, so that
``evaluate.load("hierarchical_map")`` finds the metric from any working directory, offline (see
``hlp_audio/hierarchical_map/registration.py``). A failure is logged, never raised: importing
evaluate must not break because of hlp-audio.

Set ``HLP_AUDIO_NO_EVALUATE_HOOK=1`` to turn it off.
"""

import os
import sys

__all__ = ["install"]

_TARGET = "evaluate"
_DISABLE = "HLP_AUDIO_NO_EVALUATE_HOOK"


def _register() -> None:
    try:
        from hlp_audio.hierarchical_map.registration import register_evaluate_module

        register_evaluate_module()
    except Exception as err:  # noqa: BLE001 - never break `import evaluate`
        import logging

        logging.getLogger("hlp_audio").warning(
            "hlp-audio could not register the hierarchical_map metric with evaluate: %s", err
        )


# The finder and loader follow the importlib protocols without subclassing importlib.abc, whose
# import would cost every interpreter start-up.
class _RegisteringLoader:
    """Wraps evaluate's own loader; registers the metric once evaluate's module has executed."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # downstream code sees evaluate's real loader, never this wrapper
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _register()

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _EvaluateImportWatcher:
    """One-shot finder: on the first import of ``evaluate``, wraps the loader the other finders return."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TARGET:
            return None
        _uninstall()
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


def _uninstall() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _EvaluateImportWatcher)]


def install() -> None:
    """Register now if evaluate is already imported, otherwise right after its import."""
    if os.environ.get(_DISABLE):
        return
    if _TARGET in sys.modules:
        _register()
    elif not any(isinstance(finder, _EvaluateImportWatcher) for finder in sys.meta_path):
        sys.meta_path.insert(0, _EvaluateImportWatcher())
