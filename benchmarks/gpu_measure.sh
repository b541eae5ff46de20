#!/usr/bin/env bash
# Issue #23's GPU figures in one device call. Here first (the lent machine reaches no registry):
#     bash benchmarks/gpu_wheels.sh      # .whl/: transformers 5.24, hydra, omegaconf, antlr4, aim's own wheel
# then ONE `run` call, carry [".whl"], timeout_s 600:
#     bash benchmarks/gpu_measure.sh
# It installs the wheels under /tmp/site, names the card, and runs benchmarks/gpu_speed.py within BUDGET_S seconds
# (default 570, of the call's 600) in the order the issue needs them: the importance check and the rows the bars
# and the README's table need (the paper's setting, AIM pruning alone, merging alone, FastV, PDrop, the random
# control), then the model.compile levers (eager, CUDA graphs, inductor with and without its CUDA graphs), then,
# with what time is left, the dense-scoring rows (what the blockwise/Triton scoring buys). Every stage writes its
# files as it ends (gpu_speed.py), so a stage stopped at the budget loses only itself. Results under $OUT (the
# device call's folder) or outputs/gpu_measure: the first run's files at the top, the dense rows' under dense/ (no second
# importance check);
# gpu.txt (the card), log.txt and dense/log.txt. Extra arguments go to the first gpu_speed.py run
# (e.g. `--levers-only` to redo only the levers).
set -uo pipefail
cd "$(dirname "$0")/.."
budget=${BUDGET_S:-570}
out=${OUT:-outputs/gpu_measure}
mkdir -p "$out/dense"
left() { echo $((budget - SECONDS)); }

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "gpu_measure.sh: installing .whl/ failed (run bash benchmarks/gpu_wheels.sh here first)" >&2; exit 1; }
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"

timeout "$(left)" python3 benchmarks/gpu_speed.py --rows paper,aim_alone,merge,fastv,pdrop,random --out "$out" "$@" \
  2>&1 | tee "$out/log.txt"
status=$?
if [ "$(left)" -gt 90 ] && [ $# -eq 0 ]; then  # ~60 s: imports, the model's build, two rows at 20-25 s each
  timeout "$(left)" python3 benchmarks/gpu_speed.py --rows paper_dense,aim_alone_dense --levers "" --skip-importance \
    --out "$out/dense" 2>&1 | tee "$out/dense/log.txt"
fi
echo "gpu_measure.sh: $SECONDS s of $budget; first run's exit status $status (124: stopped at the budget)"
exit "$status"
