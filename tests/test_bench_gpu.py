"""scripts/bench_gpu.sh: on a machine without CUDA it skips with a clear message; its table reads the logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "bench_gpu.sh"


def test_without_a_gpu_every_benchmark_is_skipped_with_a_clear_message():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)  # the GPU branch parses too
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "no CUDA GPU is visible to torch" in completed.stdout and "every GPU benchmark is skipped" in completed.stdout
    assert "==" not in completed.stderr  # nothing was run


def test_the_table_lists_each_benchmark_with_its_status_and_figures(tmp_path):
    text = SCRIPT.read_text()
    table = text[text.index("<<'PYTHON'\n") + len("<<'PYTHON'\n") : text.rindex("\nPYTHON")]
    (tmp_path / "data.status").write_text("ok\n")
    (tmp_path / "data.log").write_text("noise\n   mn04 training batch 48:  5000.00 clips/s\n   - mn04 train from prepared: 2 cores -> feeds it\n")
    (tmp_path / "train.status").write_text("TIMEOUT after 120 s\n")
    (tmp_path / "train.log").write_text("GPU NVIDIA H200: AST-base\n   loading\n")
    (tmp_path / "model.status").write_text("skipped: scripts/bench_model.py does not take --device\n")
    out = subprocess.run([sys.executable, "-", str(tmp_path)], input=table, capture_output=True, text=True, check=True).stdout
    rows = out.strip().splitlines()
    assert rows[:2] == ["| benchmark | status | figure |", "| --- | --- | --- |"]
    assert "| bench_data.py (data path, mn04 / AST-base on the GPU) | ok | mn04 training batch 48:  5000.00 clips/s |" in rows
    assert "| | | - mn04 train from prepared: 2 cores -> feeds it |" in rows
    assert any("TIMEOUT after 120 s | last output: loading" in row for row in rows)
    assert any("bench_passt.py" in row and "| not run |" in row for row in rows)
    assert any("bench_model.py --device cuda | skipped: scripts/bench_model.py does not take --device" in row for row in rows)
