"""gRPC front end of the search server (``reid.v1.ReIDService``, health, reflection).

The generated code lives with the API contract: ``reid_client.proto.reid_pb2`` /
``reid_pb2_grpc`` (from ``proto/reid/v1/reid.proto`` by ``scripts/gen_proto.sh``).
``server.grpc_api.server`` starts the server, ``servicer`` implements the RPCs over
``SearchService`` and ``convert`` translates messages; the client is
``reid_client.grpc_client``.
"""
