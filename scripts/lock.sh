#!/usr/bin/env bash
# Regenerates constraints/lock.txt: the newest versions that satisfy pyproject.toml and
# client/pyproject.toml (core and the train, ingest, dev and milvus extras) with torch pinned by constraints/cpu.txt.
# Needs pip-tools (installed into a temporary venv here). Run the tests after it.
#
#   bash scripts/lock.sh [EXTRA_PIP_COMPILE_ARGS...]   (e.g. -c constraints to hold versions)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet pip-tools
"$tmp/venv/bin/pip-compile" --quiet --extra train --extra ingest --extra dev --extra milvus --strip-extras --no-emit-index-url \
  --no-emit-find-links --no-annotate -c constraints/cpu.txt "$@" \
  -o "$tmp/lock.txt" pyproject.toml client/pyproject.toml

{
  sed -n '1,/^$/p' constraints/lock.txt | grep '^#'
  grep -v '^#' "$tmp/lock.txt" | grep -v '^torch==' | grep -v '^$'
} >"$tmp/new.txt"
mv "$tmp/new.txt" constraints/lock.txt
echo "wrote constraints/lock.txt ($(grep -c '==' constraints/lock.txt) packages)"
