"""gRPC front end of the search server (``reid.v1.ReIDService``, health, reflection).

Generated code: ``reid_pb2`` / ``reid_pb2_grpc`` (from ``proto/reid/v1/reid.proto`` by
``scripts/gen_proto.sh``). The server is started by ``server.grpc_api.server``; the
client helper is ``server.grpc_api.client.ReIDGrpcClient``.
"""
