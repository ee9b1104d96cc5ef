"""The person re-ID search server's API contract and its typed Python clients.

* :mod:`reid_client.schemas`: the request and answer models (the server builds its
  answers from them; the OpenAPI schema is generated from them);
* :mod:`reid_client.proto`: the generated gRPC code of ``reid/v1/reid.proto``;
* :class:`ReIDClient` / :class:`AsyncReIDClient`: HTTP, blocking and asyncio;
* :class:`ReIDGrpcClient` / :class:`AsyncReIDGrpcClient`: gRPC, blocking and asyncio.

This package needs neither torch nor the server: ``pip install ./client`` installs it
alone (httpx, pydantic, numpy, grpcio, protobuf).
"""

from reid_client.errors import ProtocolError, ServerError, ServerUnreachableError
from reid_client.grpc_client import AsyncReIDGrpcClient, ReIDGrpcClient
from reid_client.http_client import AsyncReIDClient, ReIDClient
from reid_client.schemas import (
    EntryMetadataIn,
    EntryOut,
    EntrySearchParams,
    GalleryPage,
    GalleryStats,
    MatchOut,
    ModelInfo,
    SearchParams,
    SearchResponse,
)

__all__ = [
    "AsyncReIDClient",
    "AsyncReIDGrpcClient",
    "EntryMetadataIn",
    "EntryOut",
    "EntrySearchParams",
    "GalleryPage",
    "GalleryStats",
    "MatchOut",
    "ModelInfo",
    "ProtocolError",
    "ReIDClient",
    "ReIDGrpcClient",
    "SearchParams",
    "SearchResponse",
    "ServerError",
    "ServerUnreachableError",
]
