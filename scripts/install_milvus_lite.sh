#!/usr/bin/env bash
# milvus-lite for bench/bench_gallery.py --backend milvus-lite, in its own virtual
# environment (default ~/.cache/reid/milvus-lite-venv, or MILVUS_LITE_VENV): milvus-lite 3
# needs pymilvus 3, while this repository's gallery uses pymilvus 2.6 (docs/GALLERY.md), so
# nothing of the main environment depends on it. The benchmark runs its Milvus driver
# (bench/_milvus_bench.py, numpy + pymilvus only) with this environment's python.
# Does nothing when the environment is already there.
#
#   bash scripts/install_milvus_lite.sh        (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail

VENV="${MILVUS_LITE_VENV:-$HOME/.cache/reid/milvus-lite-venv}"
if "$VENV/bin/python" -c "import milvus_lite, pymilvus, numpy" 2>/dev/null; then
    exit 0
fi
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/pip" install --quiet "milvus-lite>=3,<4" "pymilvus>=3,<4" numpy
"$VENV/bin/python" -c "import milvus_lite, pymilvus; print('milvus-lite', milvus_lite.__version__, 'pymilvus', pymilvus.__version__)"
echo "installed $VENV (REID_MILVUS_LITE_PYTHON=$VENV/bin/python for another location)"
