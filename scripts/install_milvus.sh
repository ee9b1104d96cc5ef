#!/usr/bin/env bash
# The Milvus server of tests/test_gallery_milvus.py: Milvus 2.3.5 standalone (binary with
# embedded etcd) from the `milvus` PyPI package, in its own virtual environment
# .venv-milvus-server (the launcher needs setuptools<70 for pkg_resources; nothing of the
# server's own environment changes). The client, pymilvus, comes with the `milvus` extra
# that `make install` installs. Run by .ci/run before `make test`; does nothing when the
# launcher is already there. In CI (CI=true) the Milvus tests fail without it.
#
#   bash scripts/install_milvus.sh        (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv-milvus-server
if [[ -x "$VENV/bin/milvus-server" ]]; then
    exit 0
fi
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/pip" install --quiet "milvus==2.3.5" "setuptools<70"
echo "installed $VENV/bin/milvus-server (Milvus 2.3.5 standalone)"
