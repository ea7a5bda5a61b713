"""The converter scripts of the PANNs-family checkpoints (CNN6, audio ConvNeXt) as a user runs them."""

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
        ("convert_convnext", ["--size", "tiny"], "missing.pth does not exist"),
        ("convert_convnext", ["--size", "tiny", "--after-stem-dim", "7,7"], "[7, 7] is not one of the reference's stems"),
    ],
)
def test_converter_scripts_exit_2_with_the_error(script, extra, message, tmp_path):
    checkpoint = tmp_path / "missing.pth"
    if "--after-stem-dim" in extra:
        import torch

        torch.save({"model": {"downsample_layers.0.0.weight": torch.zeros(1), "head_audioset.weight": torch.zeros(1)}}, checkpoint)
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / f"{script}.py"), str(checkpoint), *extra, "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 2 and f"{script}: error: " in run.stderr and message in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_convnext_script_rejects_a_malformed_stem_and_a_test_size(tmp_path):
    for extra, message in ((["--size", "tiny", "--after-stem-dim", "252x56"], "expected comma-separated ints"),
                           (["--size", "toy"], "invalid choice: 'toy'")):
        run = subprocess.run(
            [sys.executable, str(SCRIPTS / "convert_convnext.py"), "x.pth", *extra, "--out", str(tmp_path / "o")],
            capture_output=True, text=True, timeout=300,
        )
        assert run.returncode == 2 and message in run.stderr, run.stderr[-2000:]


@pytest.mark.slow
def test_converter_script_names_tampered_audioset_metadata(shared_data, tmp_path):
    """A checksum mismatch of the AudioSet metadata ends the EfficientAT and PANNs converters as a checkpoint error does:
    exit 2 and a message naming the file, not a traceback."""
    import shutil

    audioset = tmp_path / "audioset"
    shutil.copytree(shared_data / "audioset", audioset)
    with open(audioset / "ontology.json", "a") as handle:
        handle.write("\n")
    checkpoint = shared_data / "models" / "efficientat_mn04_as" / "mn04_as_mAP_432.pt"
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / "convert_efficientat.py"), str(checkpoint), "--width-mult", "0.4",
         "--audioset-dir", str(audioset), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 2 and "convert_efficientat: error: " in run.stderr, run.stderr[-2000:]
    assert "ontology.json" in run.stderr and "sha256" in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "out").exists()
