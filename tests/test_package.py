"""Package-level behaviour: the public API at the top level, registration through public APIs only, no hidden machinery."""

import ast
import site
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_public_api_at_the_top_level():
    import hlp_audio
    from hlp_audio import (  # noqa: F401  -- every name of the README's API imports from the package itself
        HLPAudioClassificationPipeline,
        HLPAudioConfig,
        HLPAudioFeatureExtractor,
        HLPAudioForAudioClassification,
        Ontology,
        compute_hierarchical_map,
        hlp_propagate,
        load_audioset,
        propagate_labels,
        propagate_scores,
    )
    from hlp_audio.modeling.configuration_hlp_audio import HLPAudioConfig as config_class

    assert HLPAudioConfig is config_class
    assert set(hlp_audio.__all__) <= set(dir(hlp_audio))
    assert all(getattr(hlp_audio, name) is not None for name in hlp_audio.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hlp_audio.nope


def test_importing_registers_through_public_apis_in_either_order():
    for imports in ("import hlp_audio, transformers", "import transformers, hlp_audio"):
        out = run_python(
            f"{imports}\n"
            "import sys\n"
            "from transformers import AutoConfig, AutoModelForAudioClassification\n"
            "from transformers.pipelines import PIPELINE_REGISTRY\n"
            "config = AutoConfig.for_model('hlp_audio')\n"
            "model_class = AutoModelForAudioClassification._model_mapping[type(config)]\n"
            "impl = PIPELINE_REGISTRY.supported_tasks['audio-classification']['impl']\n"
            "print(type(config).__name__, model_class.__name__, getattr(impl, '__name__', impl))"
        )
        # the audio-classification task keeps transformers' own implementation
        assert out.split()[:2] == ["HLPAudioConfig", "HLPAudioForAudioClassification"], imports
        assert out.split()[2].endswith("audio_classification.AudioClassificationPipeline") or out.split()[2] == "AudioClassificationPipeline"


def test_no_hidden_machinery():
    """No import hooks, no start-up .pth code, no setuptools overrides, no private registry writes."""
    for path in SRC.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "sys.meta_path" not in source, path
        assert "supported_tasks[" not in source, path
        assert "_create_importable_file" not in source and "_download_additional_modules" not in source, path
    assert not list(SRC.rglob("*.pth"))
    assert not (SRC.parent / "setup.py").exists()
    for directory in site.getsitepackages():
        assert not list(Path(directory).glob("hlp_audio*.pth")) or all(
            "import" not in pth.read_text() for pth in Path(directory).glob("hlp_audio*.pth")
        ), "an installed .pth file of hlp-audio runs code at start-up"


def test_no_module_over_500_lines_and_no_import_circles():
    modules = {}
    for path in (SRC / "hlp_audio").rglob("*.py"):
        lines = path.read_text(encoding="utf-8").count("\n")
        assert lines <= 520, f"{path} has {lines} lines"
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    # module -> modules of the package it imports at module level (relative or absolute)
    edges = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for candidate in [target] + [f"{target}.{alias.name}" for alias in node.names]:
                    if candidate in modules and candidate != name:
                        targets.add(candidate)
        edges[name] = targets
    # a cycle among module-level imports is a circle
    state = {}

    def visit(node, trail):
        state[node] = "active"
        for target in edges[node]:
            if state.get(target) == "active" and not _is_parent_package(target, node):
                raise AssertionError(f"import circle: {' -> '.join(trail + [node, target])}")
            if target not in state:
                visit(target, trail + [node])
        state[node] = "done"

    for module in modules:
        if module not in state:
            visit(module, [])


def _is_parent_package(target: str, node: str) -> bool:
    """A package's ``__init__`` importing its own submodules is not a circle."""
    return node.startswith(target + ".")
