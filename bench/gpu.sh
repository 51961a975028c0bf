#!/usr/bin/env bash
# Every GPU benchmark in one go (about 5 minutes on one H100/H200): a float32 correctness pass at tiny
# size (equal losses on all paths), then the training step and generation against transformers' LLaVA
# at the ~0.7 B size in bf16. Usage: bench/gpu.sh [OUT_DIR]   (logs go to OUT_DIR, default bench-gpu/)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/machine.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$out/machine.txt"
status=0
run() {  # run NAME ARGS...: one benchmark, its log in OUT_DIR/NAME.txt; a failure does not stop the others
    local name=$1
    shift
    echo "== $name: $*"
    python3 "$@" 2>&1 | tee "$out/$name.txt" || status=1
}
run train_step_quick_fp32 bench/train_step.py --quick --device cuda
run train_step bench/train_step.py --size gpu --device cuda --dtype bf16
run train_step_b64 bench/train_step.py --size gpu --device cuda --dtype bf16 --batch 64 --compile
run generate bench/generate.py --size gpu --device cuda --dtype bf16
exit $status
