"""Generated protobuf / gRPC code of ``proto/reid/v1/reid.proto`` (scripts/gen_proto.sh)."""
