#!/usr/bin/env bash
# What tests/test_triton.py and bench/bench_triton.py need: NVIDIA Triton 2.51 (CPU) from
# PyPI's nvidia-pytriton in its own venv (~/.cache/reid/triton-venv: the server side
# needs numpy<2), with tritonclient 2.51's perf_analyzer, and Debian's libb64 for it.
# Idempotent. Run by .ci/run; where it fails, those tests skip with the reason.
#
#   bash scripts/install_triton.sh        (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! ls /usr/lib/x86_64-linux-gnu/libb64.so* >/dev/null 2>&1; then
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y -qq libb64-0d >/dev/null \
        || { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq libb64-0d >/dev/null; }
fi
PY=${PY:-.venv/bin/python}
if [[ ! -x "$PY" ]]; then PY=python3; fi
"$PY" tests/triton_server.py
