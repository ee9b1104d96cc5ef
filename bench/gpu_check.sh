#!/usr/bin/env bash
# The prepared GPU check: one short call on a machine with PyTorch + CUDA (under 8 minutes
# on one H100/H200). TensorRT, onnxruntime-gpu and faiss-gpu are used where installed and
# skipped with the reason where not. Results: gpu_check.json / gpu_check.md in $OUT (the
# device machine's returned folder) or runs/gpu_check; record them here with
#   .venv/bin/python bench/gpu_check.py --record PATH/gpu_check.json
#
#   bash bench/gpu_check.sh            # on the GPU machine
#   bash bench/gpu_check.sh --dry      # CPU smoke run at tiny sizes (CI runs it via the tests)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z ${PY:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD:$PWD/client${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" bench/gpu_check.py "$@"
