#!/usr/bin/env bash
# The main job: HLP label statistics on the real AudioSet files (the paper's figures).
# Sets up a fresh virtual environment (.venv-main), then runs `hlp-audio stats` on
# $HLP_AUDIOSET_DIR, else ../shared/data/audioset, else the files downloaded into the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh .venv-main hf
if [ -z "${HLP_AUDIOSET_DIR:-}" ] && [ -d ../shared/data/audioset ]; then
  export HLP_AUDIOSET_DIR="$(cd ../shared/data/audioset && pwd)"
fi
exec .venv-main/bin/hlp-audio stats --plot hlp_growth.png "$@"
