#!/usr/bin/env bash
# The test suite: a fresh virtual environment (.venv-test) with the test extras, then pytest.
# Tests read the real AudioSet metadata from ../shared/data (or $HLP_AUDIOSET_DIR) and never touch the network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh .venv-test test
exec .venv-test/bin/python -m pytest -n 2 -q "$@"
