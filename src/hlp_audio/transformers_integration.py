"""transformers integration: Auto-class and pipeline registration, and AST conversion.

``register_with_transformers()`` (called when ``hlp_audio`` is imported) makes saved HLP taggers
load with the Auto classes and ``pipeline("audio-classification", model=...)`` without remote code:

- ``AutoConfig``: ``model_type="hlp_audio"`` -> ``HLPAudioConfig``;
- ``AutoModelForAudioClassification``: ``HLPAudioConfig`` -> ``HLPAudioForAudioClassification``;
- ``AutoFeatureExtractor``: ``HLPAudioConfig`` -> ``HLPAudioFeatureExtractor`` (a saved
  ``preprocessor_config.json`` naming its own ``feature_extractor_type``, e.g. ``ASTFeatureExtractor``,
  still wins);
- the ``"audio-classification"`` task -> ``HLPAudioClassificationPipeline``, which returns
  transformers' own pipeline for any model that is not an HLP tagger.

The model files also register themselves for the Auto classes' remote code, so a saved folder
loads with ``trust_remote_code=True`` where ``hlp-audio`` is not installed.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from typing import Union

__all__ = ["register_with_transformers", "register_when_transformers_is_imported", "register_pipeline", "convert_ast"]

PathLike = Union[str, "os.PathLike[str]"]


def register_with_transformers() -> bool:
    """Register the HLP classes with transformers' Auto classes and pipeline; idempotent.

    Returns ``False`` (and registers nothing) when transformers is not installed.
    """
    try:
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification
    except ImportError:
        return False
    from .modeling.configuration_hlp_audio import HLPAudioConfig
    from .modeling.modeling_hlp_audio import HLPAudioForAudioClassification

    AutoConfig.register(HLPAudioConfig.model_type, HLPAudioConfig, exist_ok=True)
    AutoModelForAudioClassification.register(HLPAudioConfig, HLPAudioForAudioClassification, exist_ok=True)
    feature_extractor = _hlp_feature_extractor_class()
    if feature_extractor is not None:
        AutoFeatureExtractor.register(HLPAudioConfig, feature_extractor, exist_ok=True)
    register_pipeline()
    return True


# The modules whose import completes a registration: transformers itself, and our model files
# (when the first import of transformers comes from inside one of them, registering has to wait
# until that file has finished executing).
_WATCHED = frozenset(
    {"transformers"}
    | {
        f"{__package__}.modeling.{name}"
        for name in ("configuration_hlp_audio", "modeling_hlp_audio", "feature_extraction_hlp_audio", "pipeline_hlp_audio")
    }
)


def _initializing(name: str) -> bool:
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Import hook: once ``transformers`` is imported, register the HLP classes (then step aside).

    ``import hlp_audio`` thus costs nothing for users of the numpy/torch core (transformers'
    modeling code takes seconds to import), and the Auto classes still know HLP taggers by the time
    any transformers code can run.
    """

    def __init__(self):
        self._finding = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _WATCHED or self._finding:
            return None
        self._finding = True  # importlib.util.find_spec asks the meta path again, this finder included
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            self.try_register(finished=fullname)  # importlib still flags it as initialising here

        spec.loader.exec_module = exec_then_register
        return spec

    def try_register(self, finished: str = "") -> None:
        if "transformers" not in sys.modules or any(_initializing(name) for name in _WATCHED - {finished}):
            return  # a watched module is still executing: the last one to finish registers
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        try:
            register_with_transformers()
        except Exception as err:  # never break the user's own import
            warnings.warn(f"hlp_audio could not register its classes with transformers: {err!r}")


def register_when_transformers_is_imported() -> None:
    """Register now if transformers is already imported, else right after it is (called by ``import hlp_audio``)."""
    if "transformers" in sys.modules and not any(_initializing(name) for name in _WATCHED):
        register_with_transformers()
    elif not any(isinstance(finder, _RegisterAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())


def _hlp_feature_extractor_class():
    """``HLPAudioFeatureExtractor`` where its module exists (it ships with the EfficientAT / PaSST backbones)."""
    try:
        from .modeling.feature_extraction_hlp_audio import HLPAudioFeatureExtractor
    except ModuleNotFoundError as err:
        if err.name and err.name.endswith("feature_extraction_hlp_audio"):
            return None
        raise
    return HLPAudioFeatureExtractor


def register_pipeline() -> None:
    """Route ``pipeline("audio-classification")`` through :class:`HLPAudioClassificationPipeline`.

    Only the implementation of the task changes (its default model and model classes stay), and the
    pipeline hands any non-HLP model to transformers' ``AudioClassificationPipeline``. The entry is
    written directly rather than with ``PIPELINE_REGISTRY.register_pipeline``, which would warn on every
    import and mark the class as a custom pipeline to save into other models' configs.
    """
    from transformers.pipelines import PIPELINE_REGISTRY

    from .modeling.modeling_hlp_audio import HLPAudioForAudioClassification

    pipeline_class = HLPAudioForAudioClassification.shipped_pipeline_class()
    task = PIPELINE_REGISTRY.supported_tasks["audio-classification"]
    if task["impl"] is not pipeline_class:
        PIPELINE_REGISTRY.supported_tasks["audio-classification"] = {**task, "impl": pipeline_class}


def convert_ast(
    source: PathLike,
    output_dir: PathLike,
    *,
    ontology=None,
    post_hlp: bool = True,
    hlp_targets: bool = True,
    check_labels: bool = True,
    **from_pretrained_kwargs,
) -> Path:
    """Convert a saved ``ASTForAudioClassification`` (folder or Hub id) into an HLP tagger folder.

    Writes the model (weights, config with the ontology, remote code) and the AST's own
    ``ASTFeatureExtractor`` to ``output_dir``, reloads it and checks the logits; returns its path.
    ``ontology`` defaults to AudioSet's (:meth:`hlp_audio.Ontology.from_audioset`).
    """
    from transformers import ASTFeatureExtractor

    from .modeling.modeling_hlp_audio import HLPAudioForAudioClassification
    from .ontology import Ontology

    source = os.fspath(source)
    try:
        feature_extractor = ASTFeatureExtractor.from_pretrained(source, **from_pretrained_kwargs)
    except OSError as err:
        raise FileNotFoundError(f"{source}: no ASTFeatureExtractor (preprocessor_config.json) to keep: {err}") from None
    if ontology is None:
        ontology = Ontology.from_audioset()
    model = HLPAudioForAudioClassification.from_ast(
        source,
        ontology,
        post_hlp=post_hlp,
        hlp_targets=hlp_targets,
        check_labels=check_labels,
        **from_pretrained_kwargs,
    )
    from .conversion import save_and_verify

    output_dir = Path(output_dir)
    probe_shape = (2, feature_extractor.max_length, feature_extractor.num_mel_bins)
    save_and_verify(model.eval(), feature_extractor, None, output_dir, probe_shape)
    return output_dir
