"""Small typed clients for ``reid.v1.ReIDService``: blocking and asyncio.

    with ReIDGrpcClient("127.0.0.1:50051", api_key="KEY") as client:
        ids = client.add([jpeg], [{"camera": 0, "timestamp": 12.5}])
        (result,) = client.search([query_jpeg], k=5, cameras=[1]).results

``AsyncReIDGrpcClient`` has the same methods as coroutines. Failures raise
``grpc.RpcError`` (``.code()``, ``.details()``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from server.grpc_api import reid_pb2, reid_pb2_grpc

Metadata = Mapping[str, Any]
"""Entry metadata for ``add``: camera, timestamp, track, box (x, y, w, h), source, extra."""


def metadata_to_proto(meta: Metadata | None) -> reid_pb2.EntryMetadata:
    """An ``EntryMetadata`` message from a dict (missing keys stay unset)."""
    meta = dict(meta or {})
    box = meta.get("box")
    return reid_pb2.EntryMetadata(
        camera=meta.get("camera"),
        timestamp=meta.get("timestamp"),
        track=meta.get("track"),
        box=None if box is None else reid_pb2.Box(x=box[0], y=box[1], w=box[2], h=box[3]),
        source=meta.get("source"),
        extra_json=json.dumps(meta.get("extra") or {}),
    )


def search_request(
    images: Sequence[bytes] = (),
    *,
    embeddings: np.ndarray | Sequence[Sequence[float]] | None = None,
    k: int | None = 10,
    full_ranking: bool = False,
    cameras: Sequence[int | None] | None = None,
    exclude_same_camera: bool = False,
    include_cameras: Iterable[int] = (),
    exclude_cameras: Iterable[int] = (),
    time_from: float | None = None,
    time_to: float | None = None,
    min_score: float | None = None,
) -> reid_pb2.SearchRequest:
    """A ``SearchRequest`` by images or by embeddings; ``k`` is ignored for a full ranking."""
    count = len(images) if embeddings is None else len(embeddings)
    query_cameras = list(cameras) if cameras is not None else [None] * count
    if len(query_cameras) != count:
        raise ValueError(f"{len(query_cameras)} cameras for {count} queries")
    request = reid_pb2.SearchRequest(
        k=None if full_ranking else k,
        full_ranking=full_ranking,
        filters=reid_pb2.SearchFilters(
            include_cameras=list(include_cameras),
            exclude_cameras=list(exclude_cameras),
            time_from=time_from,
            time_to=time_to,
            min_score=min_score,
            exclude_same_camera=exclude_same_camera,
        ),
    )
    if embeddings is None:
        request.queries.extend(
            reid_pb2.QueryImage(image=image, camera=camera)
            for image, camera in zip(images, query_cameras, strict=True)
        )
    else:
        request.embeddings.extend(
            reid_pb2.QueryEmbedding(values=[float(v) for v in row], camera=camera)
            for row, camera in zip(embeddings, query_cameras, strict=True)
        )
    return request


def add_request(
    images: Sequence[bytes], metadata: Sequence[Metadata | None] | None = None
) -> reid_pb2.AddToGalleryRequest:
    """An ``AddToGalleryRequest``; ``metadata`` has one dict (or None) per image."""
    metas = list(metadata) if metadata is not None else [None] * len(images)
    if len(metas) != len(images):
        raise ValueError(f"{len(metas)} metadata dicts for {len(images)} images")
    return reid_pb2.AddToGalleryRequest(
        entries=[
            reid_pb2.GalleryEntry(image=image, metadata=metadata_to_proto(meta))
            for image, meta in zip(images, metas, strict=True)
        ]
    )


def embeddings_from_reply(reply: reid_pb2.EmbedResponse) -> np.ndarray:
    """float32[N, D] from an ``EmbedResponse``."""
    rows = [list(e.values) for e in reply.embeddings]
    return np.array(rows, dtype=np.float32).reshape(len(rows), reply.dim)


def _channel_options(max_message_mb: float) -> list[tuple[str, int]]:
    limit = int(max_message_mb * 1024 * 1024)
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]


class _Base:
    def __init__(self, api_key: str | None, timeout: float | None) -> None:
        self._kwargs: dict[str, Any] = {
            "metadata": (("x-api-key", api_key),) if api_key else None,
            "timeout": timeout,
        }


class ReIDGrpcClient(_Base):
    """Blocking client; one channel, closed by ``close()`` or the ``with`` block."""

    def __init__(
        self,
        target: str,
        api_key: str | None = None,
        *,
        timeout: float | None = 60.0,
        max_message_mb: float = 64.0,
    ) -> None:
        super().__init__(api_key, timeout)
        self._channel = grpc.insecure_channel(target, options=_channel_options(max_message_mb))
        self.stub = reid_pb2_grpc.ReIDServiceStub(self._channel)

    def __enter__(self) -> ReIDGrpcClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def search(self, images: Sequence[bytes] = (), **options: Any) -> reid_pb2.SearchResponse:
        """Search by images (or ``embeddings=``); options as in ``search_request``."""
        return self.stub.Search(search_request(images, **options), **self._kwargs)

    def embed(self, images: Sequence[bytes]) -> np.ndarray:
        """float32[N, D] embeddings of encoded images."""
        reply = self.stub.Embed(reid_pb2.EmbedRequest(images=list(images)), **self._kwargs)
        return embeddings_from_reply(reply)

    def add(
        self, images: Sequence[bytes], metadata: Sequence[Metadata | None] | None = None
    ) -> list[int]:
        """Add images with optional metadata dicts; returns the new ids."""
        return list(self.stub.AddToGallery(add_request(images, metadata), **self._kwargs).ids)

    def delete(
        self, ids: Sequence[int], *, allow_missing: bool = False
    ) -> reid_pb2.DeleteFromGalleryResponse:
        """Delete entries; unknown ids fail with NOT_FOUND unless ``allow_missing``."""
        request = reid_pb2.DeleteFromGalleryRequest(ids=list(ids), allow_missing=allow_missing)
        return self.stub.DeleteFromGallery(request, **self._kwargs)

    def stats(self) -> dict[str, Any]:
        """The gallery statistics (``stats_json`` decoded)."""
        reply = self.stub.GalleryStats(reid_pb2.GalleryStatsRequest(), **self._kwargs)
        return json.loads(reply.stats_json or "{}")

    def model_info(self) -> dict[str, Any]:
        """The model description (``info_json`` decoded)."""
        reply = self.stub.ModelInfo(reid_pb2.ModelInfoRequest(), **self._kwargs)
        return json.loads(reply.info_json or "{}")


class AsyncReIDGrpcClient(_Base):
    """``ReIDGrpcClient`` for asyncio code; use ``async with`` or ``await close()``."""

    def __init__(
        self,
        target: str,
        api_key: str | None = None,
        *,
        timeout: float | None = 60.0,
        max_message_mb: float = 64.0,
    ) -> None:
        super().__init__(api_key, timeout)
        self._channel = grpc.aio.insecure_channel(target, options=_channel_options(max_message_mb))
        self.stub = reid_pb2_grpc.ReIDServiceStub(self._channel)

    async def __aenter__(self) -> AsyncReIDGrpcClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def search(self, images: Sequence[bytes] = (), **options: Any) -> reid_pb2.SearchResponse:
        """Search by images (or ``embeddings=``); options as in ``search_request``."""
        return await self.stub.Search(search_request(images, **options), **self._kwargs)

    async def embed(self, images: Sequence[bytes]) -> np.ndarray:
        """float32[N, D] embeddings of encoded images."""
        reply = await self.stub.Embed(reid_pb2.EmbedRequest(images=list(images)), **self._kwargs)
        return embeddings_from_reply(reply)

    async def add(
        self, images: Sequence[bytes], metadata: Sequence[Metadata | None] | None = None
    ) -> list[int]:
        """Add images with optional metadata dicts; returns the new ids."""
        reply = await self.stub.AddToGallery(add_request(images, metadata), **self._kwargs)
        return list(reply.ids)

    async def delete(
        self, ids: Sequence[int], *, allow_missing: bool = False
    ) -> reid_pb2.DeleteFromGalleryResponse:
        """Delete entries; unknown ids fail with NOT_FOUND unless ``allow_missing``."""
        request = reid_pb2.DeleteFromGalleryRequest(ids=list(ids), allow_missing=allow_missing)
        return await self.stub.DeleteFromGallery(request, **self._kwargs)

    async def stats(self) -> dict[str, Any]:
        """The gallery statistics (``stats_json`` decoded)."""
        reply = await self.stub.GalleryStats(reid_pb2.GalleryStatsRequest(), **self._kwargs)
        return json.loads(reply.stats_json or "{}")

    async def model_info(self) -> dict[str, Any]:
        """The model description (``info_json`` decoded)."""
        reply = await self.stub.ModelInfo(reid_pb2.ModelInfoRequest(), **self._kwargs)
        return json.loads(reply.info_json or "{}")
