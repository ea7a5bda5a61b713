"""Run a saved HLP tagger folder through transformers' own pipeline with ``trust_remote_code=True``, in a fresh
interpreter where ``import hlp_audio`` fails: what a user without hlp-audio gets from the Hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = (
    "import sys, json\n"
    "import soundfile\n"
    "sys.modules['hlp_audio'] = None  # any import of the installed package fails\n"
    "from transformers import pipeline\n"
    "tagger = pipeline('audio-classification', model=sys.argv[1], trust_remote_code=True)\n"
    "audio, rate = soundfile.read(sys.argv[2], dtype='float32')  # transformers would need ffmpeg for a path\n"
    "result = tagger(audio, top_k=int(sys.argv[3]))\n"
    "print(json.dumps({'result': result, 'model': type(tagger.model).__module__,\n"
    "                  'extractor': type(tagger.feature_extractor).__module__, 'pipeline': type(tagger).__name__}))\n"
)


def remote_code_pipeline(folder: Path, audio_path: Path, work_dir: Path, top_k: int = 3) -> dict:
    """``{"result": [...], "model": module, "extractor": module, "pipeline": class name}`` from the subprocess."""
    env = dict(os.environ, HF_MODULES_CACHE=str(work_dir / "modules"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    process = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(folder), str(audio_path), str(top_k)],
        capture_output=True, text=True, env=env, cwd=work_dir, timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])
