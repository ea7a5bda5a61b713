"""The ``hierarchical_map`` evaluate module: behaviour, loading (fresh subprocesses, offline), Space, accelerate."""

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hlp_audio import load_segments
from hlp_audio.hierarchical_map import MODULE_PATH, HierarchicalMAP
from hlp_audio.registration import CACHED_METRIC_NAME, register_evaluate_metric
from hlp_audio.hierarchical_map import hierarchical_map as metric_script
from hlp_audio.hierarchical_map.space import SPACE_FILES, build_space_folder
from hlp_audio.metrics import PER_CLASS_KEYS, RESULT_KEYS, MetricInputError, compute_hierarchical_map

REPO = Path(__file__).resolve().parents[1]

ANIMALS = {"labels": ["animal", "dog", "cat"], "parents": [[], [0], [0]]}
PREDICTIONS = [[0.2, 0.9, 0.1], [0.6, 0.2, 0.7], [0.4, 0.3, 0.2], [0.1, 0.6, 0.3], [0.5, 0.1, 0.4]]
REFERENCES = [[0, 1, 0], [1, 0, 1], [0, 0, 0], [0, 0, 1], [0, 0, 0]]

# Deterministic AudioSet-shaped data, rebuilt identically inside subprocesses.
DATA_CODE = """
import numpy as np
_rng = np.random.default_rng(7)
REFS = _rng.random((400, 527)) < 0.01
SCORES = (_rng.standard_normal((400, 527)) + 2.0 * REFS).astype(np.float32)
"""


def same(result, expected) -> bool:
    """Exact equality of result dicts, NaN equal to NaN (per-class lists hold NaN for left-out classes)."""
    return json.dumps(result, sort_keys=True) == json.dumps(expected, sort_keys=True)


def audioset_data():
    namespace = {}
    exec(DATA_CODE, namespace)
    return namespace["SCORES"], namespace["REFS"]


def run_python(code, tmp_path, *, env=None, cwd=None, timeout=600):
    """Run ``DATA_CODE`` then ``code`` in a fresh interpreter, offline, from an unrelated directory.

    Returns the last line the code prints, parsed as JSON.
    """
    cwd = cwd or tmp_path / "unrelated_cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    environment = dict(os.environ)
    environment.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home")
    )
    environment.update(env or {})
    completed = subprocess.run(
        [sys.executable, "-c", DATA_CODE + textwrap.dedent(code)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-6000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- the metric class
def test_compute_matches_the_core_and_batches_in_any_form(audioset_ontology):
    scores, references = audioset_data()
    expected = compute_hierarchical_map(scores, references, audioset_ontology, return_per_class=True)
    metric = HierarchicalMAP(ontology=audioset_ontology, keep_in_memory=True)
    assert same(metric.compute(predictions=scores, references=references, return_per_class=True), expected)
    for kind in ("torch", "numpy", "lists"):
        for start in range(0, 400, 150):
            chunk = slice(start, start + 150)
            if kind == "torch":
                metric.add_batch(
                    predictions=torch.from_numpy(scores[chunk]), references=torch.from_numpy(references[chunk])
                )
            elif kind == "numpy":
                metric.add_batch(predictions=scores[chunk], references=references[chunk].astype(np.int64))
            else:
                metric.add_batch(predictions=scores[chunk].tolist(), references=references[chunk].astype(int).tolist())
        assert same(metric.compute(return_per_class=True), expected), kind


def test_float64_scores_keep_their_precision():
    """Scores that differ only beyond float32 precision must not become ties (the cache is float64)."""
    base = 0.5
    scores = np.array([[base + 2e-12], [base + 1e-12], [base], [base - 1e-12]])
    references = np.array([[1], [0], [0], [1]])
    metric = HierarchicalMAP(ontology={"labels": ["only"], "parents": [[]]}, keep_in_memory=True)
    result = metric.compute(predictions=scores, references=references, return_per_class=True)
    from sklearn.metrics import average_precision_score

    exact = average_precision_score(references[:, 0], scores[:, 0])
    assert result["ap_per_class"][0] == pytest.approx(exact, abs=1e-15)
    assert result["ap_per_class"][0] == pytest.approx(0.75)  # four float32 ties would give 0.5


def test_bad_input_fails_with_a_clear_error(audioset_ontology):
    metric = HierarchicalMAP(ontology=ANIMALS, keep_in_memory=True)
    with pytest.raises(MetricInputError, match=r"predictions \(2, 3\) and references \(2, 2\) must have the same"):
        metric.add_batch(predictions=np.zeros((2, 3)), references=np.zeros((2, 2)))
    with pytest.raises(MetricInputError, match=r"binary \(0 or 1\): found 2.0 at \(row 1, class 2\)"):
        HierarchicalMAP(ontology=ANIMALS, keep_in_memory=True).compute(
            predictions=PREDICTIONS[:2], references=[[0, 1, 0], [1, 0, 2]]
        )
    with pytest.raises(MetricInputError, match=r"finite: found nan at \(row 0, class 1\)"):
        HierarchicalMAP(ontology=ANIMALS, keep_in_memory=True).compute(
            predictions=np.array([[0.1, np.nan, 0.2]]), references=np.array([[1, 0, 0]])
        )
    with pytest.raises(MetricInputError, match=r"row 0 has 3, row 1 has 2"):
        HierarchicalMAP(ontology=ANIMALS, keep_in_memory=True).compute(
            predictions=[[0.1, 0.2, 0.3], [0.1, 0.2]], references=[[1, 0, 0], [0, 1]]
        )
    with pytest.raises(MetricInputError, match=r"predictions have 3 classes but the ontology has 527"):
        HierarchicalMAP(ontology=audioset_ontology, keep_in_memory=True).compute(
            predictions=PREDICTIONS, references=REFERENCES
        )
    with pytest.raises(MetricInputError, match=r"cycle"):
        HierarchicalMAP(ontology={"labels": ["a", "b"], "parents": [[1], [0]]})


def test_every_returned_key_is_documented(audioset_ontology, tmp_path):
    folder = build_space_folder(tmp_path / "hierarchical_map", "someone/hierarchical_map", ontology=audioset_ontology)
    card = folder.joinpath("README.md").read_text()
    for key in RESULT_KEYS + PER_CLASS_KEYS:
        assert f"`{key}`" in card, key
        assert key in metric_script._KWARGS_DESCRIPTION, key
    assert set(RESULT_KEYS) | set(PER_CLASS_KEYS) == set(
        compute_hierarchical_map(PREDICTIONS, REFERENCES, ANIMALS, return_per_class=True)
    )
    assert metric_script._CITATION.count("@inproceedings") == 2 and "Tuncay" in metric_script._CITATION
    assert "ontology" in HierarchicalMAP.__doc__


# ---------------------------------------------------------------------------- registration in evaluate's cache
def test_registration_writes_the_cache_entry_evaluate_falls_back_to(tmp_path):
    from evaluate.loading import CachedEvaluationModuleFactory

    dynamic = tmp_path / "evaluate_modules"
    entry = register_evaluate_metric(dynamic)
    assert entry.parent == dynamic / "metrics" / CACHED_METRIC_NAME and len(entry.name) == 64
    scripts = sorted(p.name for p in entry.iterdir() if p.suffix == ".py")
    assert scripts == ["__init__.py", "_hlp_core.py", "hierarchical_map.py"]
    assert (entry / "hierarchical_map.py").read_bytes() == Path(MODULE_PATH).read_bytes()
    # exactly what evaluate.load("hierarchical_map") resolves to when the Hub has nothing (or is offline)
    found = CachedEvaluationModuleFactory(CACHED_METRIC_NAME, dynamic_modules_path=str(dynamic)).get_module()
    assert found.module_path == f"evaluate_modules.metrics.{CACHED_METRIC_NAME}.{entry.name}.hierarchical_map"
    # idempotent: nothing rewritten; an older entry written later is overtaken again
    script = entry / "hierarchical_map.py"
    before = script.stat().st_mtime_ns
    assert register_evaluate_metric(dynamic) == entry and script.stat().st_mtime_ns == before
    other = entry.parent / ("0" * 64)
    other.mkdir()
    (other / "hierarchical_map.py").write_text("# another version\n")
    os.utime(script, (1, 1))
    register_evaluate_metric(dynamic)
    assert script.stat().st_mtime > (other / "hierarchical_map.py").stat().st_mtime


@pytest.mark.parametrize(
    "env, relative",
    [
        ({}, "home/.cache/huggingface/modules"),
        ({"XDG_CACHE_HOME": "{tmp}/xdg"}, "xdg/huggingface/modules"),
        ({"HF_HOME": "{tmp}/hf"}, "hf/modules"),
        ({"HF_HOME": "{tmp}/hf", "HF_MODULES_CACHE": "{tmp}/modules"}, "modules"),
    ],
)
def test_cache_location_is_evaluates_own(tmp_path, env, relative):
    """Computed without importing evaluate, it must be the folder evaluate itself uses (pinned evaluate version)."""
    environment = {key: value for key, value in os.environ.items() if key not in ("HF_HOME", "HF_MODULES_CACHE", "XDG_CACHE_HOME")}
    environment["HOME"] = str(tmp_path / "home")
    environment.update({key: value.format(tmp=tmp_path) for key, value in env.items()})
    code = (
        "import sys; from hlp_audio.registration import evaluate_modules_cache; ours = str(evaluate_modules_cache()); "
        "import evaluate.config as c; print(ours); print(str(c.HF_MODULES_CACHE / c.MODULE_NAME_FOR_DYNAMIC_MODULES))"
    )
    lines = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True).stdout.split()
    assert lines[0] == lines[1] == str(tmp_path / relative / "evaluate_modules")


def test_an_unwritable_cache_does_not_break_the_import(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("the module cache cannot be created under a file")
    result = subprocess.run(
        [sys.executable, "-c", "import hlp_audio; print('imported')"],
        env=dict(os.environ, HF_MODULES_CACHE=str(blocker / "modules")), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0 and "imported" in result.stdout
    assert "could not register the hierarchical_map metric" in result.stderr


# ---------------------------------------------------------------------------- loading, in fresh subprocesses
@pytest.mark.slow
def test_bare_name_loads_from_any_directory_offline_and_silently(tmp_path, audioset_dir, audioset_ontology):
    """``evaluate.load("hierarchical_map")`` in a process that imported hlp_audio, from an unrelated directory.

    The load is silent: evaluate's "Using the latest cached version ... couldn't be found" warning is not shown.
    """
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HLP_AUDIOSET_DIR": str(audioset_dir)}
    code = f"""
        import doctest, json, logging, sys
        import hlp_audio  # registers the metric
        import evaluate
        import hlp_audio.hierarchical_map.hierarchical_map as script
        records = []
        handler = logging.Handler()
        handler.emit = lambda record: records.append(record.getMessage())
        logging.getLogger("evaluate").addHandler(handler)
        metric = evaluate.load("hierarchical_map")  # the AudioSet default
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
        runner.run(doctest.DocTestParser().get_doctest(script._KWARGS_DESCRIPTION, {{}}, "examples", None, 0))
        print(json.dumps({{
            "module": type(metric).__module__,
            "doctest": [runner.failures, runner.tries],
            "logged": [message for message in records if "cached version" in message],
            "result": metric.compute(predictions=SCORES, references=REFS),
        }}))
        """
    result = run_python(code, tmp_path, env=env)
    assert result["module"].startswith(f"evaluate_modules.metrics.{CACHED_METRIC_NAME}.")
    failures, tries = result["doctest"]
    assert failures == 0 and tries >= 6
    assert result["logged"] == []
    scores, references = audioset_data()
    assert result["result"] == compute_hierarchical_map(scores, references, audioset_ontology)


@pytest.mark.slow
def test_packaged_script_path_folder_and_class_give_the_same_result(tmp_path, audioset_dir, audioset_ontology):
    result = run_python(
        """
        import json, os, evaluate
        from hlp_audio.hierarchical_map import MODULE_PATH, HierarchicalMAP
        by_path = evaluate.load(MODULE_PATH)
        by_folder = evaluate.load(os.path.dirname(MODULE_PATH))
        direct = HierarchicalMAP()
        print(json.dumps([m.compute(predictions=SCORES, references=REFS) for m in (by_path, by_folder, direct)]))
        """,
        tmp_path,
        env={"HF_MODULES_CACHE": str(tmp_path / "modules"), "HLP_AUDIOSET_DIR": str(audioset_dir)},
    )
    scores, references = audioset_data()
    expected = compute_hierarchical_map(scores, references, audioset_ontology)
    assert result == [expected] * 3


# ---------------------------------------------------------------------------- the Hub Space
class FakeHfApi:
    """Records create_repo / upload_folder; "uploads" by copying the folder to ``root/<repo_id>``."""

    def __init__(self, root: Path):
        self.root = root
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, *, folder_path, repo_id, repo_type, commit_message):
        files = sorted(os.listdir(folder_path))
        self.calls.append(("upload_folder", dict(repo_id=repo_id, repo_type=repo_type, files=files)))
        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)
        return SimpleNamespace(oid="0" * 40)


def test_space_folder_is_self_contained(tmp_path, audioset_ontology):
    folder = build_space_folder(tmp_path / "hierarchical_map", "someone/hierarchical_map", ontology=audioset_ontology)
    assert sorted(p.name for p in folder.iterdir()) == sorted(SPACE_FILES)
    assert (folder / "hierarchical_map.py").read_bytes() == Path(MODULE_PATH).read_bytes()  # one script
    core = (folder / "_hlp_core.py").read_text()
    tree = ast.parse(core)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    standard = {"__future__", "typing", "json", "math", "os", "statistics", "collections", "dataclasses"}
    assert imported <= standard | {"numpy", "torch"}
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree))
    # the bundle holds the package's own definitions, verbatim
    for source in ("modeling/hierarchy_ops.py", "metrics.py"):
        text = (REPO / "src" / "hlp_audio" / source).read_text()
        definitions = [n for n in ast.parse(text).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert len(definitions) >= 4
        for node in definitions:
            assert ast.get_source_segment(text, node) in core, (source, node.name)
    namespace = {}
    exec(compile(core, "_hlp_core.py", "exec"), namespace)
    assert namespace["default_ontology"]() == audioset_ontology.to_dict()
    from huggingface_hub import metadata_load

    metadata = metadata_load(folder / "README.md")
    assert (metadata["sdk"], metadata["app_file"]) == ("gradio", "app.py")
    assert {"evaluate", "metric"} <= set(metadata["tags"])
    card = (folder / "README.md").read_text()
    assert 'evaluate.load("someone/hierarchical_map")' in card and "{{" not in card
    with pytest.raises(FileExistsError, match="not empty"):
        build_space_folder(folder, "someone/hierarchical_map")


@pytest.mark.slow
def test_pushed_space_loads_without_hlp_audio(tmp_path, audioset_dir, audioset_ontology):
    """The Space pushed to a fake Hub, then ``evaluate.load("someone/hierarchical_map")`` without hlp_audio."""
    from hlp_audio.hierarchical_map.space import push_space

    hub = tmp_path / "hub"
    api = FakeHfApi(hub)
    push_space("someone/hierarchical_map", ontology=audioset_ontology, api=api)
    assert api.calls[0] == (
        "create_repo",
        {
            "repo_id": "someone/hierarchical_map",
            "repo_type": "space",
            "private": False,
            "exist_ok": True,
            "space_sdk": "gradio",
        },
    )
    assert api.calls[1][1]["files"] == sorted(SPACE_FILES)
    result = run_python(
        f"""
        import json, os, sys
        sys.modules["hlp_audio"] = None  # not installed, as for a Hub user
        import evaluate, evaluate.loading
        # the fake Hub: evaluate resolves "someone/hierarchical_map" files to this folder instead of huggingface.co
        evaluate.loading.hf_hub_url = lambda path, name, revision=None: os.path.join({str(hub)!r}, path, name)
        from_hub = evaluate.load("someone/hierarchical_map")
        small = evaluate.load("someone/hierarchical_map", ontology={json.dumps(ANIMALS)!s})
        print(json.dumps([
            type(from_hub).__module__,
            from_hub.compute(predictions=SCORES, references=REFS, return_per_class=True),
            small.compute(predictions={PREDICTIONS!r}, references={REFERENCES!r}),
            sorted(name for name in sys.modules if name.startswith("hlp_audio") and sys.modules[name] is not None),
        ]))
        """,
        tmp_path,
        env={"HF_MODULES_CACHE": str(tmp_path / "modules"), "HLP_AUDIOSET_DIR": ""},
    )
    module, from_hub, small, hlp_modules = result
    assert module.startswith("evaluate_modules.metrics.someone--hierarchical_map.")
    assert hlp_modules == []
    scores, references = audioset_data()
    expected = compute_hierarchical_map(scores, references, audioset_ontology, return_per_class=True)
    assert same(from_hub, expected)
    assert small == compute_hierarchical_map(PREDICTIONS, REFERENCES, ANIMALS)


# ---------------------------------------------------------------------------- accelerate
def _gathered_over_two_processes(audioset_dir):
    """Run in each of 2 processes: gather_for_metrics over several steps, then compute."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader, TensorDataset

    from hlp_audio import Ontology

    accelerator = Accelerator(cpu=True)
    ontology = Ontology.from_audioset(audioset_dir=audioset_dir)
    labels = load_segments(["eval"], ontology, audioset_dir=audioset_dir)["eval"].labels[:101]
    offsets = labels.offsets.to_numpy()
    references = np.zeros((101, 527), dtype=np.float32)  # float targets, as a training loop has them
    rows = np.repeat(np.arange(101), np.diff(offsets - offsets[0]))
    references[rows, labels.values.to_numpy()[offsets[0] : offsets[-1]]] = 1
    logits = (np.random.default_rng(1).standard_normal((101, 527)) + 2 * references).astype(np.float32)
    # 101 clips, 2 processes x 7: the last step is padded, and gather_for_metrics drops the padding
    dataset = TensorDataset(torch.from_numpy(logits), torch.from_numpy(references))
    loader = accelerator.prepare(DataLoader(dataset, batch_size=7))
    metric = HierarchicalMAP(ontology=ontology, keep_in_memory=True)
    steps = 0
    for batch_logits, batch_references in loader:
        batch_logits, batch_references = accelerator.gather_for_metrics((batch_logits, batch_references))
        metric.add_batch(predictions=batch_logits, references=batch_references)
        steps += 1
    result = metric.compute(return_per_class=True)
    expected = compute_hierarchical_map(logits, references, ontology, return_per_class=True)
    assert accelerator.num_processes == 2 and steps == 8
    assert result["num_samples"] == 101
    assert same(result, expected), accelerator.process_index


@pytest.mark.slow
def test_gather_for_metrics_over_steps_equals_one_batch(audioset_dir):
    from accelerate import debug_launcher

    debug_launcher(_gathered_over_two_processes, args=(str(audioset_dir),), num_processes=2)


FAKE_GRADIO = '''
"""A stand-in for gradio 3 (the Space's sdk_version): records the interface evaluate builds, and on launch()
submits one table, as the UI's Dataframe would, to the interface's function."""
import json, os
import pandas as pd

class _Component:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

class inputs:
    Dataframe = _Component

class outputs:
    Textbox = _Component

class Interface:
    def __init__(self, fn, inputs, outputs, **kwargs):
        self.fn, self.inputs, self.outputs, self.kwargs = fn, inputs, outputs, kwargs

    def launch(self):
        with open(os.environ["FAKE_GRADIO_ROWS"]) as handle:
            rows = json.load(handle)
        table = pd.DataFrame({header: [json.dumps(row[i]) for row in rows] for i, header in enumerate(self.inputs.kwargs["headers"])})
        print(json.dumps({
            "headers": list(self.inputs.kwargs["headers"]),
            "datatype": list(self.inputs.kwargs["datatype"]),
            "title": self.kwargs["title"],
            "article_mentions_hlp": "Hierarchical Label Propagation" in self.kwargs["article"],
            "result": self.fn(table),
        }))
'''


@pytest.mark.slow
def test_space_app_runs_its_gradio_widget(tmp_path, audioset_ontology):
    """The Space's app.py, run as the Space runs it, through evaluate's own gradio widget code (gradio stand-in)."""
    folder = build_space_folder(tmp_path / "space", "someone/hierarchical_map", ontology=audioset_ontology)
    stand_in = tmp_path / "stand_in"
    stand_in.mkdir()
    (stand_in / "gradio.py").write_text(FAKE_GRADIO)
    scores, references = audioset_data()
    rows = [[scores[i].astype(float).tolist(), references[i].astype(int).tolist()] for i in range(40)]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    env = dict(
        os.environ, PYTHONPATH=str(stand_in), FAKE_GRADIO_ROWS=str(tmp_path / "rows.json"), HF_MODULES_CACHE=str(tmp_path / "modules"),
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
    )
    hide_hlp_audio = "import sys; sys.modules['hlp_audio'] = None; import runpy; runpy.run_path('app.py', run_name='__main__')"
    completed = subprocess.run(
        [sys.executable, "-c", hide_hlp_audio], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["headers"] == ["predictions", "references"] and report["datatype"] == ["str", "str"]
    assert report["title"] == "Metric: hierarchical_map" and report["article_mentions_hlp"]
    expected = compute_hierarchical_map(scores[:40], references[:40], audioset_ontology)
    assert report["result"]["map_hlp_post"] == pytest.approx(expected["map_hlp_post"], abs=1e-12)
    assert report["result"]["num_samples"] == 40
