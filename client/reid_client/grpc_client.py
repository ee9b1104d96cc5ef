"""Typed clients of ``reid.v1.ReIDService`` (gRPC): blocking and asyncio.

    with ReIDGrpcClient("127.0.0.1:50051", api_key="KEY") as client:
        ids = client.add([jpeg], [{"camera": 0, "timestamp": 12.5}])
        answer = client.search([query_jpeg], k=5, cameras=[1])

The answers are the models of :mod:`reid_client.schemas`, as from the HTTP client
(:mod:`reid_client.http_client`), and failures raise the same
:class:`~reid_client.errors.ServerError` (``grpc_code`` says the gRPC status).
``UNAVAILABLE`` (not ready, overloaded, connection refused) is retried with
exponential backoff, like a 503 over HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
import numpy as np

from reid_client import schemas as s
from reid_client.errors import ProtocolError, ServerError, ServerUnreachableError
from reid_client.http_client import (
    Metadata,
    checked_search,
    entry_search_params,
    metadata_models,
    page_params,
    search_params,
)
from reid_client.proto import reid_pb2, reid_pb2_grpc

T = TypeVar("T")

HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "INTERNAL": 500,
}
"""The HTTP status the HTTP API answers for the same refusal (``ServerError.status``)."""


# -- requests ------------------------------------------------------------------------------


def metadata_to_proto(meta: s.EntryMetadataIn) -> reid_pb2.EntryMetadata:
    """An ``EntryMetadata`` message (unset fields stay unset)."""
    box = meta.box
    return reid_pb2.EntryMetadata(
        camera=meta.camera,
        timestamp=meta.timestamp,
        track=meta.track,
        box=None if box is None else reid_pb2.Box(x=box[0], y=box[1], w=box[2], h=box[3]),
        source=meta.source,
        extra_json=json.dumps(meta.extra),
        key=meta.key,
    )


def search_request(
    params: s.SearchParams,
    images: Sequence[bytes] = (),
    embeddings: np.ndarray | Sequence[Sequence[float]] | None = None,
) -> reid_pb2.SearchRequest:
    """A ``SearchRequest`` by images, or by ready embeddings when ``embeddings`` is given."""
    count = len(images) if embeddings is None else len(embeddings)
    cameras = params.query_cameras if params.query_cameras is not None else [None] * count
    if len(cameras) != count:
        raise ValueError(f"{len(cameras)} query cameras for {count} queries (give one per query)")
    request = reid_pb2.SearchRequest(
        k=None if params.full_ranking else params.k,
        full_ranking=params.full_ranking,
        filters=_filters(params),
    )
    if embeddings is None:
        request.queries.extend(
            reid_pb2.QueryImage(image=bytes(image), camera=camera)
            for image, camera in zip(images, cameras, strict=True)
        )
    else:
        request.embeddings.extend(
            reid_pb2.QueryEmbedding(values=[float(v) for v in row], camera=camera)
            for row, camera in zip(embeddings, cameras, strict=True)
        )
    return request


def _filters(params: s.SearchParams | s.EntrySearchParams) -> reid_pb2.SearchFilters:
    return reid_pb2.SearchFilters(
        include_cameras=params.cameras or [],
        exclude_cameras=params.exclude_cameras or [],
        time_from=params.time_from,
        time_to=params.time_to,
        min_score=params.min_score,
        exclude_same_camera=params.exclude_same_camera,
    )


def search_by_entry_request(
    entry_id: int, params: s.EntrySearchParams
) -> reid_pb2.SearchByEntryRequest:
    """A ``SearchByEntryRequest``."""
    return reid_pb2.SearchByEntryRequest(
        id=int(entry_id),
        k=None if params.full_ranking else params.k,
        full_ranking=params.full_ranking,
        filters=_filters(params),
    )


def list_gallery_request(params: s.GalleryPageParams) -> reid_pb2.ListGalleryRequest:
    """A ``ListGalleryRequest``."""
    return reid_pb2.ListGalleryRequest(
        offset=params.offset,
        limit=params.limit,
        cameras=params.cameras or [],
        time_from=params.time_from,
        time_to=params.time_to,
    )


def add_request(
    images: Sequence[bytes], metadata: Sequence[Metadata] | None
) -> reid_pb2.AddToGalleryRequest:
    """An ``AddToGalleryRequest`` with one metadata per image."""
    metas = metadata_models(metadata, len(images))
    return reid_pb2.AddToGalleryRequest(
        entries=[
            reid_pb2.GalleryEntry(image=bytes(image), metadata=metadata_to_proto(meta))
            for image, meta in zip(images, metas, strict=True)
        ]
    )


# -- answers -------------------------------------------------------------------------------


def _optional(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def match_from_proto(match: reid_pb2.Match) -> s.MatchOut:
    """A :class:`~reid_client.schemas.MatchOut` from a ``Match`` message."""
    box = match.box if match.HasField("box") else None
    return s.MatchOut(
        id=match.id,
        score=match.score,
        camera=_optional(match, "camera"),
        timestamp=_optional(match, "timestamp"),
        track=_optional(match, "track"),
        box=None if box is None else [box.x, box.y, box.w, box.h],
        source=_optional(match, "source"),
        thumbnail_url=match.thumbnail_url or None,
    )


def search_from_proto(
    reply: reid_pb2.SearchResponse, query_cameras: Sequence[int | None], rpc: str = "Search"
) -> s.SearchResponse:
    """A :class:`~reid_client.schemas.SearchResponse`; one result per query, else an error.

    A result's ``query_camera`` is the one the server reports, else the one asked for.
    """
    if len(reply.results) != len(query_cameras):
        raise ProtocolError(
            f"gRPC {rpc} answered {len(reply.results)} results for {len(query_cameras)} queries"
        )
    answer = s.SearchResponse(
        results=[
            s.QueryResult(
                query_index=i,
                query_camera=_optional(result, "query_camera") if camera is None else camera,
                matches=[match_from_proto(m) for m in result.matches],
            )
            for i, (camera, result) in enumerate(zip(query_cameras, reply.results, strict=True))
        ]
    )
    return checked_search(answer, len(query_cameras))


def embeddings_from_proto(reply: reid_pb2.EmbedResponse) -> np.ndarray:
    """``float32[N, D]`` from an ``EmbedResponse``."""
    rows = [list(e.values) for e in reply.embeddings]
    return np.array(rows, dtype=np.float32).reshape(len(rows), reply.dim)


def entry_from_proto(entry: reid_pb2.StoredEntry) -> s.EntryOut:
    """A :class:`~reid_client.schemas.EntryOut` from a ``StoredEntry`` message."""
    meta = entry.metadata
    box = meta.box if meta.HasField("box") else None
    try:
        extra = json.loads(meta.extra_json) if meta.extra_json.strip() else {}
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            f"gRPC ListGallery: entry {entry.id} has bad extra_json ({exc})"
        ) from None
    return s.EntryOut(
        id=entry.id,
        camera=_optional(meta, "camera"),
        timestamp=_optional(meta, "timestamp"),
        track=_optional(meta, "track"),
        box=None if box is None else [box.x, box.y, box.w, box.h],
        source=_optional(meta, "source"),
        extra=extra,
        key=_optional(meta, "key"),
        created=entry.created,
        thumbnail_url=entry.thumbnail_url or None,
    )


def page_from_proto(reply: reid_pb2.ListGalleryResponse) -> s.GalleryPage:
    """A :class:`~reid_client.schemas.GalleryPage` from a ``ListGalleryResponse``."""
    return s.GalleryPage(
        entries=[entry_from_proto(entry) for entry in reply.entries],
        total=reply.total,
        offset=reply.offset,
        limit=reply.limit,
    )


def _json_model(cls: type[Any], text: str, what: str) -> Any:
    try:
        return cls.model_validate_json(text)
    except ValueError as exc:
        raise ProtocolError(f"gRPC {what}: the answer is not a {cls.__name__} ({exc})") from None


def _delete_reply(reply: reid_pb2.DeleteFromGalleryResponse) -> s.DeleteManyResponse:
    return s.DeleteManyResponse(deleted=list(reply.deleted), missing=list(reply.missing))


@dataclass(frozen=True)
class Call(Generic[T]):
    """One RPC: the stub method's name, the request and how to read the reply."""

    rpc: str
    request: Any
    parse: Callable[[Any], T]


class Calls:
    """The service's RPCs as :class:`Call` values (shared by both clients)."""

    @staticmethod
    def search(
        images: Sequence[bytes], params: s.SearchParams, embeddings: Any = None
    ) -> Call[s.SearchResponse]:
        request = search_request(params, images, embeddings)
        count = len(images) if embeddings is None else len(embeddings)
        cameras = params.query_cameras or [None] * count
        return Call("Search", request, lambda reply: search_from_proto(reply, cameras))

    @staticmethod
    def search_by_entry(entry_id: int, params: s.EntrySearchParams) -> Call[s.SearchResponse]:
        request = search_by_entry_request(entry_id, params)
        return Call(
            "SearchByEntry",
            request,
            lambda reply: search_from_proto(reply, [None], "SearchByEntry"),
        )

    @staticmethod
    def list_gallery(params: s.GalleryPageParams) -> Call[s.GalleryPage]:
        return Call("ListGallery", list_gallery_request(params), page_from_proto)

    @staticmethod
    def embed(images: Sequence[bytes]) -> Call[np.ndarray]:
        request = reid_pb2.EmbedRequest(images=[bytes(i) for i in images])
        return Call("Embed", request, embeddings_from_proto)

    @staticmethod
    def add(images: Sequence[bytes], metadata: Sequence[Metadata] | None) -> Call[list[int]]:
        return Call("AddToGallery", add_request(images, metadata), lambda reply: list(reply.ids))

    @staticmethod
    def delete(ids: Sequence[int], allow_missing: bool) -> Call[s.DeleteManyResponse]:
        request = reid_pb2.DeleteFromGalleryRequest(
            ids=[int(i) for i in ids], allow_missing=allow_missing
        )
        return Call("DeleteFromGallery", request, _delete_reply)

    @staticmethod
    def stats() -> Call[s.GalleryStats]:
        return Call(
            "GalleryStats",
            reid_pb2.GalleryStatsRequest(),
            lambda reply: _json_model(s.GalleryStats, reply.stats_json, "GalleryStats"),
        )

    @staticmethod
    def model_info() -> Call[s.ModelInfo]:
        return Call(
            "ModelInfo",
            reid_pb2.ModelInfoRequest(),
            lambda reply: _json_model(s.ModelInfo, reply.info_json, "ModelInfo"),
        )


# -- sending -------------------------------------------------------------------------------


def _channel_options(max_message_mb: float) -> list[tuple[str, int]]:
    limit = int(max_message_mb * 1024 * 1024)
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]


class _Policy:
    """Key, deadline and retries shared by both clients."""

    def __init__(
        self, target: str, api_key: str | None, timeout: float | None, retries: int, backoff: float
    ) -> None:
        if retries < 0 or backoff < 0:
            raise ValueError("retries and backoff must be >= 0")
        self.target = target
        self.metadata = (("x-api-key", api_key),) if api_key else None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def settle(self, call: Call[Any], attempt: int, error: grpc.RpcError) -> float:
        """The delay before retrying ``call`` after ``error``, or raises its ServerError."""
        code = error.code().name if callable(getattr(error, "code", None)) else "UNKNOWN"
        if code == "UNAVAILABLE" and attempt < self.retries:
            return self.backoff * (2**attempt)
        details = error.details() if callable(getattr(error, "details", None)) else str(error)
        cls = (
            ServerUnreachableError if code in ("UNAVAILABLE", "DEADLINE_EXCEEDED") else ServerError
        )
        raise cls(
            f"gRPC {call.rpc} at {self.target} failed: {code}: {details}",
            status=HTTP_STATUS.get(code),
            grpc_code=code,
        ) from None


class ReIDGrpcClient:
    """Blocking client; one channel, closed by ``close()`` or the ``with`` block."""

    def __init__(
        self,
        target: str,
        api_key: str | None = None,
        *,
        timeout: float | None = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_message_mb: float = 64.0,
    ) -> None:
        self._policy = _Policy(target, api_key, timeout, retries, backoff)
        self._channel = grpc.insecure_channel(target, options=_channel_options(max_message_mb))
        self.stub = reid_pb2_grpc.ReIDServiceStub(self._channel)

    def __enter__(self) -> ReIDGrpcClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def send(self, call: Call[T]) -> T:
        """Make the RPC with the retry policy and parse its reply."""
        rpc = getattr(self.stub, call.rpc)
        for attempt in itertools.count():
            try:
                reply = rpc(
                    call.request, metadata=self._policy.metadata, timeout=self._policy.timeout
                )
            except grpc.RpcError as exc:
                time.sleep(self._policy.settle(call, attempt, exc))
                continue
            return call.parse(reply)
        raise AssertionError("unreachable")

    def search(
        self,
        images: Sequence[bytes] = (),
        params: s.SearchParams | None = None,
        *,
        embeddings: np.ndarray | Sequence[Sequence[float]] | None = None,
        **fields: Any,
    ) -> s.SearchResponse:
        """Search by images (or by ready ``embeddings``); options as ``params`` or fields."""
        return self.send(Calls.search(images, search_params(params, fields), embeddings))

    def search_by_entry(
        self, entry_id: int, params: s.EntrySearchParams | None = None, **fields: Any
    ) -> s.SearchResponse:
        """Search with a stored entry ("find this person elsewhere"); the entry is left out
        of its matches and its camera is the query camera."""
        return self.send(Calls.search_by_entry(entry_id, entry_search_params(params, fields)))

    def list_gallery(
        self,
        offset: int = 0,
        limit: int = 50,
        cameras: Sequence[int] | None = None,
        time_from: float | None = None,
        time_to: float | None = None,
    ) -> s.GalleryPage:
        """One page of entries in id order, and how many match the filters."""
        params = page_params(offset, limit, cameras, time_from, time_to)
        return self.send(Calls.list_gallery(params))

    def embed(self, images: Sequence[bytes]) -> np.ndarray:
        """``float32[N, D]`` embeddings of encoded images."""
        return self.send(Calls.embed(images))

    def add(self, images: Sequence[bytes], metadata: Sequence[Metadata] | None = None) -> list[int]:
        """Add images with one metadata each; returns the new ids."""
        return self.send(Calls.add(images, metadata))

    def delete(self, ids: Sequence[int], *, allow_missing: bool = False) -> s.DeleteManyResponse:
        """Delete entries; unknown ids fail with NOT_FOUND unless ``allow_missing``."""
        return self.send(Calls.delete(ids, allow_missing))

    def stats(self) -> s.GalleryStats:
        """The gallery statistics."""
        return self.send(Calls.stats())

    def model_info(self) -> s.ModelInfo:
        """The served model, runtime, batching, limits and auth."""
        return self.send(Calls.model_info())


class AsyncReIDGrpcClient:
    """:class:`ReIDGrpcClient` for asyncio code; use ``async with`` or ``await close()``."""

    def __init__(
        self,
        target: str,
        api_key: str | None = None,
        *,
        timeout: float | None = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_message_mb: float = 64.0,
    ) -> None:
        self._policy = _Policy(target, api_key, timeout, retries, backoff)
        self._channel = grpc.aio.insecure_channel(target, options=_channel_options(max_message_mb))
        self.stub = reid_pb2_grpc.ReIDServiceStub(self._channel)

    async def __aenter__(self) -> AsyncReIDGrpcClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def send(self, call: Call[T]) -> T:
        """Make the RPC with the retry policy and parse its reply."""
        rpc = getattr(self.stub, call.rpc)
        for attempt in itertools.count():
            try:
                reply = await rpc(
                    call.request, metadata=self._policy.metadata, timeout=self._policy.timeout
                )
            except grpc.RpcError as exc:
                await asyncio.sleep(self._policy.settle(call, attempt, exc))
                continue
            return call.parse(reply)
        raise AssertionError("unreachable")

    async def search(
        self,
        images: Sequence[bytes] = (),
        params: s.SearchParams | None = None,
        *,
        embeddings: np.ndarray | Sequence[Sequence[float]] | None = None,
        **fields: Any,
    ) -> s.SearchResponse:
        """Search by images (or by ready ``embeddings``)."""
        return await self.send(Calls.search(images, search_params(params, fields), embeddings))

    async def search_by_entry(
        self, entry_id: int, params: s.EntrySearchParams | None = None, **fields: Any
    ) -> s.SearchResponse:
        """Search with a stored entry."""
        call = Calls.search_by_entry(entry_id, entry_search_params(params, fields))
        return await self.send(call)

    async def list_gallery(
        self,
        offset: int = 0,
        limit: int = 50,
        cameras: Sequence[int] | None = None,
        time_from: float | None = None,
        time_to: float | None = None,
    ) -> s.GalleryPage:
        """One page of entries in id order."""
        params = page_params(offset, limit, cameras, time_from, time_to)
        return await self.send(Calls.list_gallery(params))

    async def embed(self, images: Sequence[bytes]) -> np.ndarray:
        """``float32[N, D]`` embeddings."""
        return await self.send(Calls.embed(images))

    async def add(
        self, images: Sequence[bytes], metadata: Sequence[Metadata] | None = None
    ) -> list[int]:
        """Add images; returns the new ids."""
        return await self.send(Calls.add(images, metadata))

    async def delete(
        self, ids: Sequence[int], *, allow_missing: bool = False
    ) -> s.DeleteManyResponse:
        """Delete entries."""
        return await self.send(Calls.delete(ids, allow_missing))

    async def stats(self) -> s.GalleryStats:
        """The gallery statistics."""
        return await self.send(Calls.stats())

    async def model_info(self) -> s.ModelInfo:
        """The served model."""
        return await self.send(Calls.model_info())
