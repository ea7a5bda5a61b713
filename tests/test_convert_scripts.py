"""The converter scripts of the PANNs-family checkpoints as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, extra, message",
    [
        ("convert_panns", [], "missing.pth does not exist"),
    ],
)
def test_converter_scripts_exit_2_with_the_error(script, extra, message, tmp_path):
    checkpoint = tmp_path / "missing.pth"
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / f"{script}.py"), str(checkpoint), *extra, "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 2 and f"{script}: error: " in run.stderr and message in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "out").exists()

