#!/usr/bin/env bash
# The load generator of bench/bench_server.py: Debian's wrk (C, with a Lua script for
# the raw-body POST). Benchmarks are not run in CI; run this once on a machine that
# benchmarks. Does nothing when wrk is already installed.
#
#   bash scripts/install_bench_tools.sh        (as root, or with sudo available)
set -euo pipefail

if command -v wrk >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install_bench_tools.sh: no apt-get here; install wrk yourself" >&2
    exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq wrk >/dev/null
wrk -v 2>&1 | head -1 || true
