"""Shared fixtures. Real AudioSet metadata comes from ../shared/data (or $HLP_AUDIOSET_DIR)."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get("HLP_AUDIOSET_DIR")
    if env:
        # HLP_AUDIOSET_DIR names the audioset/ folder itself; the models live beside it.
        return Path(env).resolve().parent
    return (REPO_ROOT.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``shared/data``: audioset/ metadata and models/ (the real mn04 checkpoint and sample wavs)."""
    root = _shared_data()
    if not (root / "audioset" / "ontology.json").is_file():
        pytest.fail(f"real AudioSet data not found at {root}; set HLP_AUDIOSET_DIR to the audioset/ folder")
    return root


@pytest.fixture(scope="session")
def audioset_dir(shared_data) -> Path:
    return shared_data / "audioset"


@pytest.fixture(scope="session")
def audioset_ontology(audioset_dir):
    from hlp_audio import Ontology

    return Ontology.from_audioset(audioset_dir=audioset_dir)


@pytest.fixture(autouse=True)
def _no_network_no_hub(monkeypatch, tmp_path_factory):
    """No test touches the network or the real Hub; the AudioSet cache is a temp folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HLP_AUDIOSET_CACHE", str(tmp_path_factory.mktemp("audioset_cache")))
