#!/usr/bin/env bash
# Create a FRESH virtual environment at $1 (default .venv) with the pinned CPU torch and hlp-audio.
#   bash scripts/setup_venv.sh [VENV_DIR] [EXTRAS]      e.g. bash scripts/setup_venv.sh .venv-test test
# torch is installed first and alone, pinned to the 2.13.0 CPU wheel: an unpinned torch (or one
# pulled in by another package) would be a multi-GB CUDA build. torchaudio is never installed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
extras="${2:-hf}"
python="${PYTHON:-python3}"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "torch==2.13.0" -c requirements/constraints.txt
"$venv/bin/python" -m pip install --quiet -c requirements/constraints.txt -e ".[$extras]"
if [[ ",$extras," == *",test,"* ]]; then
  # The PaSST reference implementation, for the checkpoint-equality tests only. Its metadata asks for
  # timm and torchaudio, which are not wanted here: the tests import it with a stand-in timm.
  "$venv/bin/python" -m pip install --quiet --no-deps -c requirements/constraints.txt "hear21passt==0.0.26"
fi
if "$venv/bin/python" -c "import torchaudio" 2>/dev/null; then
  echo "torchaudio must not be installed (it breaks ASTFeatureExtractor with torch 2.13)" >&2
  exit 1
fi
"$venv/bin/python" -c "import torch; assert torch.__version__.split('+')[0] == '2.13.0' and torch.version.cuda is None, ('expected the CPU build of torch 2.13.0, got', torch.__version__, torch.version.cuda)"
