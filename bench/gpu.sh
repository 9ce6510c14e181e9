#!/usr/bin/env bash
# One training step of the `paper` 3D preset on a CUDA GPU (issue 9, item 4):
# input 4 x 1 x 80^3, bf16 autocast, channels-last; prints JSON lines with ms/step,
# samples/s (samples_per_s) and peak GPU memory (peak_gpu_mib), plus the fp32 memory
# model. Without a CUDA device it prints that it skipped and exits 0.
#
# Usage: bash bench/gpu.sh [extra bench_train_step.py arguments, e.g. --rounds 10]
set -euo pipefail
cd "$(dirname "$0")"
PY="${PY:-../.venv/bin/python}"
[ -x "$PY" ] || PY=python3

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo '{"bench": "gpu", "status": "skipped: no CUDA device"}'
    echo "skipped: no CUDA device" >&2
    exit 0
fi

"$PY" -c 'import json, torch; p = torch.cuda.get_device_properties(0); print(json.dumps({"bench": "gpu", "device": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "torch": torch.__version__, "cuda": torch.version.cuda}))'
"$PY" bench_train_step.py --preset paper3d --size 80 --batch 4 --device cuda --precision bf16 \
    --channels-last --rounds 5 "$@"
"$PY" bench_train_step.py --preset paper3d --size 80 --memory-model
