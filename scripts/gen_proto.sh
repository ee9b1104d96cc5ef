#!/usr/bin/env bash
# Regenerates the gRPC Python code in client/reid_client/proto/ from proto/reid/v1/reid.proto.
#
# Usage: scripts/gen_proto.sh [OUT_DIR]   (default: client/reid_client/proto)
# Needs grpcio-tools (pip install -e '.[dev]'). PYTHON picks the interpreter
# (default: .venv/bin/python when present, else python3).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/client/reid_client/proto}"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$python" -m grpc_tools.protoc \
  --proto_path="$root/proto" \
  --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
  reid/v1/reid.proto

mkdir -p "$out"
# protoc mirrors the proto package (reid/v1/); the code lives flat in reid_client.proto,
# so the stub's import of the messages module is rewritten to the package path
# (a bare `from reid.v1 import` would also clash with this repo's own `reid` package).
for name in reid_pb2.py reid_pb2.pyi reid_pb2_grpc.py; do
  sed -e 's/^from reid\.v1 import reid_pb2 as/from reid_client.proto import reid_pb2 as/' \
    "$tmp/reid/v1/$name" >"$out/$name"
done
echo "generated $out/{reid_pb2.py,reid_pb2.pyi,reid_pb2_grpc.py}"
