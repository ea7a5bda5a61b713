"""The one place where hlp-audio makes itself known to transformers and evaluate.

``import hlp_audio`` calls :func:`register` once (last line of ``hlp_audio/__init__.py``); calling it
again does nothing new. It uses only public APIs and plain files:

- **transformers** (when installed): ``AutoConfig``, ``AutoModelForAudioClassification`` and
  ``AutoFeatureExtractor`` learn ``model_type="hlp_audio"`` through their public ``register``
  methods, so saved HLP taggers load with the Auto classes and ``pipeline(...)`` without remote
  code. Nothing else changes: ``pipeline("audio-classification")`` keeps transformers' own
  implementation for every model (pass ``pipeline_class=HLPAudioClassificationPipeline`` to decode
  files without ffmpeg).
- **evaluate** (when installed): ``evaluate.load("hierarchical_map")`` looks for a local folder, then
  for the Hub module ``evaluate-metric/hierarchical_map``, then for the newest copy of that module
  in its module cache (``$HF_MODULES_CACHE/evaluate_modules/metrics/evaluate-metric--hierarchical_map/
  <hash>/``). :func:`register_evaluate_metric` writes the metric script shipped in the package
  there (plain files, named by the sha256 of their content, so an unchanged version is written
  once), and drops evaluate's "Using the latest cached version ..." warning for that entry only, so
  that loading it is silent. Loading does not import evaluate until it is used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

from .hierarchical_map import MODULE_NAME as METRIC_NAME
from .hierarchical_map import MODULE_PATH

__all__ = ["register", "register_with_transformers", "register_evaluate_metric", "evaluate_modules_cache"]

logger = logging.getLogger(__name__)

#: the name evaluate resolves ``evaluate.load("hierarchical_map")`` to in its module cache
CACHED_METRIC_NAME = f"evaluate-metric--{METRIC_NAME}"
_METRIC_DIR = Path(MODULE_PATH).parent
#: the files of the metric module: the script and the sibling it imports
METRIC_FILES = (Path(MODULE_PATH).name, "_hlp_core.py")


def register() -> None:
    """Register with transformers and evaluate, where they are installed (see the module docstring)."""
    register_with_transformers()
    if importlib.util.find_spec("evaluate") is not None:
        try:
            register_evaluate_metric()
        except OSError as err:  # a read-only cache must not break `import hlp_audio`
            logger.warning("hlp-audio could not register the %s metric with evaluate: %s", METRIC_NAME, err)


def register_with_transformers() -> bool:
    """Register the HLP tagger with the Auto classes; ``False`` (nothing done) without transformers."""
    if importlib.util.find_spec("transformers") is None:
        return False
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification

    from .modeling.configuration_hlp_audio import HLPAudioConfig
    from .modeling.feature_extraction_hlp_audio import HLPAudioFeatureExtractor
    from .modeling.modeling_hlp_audio import HLPAudioForAudioClassification

    AutoConfig.register(HLPAudioConfig.model_type, HLPAudioConfig, exist_ok=True)
    AutoModelForAudioClassification.register(HLPAudioConfig, HLPAudioForAudioClassification, exist_ok=True)
    AutoFeatureExtractor.register(HLPAudioConfig, HLPAudioFeatureExtractor, exist_ok=True)
    return True


def evaluate_modules_cache() -> Path:
    """evaluate's dynamic-module folder: ``evaluate.config.HF_MODULES_CACHE / "evaluate_modules"``.

    Read from evaluate when it is imported; otherwise computed as evaluate computes it (``$HF_MODULES_CACHE``,
    else ``$HF_HOME/modules``, else ``$XDG_CACHE_HOME/huggingface/modules``, else ``~/.cache/...``).
    """
    config = sys.modules.get("evaluate.config")
    if config is not None:
        return Path(config.HF_MODULES_CACHE) / config.MODULE_NAME_FOR_DYNAMIC_MODULES
    hf_home = os.path.expanduser(
        os.getenv("HF_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "huggingface"))
    )
    return Path(os.getenv("HF_MODULES_CACHE", os.path.join(hf_home, "modules"))) / "evaluate_modules"


def register_evaluate_metric(modules_cache: Optional[os.PathLike] = None) -> Path:
    """Make ``evaluate.load("hierarchical_map")`` find the packaged metric; return the folder written.

    Idempotent: the folder is named by the sha256 of the metric files, written only when missing, and
    made the newest entry (evaluate takes the most recently modified one) when it is not.
    """
    contents = {name: (_METRIC_DIR / name).read_bytes() for name in METRIC_FILES}
    digest = hashlib.sha256(b"".join(contents[name] for name in METRIC_FILES)).hexdigest()
    root = Path(modules_cache) if modules_cache is not None else evaluate_modules_cache()
    entries = root / "metrics" / CACHED_METRIC_NAME
    entry = entries / digest
    for package in (root, root / "metrics", entries, entry):  # the import path evaluate uses
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").touch(exist_ok=True)
    for name, data in contents.items():
        target = entry / name
        if not target.is_file() or target.read_bytes() != data:
            _write_atomically(target, data)
    script = entry / METRIC_FILES[0]
    others = [other / METRIC_FILES[0] for other in entries.iterdir() if other.name != digest]
    newest_other = max((path.stat().st_mtime for path in others if path.is_file()), default=None)
    if newest_other is not None and newest_other >= script.stat().st_mtime:
        os.utime(script)
    _QuietCachedEntryFilter.install(str(entries))
    return entry


def _write_atomically(target: Path, data: bytes) -> None:
    """Write via a temporary file and a rename: concurrent processes never read a half-written file."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


class _QuietCachedEntryFilter(logging.Filter):
    """Drops evaluate's "Using the latest cached version of the module from ..." warning for our entry only."""

    def __init__(self, entries: str):
        super().__init__()
        self.entries = entries

    def filter(self, record: logging.LogRecord) -> bool:
        return self.entries not in record.getMessage()

    @classmethod
    def install(cls, entries: str) -> None:
        evaluate_logger = logging.getLogger("evaluate.loading")
        if not any(isinstance(f, cls) and f.entries == entries for f in evaluate_logger.filters):
            evaluate_logger.addFilter(cls(entries))
