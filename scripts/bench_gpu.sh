#!/usr/bin/env bash
# Every benchmark figure that needs a GPU, in one run of under 8 minutes, printed as one table:
#   - the data path: clips/s per core per format, DataLoader throughput, mn04 / AST-base training and
#     inference on the GPU, cores per GPU, and mn04 training fed by the streaming data path (bench_data.py);
#   - HLP AST-base vs ASTForAudioClassification training throughput, bf16, batch 48 (bench_train.py);
#   - PaSST-like vs AST-base training throughput (bench_passt.py);
#   - the batched 32 kHz mel front end and mn04 inference clips/s (bench_frontend.py);
#   - bench_model.py --device cuda, when that script takes --device.
# Each runs under its own time limit, and never past the whole budget (BENCH_GPU_BUDGET, default 460 s).
# Without a CUDA GPU it says so and skips everything (exit 0).
#   bash scripts/bench_gpu.sh            # PYTHON=.venv/bin/python bash scripts/bench_gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"

if ! "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "bench_gpu.sh: no CUDA GPU is visible to torch (torch.cuda.is_available() is False): every GPU benchmark is skipped."
  echo "Run it on a GPU machine; the CPU parts run alone: python scripts/bench_data.py, scripts/bench_train.py, ..."
  exit 0
fi

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
budget_end=$((SECONDS + ${BENCH_GPU_BUDGET:-460}))

run() {  # NAME LIMIT SCRIPT [ARGS...]: one benchmark, its output in $logs/NAME.log, its status in $logs/NAME.status
  local name=$1 limit=$2
  shift 2
  local left=$((budget_end - SECONDS))
  ((limit > left)) && limit=$left
  if ((limit < 20)); then
    echo "skipped: the ${BENCH_GPU_BUDGET:-460} s budget is spent" > "$logs/$name.status"
    return
  fi
  echo "== $name: $* (limit ${limit} s)" >&2
  timeout --kill-after=10 "$limit" "$python" "$@" > "$logs/$name.log" 2>&1
  local rc=$?
  case $rc in
    0) echo "ok" ;;
    124 | 137) echo "TIMEOUT after ${limit} s" ;;
    *) echo "FAILED (exit $rc): see the log below" ;;
  esac > "$logs/$name.status"
}

cores=$(nproc)
workers=$((cores > 1 ? cores - 1 : 1))  # one core for the training process
run data 150 scripts/bench_data.py --device cuda --clips 48 --steps 10 --workers 4 "$workers" --gpu-cores "$cores"
run train 120 scripts/bench_train.py --rounds 4 --steps 10 --clips 192 --num-workers "$workers"
run passt 100 scripts/bench_passt.py --steps 15 --warmup 3
run frontend 50 scripts/bench_frontend.py --skip-cpu
if "$python" scripts/bench_model.py --help 2>/dev/null | grep -q -- "--device"; then
  run model 50 scripts/bench_model.py --device cuda
else
  echo "skipped: scripts/bench_model.py does not take --device" > "$logs/model.status"
fi

"$python" - "$logs" <<'PYTHON'
"""One table: each benchmark's status and its throughput lines (clips/s, samples/s, shares, verdicts)."""
import re
import sys
from pathlib import Path

logs = Path(sys.argv[1])
figure = re.compile(r"(clips/s|samples/s|\d %|feeds it|CANNOT|goal|TB for|cores per GPU)", re.IGNORECASE)
names = {
    "data": "bench_data.py (data path, mn04 / AST-base on the GPU)",
    "train": "bench_train.py (HLP AST-base vs ASTForAudioClassification)",
    "passt": "bench_passt.py (PaSST-like vs AST-base)",
    "frontend": "bench_frontend.py (mel front end, mn04 inference)",
    "model": "bench_model.py --device cuda",
}
print("\n| benchmark | status | figure |\n| --- | --- | --- |")
for key, title in names.items():
    status_file = logs / f"{key}.status"
    status = status_file.read_text().strip() if status_file.exists() else "not run"
    log = logs / f"{key}.log"
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()] if log.exists() else []
    figures = [line for line in lines if figure.search(line) and "Warning" not in line]
    if status != "ok" and lines:
        figures += [f"last output: {lines[-1]}"]
    print(f"| {title} | {status} | {(figures or [''])[0].replace('|', '/')} |")
    for line in figures[1:]:
        print(f"| | | {line.replace('|', '/')} |")
PYTHON
