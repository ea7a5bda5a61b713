"""Make ``evaluate.load("hierarchical_map")`` work from any working directory, offline.

``evaluate.load(name)`` with a bare name looks, in order, for ``./name/name.py``, for the canonical
Hub repository ``evaluate-metric/name``, and, when neither is found (or the Hub is unreachable or
offline), for the latest copy of that canonical module in its module cache
(``$HF_MODULES_CACHE/evaluate_modules/metrics/evaluate-metric--name/<hash>/name.py``). Registering
writes the metric script shipped in hlp-audio into that cache entry exactly as evaluate does after
a Hub download (its own ``_create_importable_file``, same hash and layout), so the last lookup
finds it. Nothing is patched in evaluate.

Registration is idempotent and cheap once done (one hash of two small files), and persists: a later
process finds the cache entry even without hlp-audio's hook. It runs:

- right after ``import evaluate``, through the import hook that ``hlp_audio-evaluate.pth`` installs
  at interpreter start-up (``_hlp_audio_evaluate_hook``; ``HLP_AUDIO_NO_EVALUATE_HOOK=1`` turns it
  off);
- when :func:`register_evaluate_module` is called, e.g. where the .pth file is not processed
  (``python -S``, or an environment that skips .pth files).

When a name is found neither locally nor on the Hub, evaluate logs "Using the latest cached version
of the module from ...": that is this entry being used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

__all__ = ["MODULE_NAME", "CANONICAL_NAME", "MODULE_PATH", "register_evaluate_module"]

MODULE_NAME = "hierarchical_map"
#: the Hub id evaluate tries first for ``evaluate.load("hierarchical_map")``; its cache entry is ours
CANONICAL_NAME = f"evaluate-metric/{MODULE_NAME}"
#: the metric script shipped in the package: ``evaluate.load(MODULE_PATH)`` loads it
MODULE_PATH = str(Path(__file__).resolve().with_name(f"{MODULE_NAME}.py"))


def register_evaluate_module(dynamic_modules_path: Optional[str] = None) -> str:
    """Put the packaged metric in evaluate's module cache; return the importable module path.

    Args:
        dynamic_modules_path: evaluate's dynamic modules folder; by default the one evaluate uses
            (``$HF_MODULES_CACHE/evaluate_modules``).
    """
    from datasets import DownloadConfig, DownloadMode
    from evaluate import loading

    imports = loading.get_imports(MODULE_PATH)
    local_imports = loading._download_additional_modules(
        name=MODULE_NAME,
        base_path=os.path.dirname(MODULE_PATH),
        imports=imports,
        download_config=DownloadConfig(),
    )
    dynamic_modules_path = dynamic_modules_path or loading.init_dynamic_modules()
    module_path, module_hash = loading._create_importable_file(
        local_path=MODULE_PATH,
        local_imports=local_imports,
        additional_files=[],
        dynamic_modules_path=dynamic_modules_path,
        module_namespace="metrics",
        name=CANONICAL_NAME,
        download_mode=DownloadMode.REUSE_DATASET_IF_EXISTS,
    )
    # evaluate picks the most recently modified copy: make this version the latest one
    script = Path(
        dynamic_modules_path, "metrics", CANONICAL_NAME.replace("/", "--"), module_hash, f"{MODULE_NAME}.py"
    )
    os.utime(script)
    return module_path
