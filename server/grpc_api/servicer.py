"""``reid.v1.ReIDService`` implemented on top of ``SearchService``.

Each RPC checks the API key, converts the request, awaits the service and converts
the reply. A ``ServiceError`` becomes the gRPC status it names, with its message; any
other exception is logged and answered with ``INTERNAL``. The server keeps serving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from reid_client.proto import reid_pb2, reid_pb2_grpc
from reid_client.schemas import MAX_ID
from server.errors import BadInputError, NotFoundError, ServiceError
from server.grpc_api import convert
from server.logs import bind_request_id

if TYPE_CHECKING:
    from server.service import SearchService

log = logging.getLogger("server.grpc")

T = TypeVar("T")

API_KEY_HEADER = "x-api-key"
"""Metadata key carrying the API key; ``authorization: Bearer KEY`` works too."""


def request_id_from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The caller's ``x-request-id``, if it sent one."""
    for key, value in metadata or ():
        if key.lower() == "x-request-id":
            return value.decode(errors="replace") if isinstance(value, bytes) else value
    return None


def api_key_from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The API key of a call: ``x-api-key``, else an ``authorization: Bearer`` token."""
    bearer = None
    for key, value in metadata or ():
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if key.lower() == API_KEY_HEADER:
            return text.strip() or None
        scheme, _, token = text.strip().partition(" ")
        if key.lower() == "authorization" and scheme.lower() == "bearer":
            bearer = token.strip() or None
    return bearer


def status_code(name: str) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` called ``name``; ``INTERNAL`` for an unknown name."""
    code = getattr(grpc.StatusCode, name, None)
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.INTERNAL


def _missing_message(deleted: Sequence[int], missing: Sequence[int]) -> str:
    ids = ", ".join(str(i) for i in missing)
    noun = "id" if len(missing) == 1 else "ids"
    message = f"no gallery entry with {noun} {ids}"
    if deleted:
        message += f" (the other {len(deleted)} ids were deleted)"
    return message + "; set allow_missing to ignore unknown ids"


def _parsing(
    behaviour: Callable[[Message, grpc.aio.ServicerContext], Awaitable[Message]],
    request_type: type[Message],
) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Message]]:
    """An RPC behaviour that parses its request itself: bytes that are not a valid
    ``request_type`` (e.g. a string field that is not UTF-8) are the caller's error,
    ``INVALID_ARGUMENT``, where gRPC's own parsing answers ``UNKNOWN``."""

    async def handler(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        try:
            request = request_type.FromString(raw)
        except DecodeError as error:
            name = request_type.DESCRIPTOR.full_name
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {name}: {error}"
            )
        return await behaviour(request, context)

    return handler


def add_servicer_to_server(servicer: ReIDServicer, server: grpc.aio.Server) -> None:
    """Register every RPC of ``reid.v1.ReIDService`` with request parsing in the handler."""
    service = reid_pb2.DESCRIPTOR.services_by_name["ReIDService"]
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            _parsing(getattr(servicer, method.name), getattr(reid_pb2, method.input_type.name)),
            response_serializer=getattr(reid_pb2, method.output_type.name).SerializeToString,
        )
        for method in service.methods
    }
    generic = grpc.method_handlers_generic_handler(service.full_name, handlers)
    server.add_generic_rpc_handlers((generic,))


class ReIDServicer(reid_pb2_grpc.ReIDServiceServicer):
    """The gRPC face of one ``SearchService``."""

    def __init__(self, service: SearchService) -> None:
        self._service = service

    async def _handle(
        self,
        context: grpc.aio.ServicerContext,
        rpc: str,
        call: Callable[[], Awaitable[T]],
        *,
        write: bool,
    ) -> T:
        """Authorize, run ``call`` and turn its failures into gRPC statuses.

        Every call is counted in the service's Prometheus metrics (protocol ``grpc``,
        route = RPC name, status = gRPC code name), next to the HTTP requests. Its log
        lines carry the request id (the caller's ``x-request-id`` or a new one), which
        is sent back as ``x-request-id`` trailing metadata, as HTTP sends it back in a
        header.
        """
        started = time.perf_counter()
        code = "OK"
        metadata = context.invocation_metadata()
        with bind_request_id(request_id_from_metadata(metadata)) as rid:
            context.set_trailing_metadata((("x-request-id", rid),))
            try:
                self._service.authorize(api_key_from_metadata(metadata), write=write)
                return await call()
            except ServiceError as error:
                code = error.grpc_code
                await context.abort(status_code(error.grpc_code), error.message)
            except Exception:
                code = "INTERNAL"
                log.exception("gRPC %s failed", rpc)
                await context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"{rpc} failed on the server (see the server log, request id {rid})",
                )
            finally:
                self._observe(rpc, code, time.perf_counter() - started)
        raise AssertionError("unreachable: context.abort raises")  # pragma: no cover

    def _observe(self, rpc: str, code: str, seconds: float) -> None:
        metrics = getattr(self._service, "metrics", None)
        if metrics is not None:
            metrics.observe_request("grpc", rpc, code, seconds)

    async def Search(  # noqa: N802 - gRPC method name
        self, request: reid_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> reid_pb2.SearchResponse:
        async def call() -> reid_pb2.SearchResponse:
            convert.check_one_query_kind(request)
            options = convert.search_options_from_proto(request)
            if request.queries:
                results = await self._service.search(convert.query_images(request), options)
            else:
                embeddings = convert.query_embeddings(request)
                results = await self._service.search_embeddings(embeddings, options)
            return convert.search_response(results, options.query_cameras)

        return await self._handle(context, "Search", call, write=False)

    async def SearchByEntry(  # noqa: N802 - gRPC method name
        self, request: reid_pb2.SearchByEntryRequest, context: grpc.aio.ServicerContext
    ) -> reid_pb2.SearchResponse:
        async def call() -> reid_pb2.SearchResponse:
            options = convert.entry_search_options(request)
            if request.id > MAX_ID:  # no gallery id is that large
                raise NotFoundError(f"no gallery entry with id {request.id}")
            entry, matches = await self._service.search_by_entry(int(request.id), options)
            return convert.search_response([matches], [entry.metadata.camera])

        return await self._handle(context, "SearchByEntry", call, write=False)

    async def Embed(  # noqa: N802 - gRPC method name
        self, request: reid_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> reid_pb2.EmbedResponse:
        async def call() -> reid_pb2.EmbedResponse:
            return convert.embed_response(await self._service.embed(list(request.images)))

        return await self._handle(context, "Embed", call, write=False)

    async def AddToGallery(  # noqa: N802 - gRPC method name
        self, request: reid_pb2.AddToGalleryRequest, context: grpc.aio.ServicerContext
    ) -> reid_pb2.AddToGalleryResponse:
        async def call() -> reid_pb2.AddToGalleryResponse:
            if not request.entries:
                raise BadInputError("no entries to add (send at least one)")
            images = [entry.image for entry in request.entries]
            metadata = [
                convert.metadata_from_proto(entry.metadata, f"entries[{i}].metadata")
                for i, entry in enumerate(request.entries)
            ]
            ids = await self._service.add(images, metadata)
            return reid_pb2.AddToGalleryResponse(ids=ids)

        return await self._handle(context, "AddToGallery", call, write=True)

    async def DeleteFromGallery(  # noqa: N802 - gRPC method name
        self, request: reid_pb2.DeleteFromGalleryRequest, context: grpc.aio.ServicerContext
    ) -> reid_pb2.DeleteFromGalleryResponse:
        async def call() -> reid_pb2.DeleteFromGalleryResponse:
            deleted, missing = await self._service.delete(list(request.ids))
            if missing and not request.allow_missing:
                raise NotFoundError(_missing_message(deleted, missing))
            return reid_pb2.DeleteFromGalleryResponse(deleted=deleted, missing=missing)

        return await self._handle(context, "DeleteFromGallery", call, write=True)

    async def GalleryStats(  # noqa: N802 - gRPC method name
        self, request: reid_pb2.GalleryStatsRequest, context: grpc.aio.ServicerContext
    ) -> reid_pb2.GalleryStatsResponse:
        async def call() -> reid_pb2.GalleryStatsResponse:
            return convert.stats_response(await self._service.stats())

        return await self._handle(context, "GalleryStats", call, write=False)

    async def ListGallery(  # noqa: N802 - gRPC method name
        self, request: reid_pb2.ListGalleryRequest, context: grpc.aio.ServicerContext
    ) -> reid_pb2.ListGalleryResponse:
        async def call() -> reid_pb2.ListGalleryResponse:
            query = convert.gallery_query(request)
            page = await self._service.list_entries(
                query.offset,
                query.limit,
                cameras=query.cameras,
                time_from=query.time_from,
                time_to=query.time_to,
            )
            return convert.list_gallery_response(page)

        return await self._handle(context, "ListGallery", call, write=False)

    async def ModelInfo(  # noqa: N802 - gRPC method name
        self, request: reid_pb2.ModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> reid_pb2.ModelInfoResponse:
        async def call() -> reid_pb2.ModelInfoResponse:
            return convert.model_info_response(self._service.model_info())

        return await self._handle(context, "ModelInfo", call, write=False)
