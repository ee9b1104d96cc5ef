"""The HTTP front end (FastAPI): thin routes over :class:`server.service.SearchService`.

``create_app(settings, service)`` builds the app; tests inject a service made of
fakes, ``python -m server`` injects the real one (shared with gRPC). Every refusal
answers ``{"error": {"type": ..., "message": ...}}`` with a 4xx/5xx status.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route functions'
# annotations at run time, and routes defined in a closure cannot resolve strings.
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Path, Query, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from gallery import EntryMetadata, Match, SearchFilters
from server import schemas as s
from server.errors import (
    BadInputError,
    NotFoundError,
    NotReadyError,
    ServiceError,
    UnsupportedMediaError,
)
from server.middleware import BodyLimitMiddleware, MetricsMiddleware, error_response
from server.service import SearchOptions, SearchService
from server.settings import ServerSettings

log = logging.getLogger("server.http")

MULTIPART_PATHS = {"/v1/search", "/v1/embed", "/v1/gallery"}
MAX_ID = 2**63 - 1
RAW_TYPES = ("image/", "application/octet-stream")

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey")
_bearer = HTTPBearer(auto_error=False, scheme_name="Bearer")


# -- plumbing --------------------------------------------------------------------------


def _service(request: Request) -> SearchService:
    service = request.app.state.service
    if service is None:
        raise NotReadyError("the model and gallery are still loading")
    return service


def _key(api_key: str | None, bearer: HTTPAuthorizationCredentials | None) -> str | None:
    return api_key or (bearer.credentials if bearer is not None else None)


def require_read(
    request: Request,
    api_key: Annotated[str | None, Security(_api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> SearchService:
    """The service, after checking the read key (when one is configured)."""
    service = _service(request)
    service.authorize(_key(api_key, bearer), write=False)
    return service


def require_write(
    request: Request,
    api_key: Annotated[str | None, Security(_api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> SearchService:
    """The service, after checking the write key (when one is configured)."""
    service = _service(request)
    service.authorize(_key(api_key, bearer), write=True)
    return service


Reader = Annotated[SearchService, Depends(require_read)]
Writer = Annotated[SearchService, Depends(require_write)]
EntryId = Annotated[int, Path(ge=0, le=MAX_ID, description="gallery entry id")]


def _parse_ints(name: str, text: str | None) -> list[int] | None:
    """``"1,2, 3"`` -> ``[1, 2, 3]``; empty/None -> None; anything else -> 400."""
    if text is None or not text.strip():
        return None
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise BadInputError(f"{name} must be comma-separated integers, got {text!r}") from None
    if any(v < 0 or v > MAX_ID for v in values):
        raise BadInputError(f"{name} values must be between 0 and {MAX_ID}")
    return values


def _options(
    *,
    k: int,
    full_ranking: bool,
    query_cameras: str | None,
    exclude_same_camera: bool,
    cameras: str | None,
    exclude_cameras: str | None,
    time_from: float | None,
    time_to: float | None,
    min_score: float | None,
) -> SearchOptions:
    include = _parse_ints("cameras", cameras)
    try:
        filters = SearchFilters(
            exclude_cameras=frozenset(_parse_ints("exclude_cameras", exclude_cameras) or ()),
            include_cameras=None if include is None else frozenset(include),
            time_from=time_from,
            time_to=time_to,
            min_score=min_score,
        )
    except ValueError as exc:
        raise BadInputError(str(exc)) from None
    return SearchOptions(
        k=None if full_ranking else k,
        filters=filters,
        query_cameras=_parse_ints("query_cameras", query_cameras),
        exclude_same_camera=exclude_same_camera,
    )


def _match_out(m: Match) -> s.MatchOut:
    meta = m.metadata
    return s.MatchOut(
        id=m.id,
        score=float(m.score),
        camera=meta.camera,
        timestamp=meta.timestamp,
        track=meta.track,
        box=None if meta.box is None else list(meta.box),
        source=meta.source,
        thumbnail_url=f"/v1/gallery/{m.id}/thumbnail" if m.has_thumbnail else None,
    )


def _search_response(
    service: SearchService, results: list[list[Match]], options: SearchOptions, started: float
) -> s.SearchResponse:
    cameras = options.query_cameras or [None] * len(results)
    return s.SearchResponse(
        results=[
            s.QueryResult(query_index=i, query_camera=cam, matches=[_match_out(m) for m in ms])
            for i, (cam, ms) in enumerate(zip(cameras, results, strict=True))
        ],
        gallery_size=service.gallery_size(),
        took_ms=round((time.perf_counter() - started) * 1000, 3),
    )


async def _read_files(files: list[UploadFile]) -> list[bytes]:
    return [await f.read() for f in files]


def _parse_metadata(text: str | None, count: int) -> list[EntryMetadata]:
    if text is None or not text.strip():
        return [EntryMetadata() for _ in range(count)]
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"metadata is not valid JSON: {exc}") from None
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise BadInputError("metadata must be a JSON list with one object per image")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(EntryMetadata.from_dict(item))
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"metadata[{i}]: {exc}") from None
    return out


# -- app -------------------------------------------------------------------------------

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": s.ErrorResponse, "description": "Bad input (undecodable image, bad k...)"},
    401: {"model": s.ErrorResponse, "description": "API key missing"},
    403: {"model": s.ErrorResponse, "description": "API key wrong"},
    413: {"model": s.ErrorResponse, "description": "Too many images, bytes or pixels"},
    415: {"model": s.ErrorResponse, "description": "Unsupported content type"},
    422: {"model": s.ErrorResponse, "description": "Malformed request fields"},
    503: {"model": s.ErrorResponse, "description": "Not ready or overloaded"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": s.ErrorResponse, "description": "Unknown gallery id"}
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: ERRORS[code] for code in codes}


READ_ERRORS = _errors(400, 401, 403, 422, 503)
IMAGE_ERRORS = _errors(400, 401, 403, 413, 415, 422, 503)


def create_app(
    settings: ServerSettings,
    service: SearchService | None = None,
    *,
    own_service: bool = True,
) -> FastAPI:
    """The FastAPI app. Without ``service`` the lifespan loads one from ``settings``.

    With ``own_service`` (the default) the lifespan also stops/closes the service at
    shutdown; ``python -m server`` passes ``False`` because gRPC shares it.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.service is None:
            import asyncio

            from server.service import build_service

            app.state.service = await asyncio.to_thread(build_service, settings)
        await app.state.service.start()
        try:
            yield
        finally:
            if own_service:
                await app.state.service.close()

    app = FastAPI(
        title="Person re-ID search server",
        version="1.0",
        description=(
            "Search a gallery of person crops by image, embed images, and edit the "
            'gallery. Errors answer `{"error": {"type", "message"}}`.'
        ),
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.settings = settings
    _add_handlers(app)
    _add_routes(app, settings)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        MetricsMiddleware,
        get_metrics=lambda: app.state.service.metrics if app.state.service else None,
    )
    return app


def _add_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.http_status, type(exc).__name__, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if request.url.path in MULTIPART_PATHS and "multipart/form-data" not in content_type:
            return error_response(
                415,
                "UnsupportedMediaError",
                f"expected a multipart/form-data body with 'images' files, got "
                f"{content_type or 'no content type'}",
            )
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(422, "ValidationError", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, "HTTPError", str(exc.detail))


def _add_routes(app: FastAPI, settings: ServerSettings) -> None:
    max_images = settings.max_images
    images_doc = f"query images (JPEG, PNG, ...), 1 to {max_images} files"

    @app.post(
        "/v1/search",
        summary="Search the gallery with one or more query images",
        response_model=s.SearchResponse,
        responses=IMAGE_ERRORS,
        tags=["search"],
    )
    async def search(
        service: Reader,
        images: Annotated[list[UploadFile], File(description=images_doc)],
        k: Annotated[int, Form(description=f"matches per query, 1..{settings.max_k}")] = 10,
        full_ranking: Annotated[bool, Form(description="every entry passing filters")] = False,
        query_cameras: Annotated[
            str | None, Form(description="comma-separated camera per query image")
        ] = None,
        exclude_same_camera: Annotated[
            bool, Form(description="drop matches from the query's camera")
        ] = False,
        cameras: Annotated[str | None, Form(description="comma-separated cameras to keep")] = None,
        exclude_cameras: Annotated[
            str | None, Form(description="comma-separated cameras to drop")
        ] = None,
        time_from: Annotated[float | None, Form(description="earliest timestamp")] = None,
        time_to: Annotated[float | None, Form(description="latest timestamp")] = None,
        min_score: Annotated[float | None, Form(description="lowest cosine score")] = None,
    ) -> s.SearchResponse:
        started = time.perf_counter()
        options = _options(
            k=k,
            full_ranking=full_ranking,
            query_cameras=query_cameras,
            exclude_same_camera=exclude_same_camera,
            cameras=cameras,
            exclude_cameras=exclude_cameras,
            time_from=time_from,
            time_to=time_to,
            min_score=min_score,
        )
        service.check_images(images)  # before reading any file
        results = await service.search(await _read_files(images), options)
        return _search_response(service, results, options, started)

    raw_body = {
        "requestBody": {
            "required": True,
            "description": "one encoded image",
            "content": {
                t: {"schema": {"type": "string", "format": "binary"}}
                for t in ("image/jpeg", "image/png", "application/octet-stream")
            },
        }
    }

    @app.post(
        "/v1/search/raw",
        summary="Search with one image sent as the raw request body",
        response_model=s.SearchResponse,
        responses=IMAGE_ERRORS,
        openapi_extra=raw_body,
        tags=["search"],
    )
    async def search_raw(
        request: Request,
        service: Reader,
        k: Annotated[int, Query(description=f"matches per query, 1..{settings.max_k}")] = 10,
        full_ranking: Annotated[bool, Query(description="every entry passing filters")] = False,
        query_camera: Annotated[int | None, Query(ge=0, description="query's camera")] = None,
        exclude_same_camera: bool = False,
        cameras: Annotated[str | None, Query(description="comma-separated cameras")] = None,
        exclude_cameras: Annotated[str | None, Query(description="comma-separated")] = None,
        time_from: float | None = None,
        time_to: float | None = None,
        min_score: float | None = None,
    ) -> s.SearchResponse:
        started = time.perf_counter()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not content_type.startswith(RAW_TYPES):
            raise UnsupportedMediaError(
                f"send the image bytes with an image/* (or application/octet-stream) "
                f"Content-Type, got {content_type or 'none'}"
            )
        options = _options(
            k=k,
            full_ranking=full_ranking,
            query_cameras=None if query_camera is None else str(query_camera),
            exclude_same_camera=exclude_same_camera,
            cameras=cameras,
            exclude_cameras=exclude_cameras,
            time_from=time_from,
            time_to=time_to,
            min_score=min_score,
        )
        results = await service.search([await request.body()], options)
        return _search_response(service, results, options, started)

    @app.post(
        "/v1/embed",
        summary="Embed images without searching",
        response_model=s.EmbedResponse,
        responses=IMAGE_ERRORS,
        tags=["search"],
    )
    async def embed(
        service: Reader,
        images: Annotated[list[UploadFile], File(description=images_doc)],
    ) -> s.EmbedResponse:
        service.check_images(images)
        vectors = await service.embed(await _read_files(images))
        return s.EmbedResponse(
            embeddings=vectors.astype(float).tolist(),
            dim=int(vectors.shape[1]),
            model=service.runtime.manifest.model_name,
        )

    @app.post(
        "/v1/gallery",
        status_code=201,
        summary="Add images with metadata to the gallery",
        response_model=s.AddResponse,
        responses=IMAGE_ERRORS,
        tags=["gallery"],
    )
    async def add(
        service: Writer,
        images: Annotated[list[UploadFile], File(description=f"crops, 1 to {max_images}")],
        metadata: Annotated[
            str | None,
            Form(
                description="JSON list, one object per image: camera, timestamp, track, "
                "box [x,y,w,h], source, extra"
            ),
        ] = None,
    ) -> s.AddResponse:
        service.check_images(images)
        meta = _parse_metadata(metadata, len(images))
        ids = await service.add(await _read_files(images), meta)
        return s.AddResponse(ids=ids)

    @app.post(
        "/v1/gallery/delete",
        summary="Delete several gallery entries",
        response_model=s.DeleteManyResponse,
        responses=_errors(400, 401, 403, 422, 503),
        tags=["gallery"],
    )
    async def delete_many(service: Writer, body: s.DeleteRequest) -> s.DeleteManyResponse:
        deleted, missing = await service.delete(body.ids)
        return s.DeleteManyResponse(deleted=deleted, missing=missing)

    @app.get(
        "/v1/gallery/stats",
        summary="Gallery statistics",
        response_model=s.StatsResponse,
        responses=READ_ERRORS,
        tags=["gallery"],
    )
    async def stats(service: Reader) -> Any:
        return await service.stats()

    @app.delete(
        "/v1/gallery/{entry_id}",
        summary="Delete one gallery entry",
        response_model=s.DeleteOneResponse,
        responses={**_errors(401, 403, 422, 503), **NOT_FOUND},
        tags=["gallery"],
    )
    async def delete_one(service: Writer, entry_id: EntryId) -> s.DeleteOneResponse:
        deleted, _ = await service.delete([entry_id])
        if not deleted:
            raise NotFoundError(f"no gallery entry with id {entry_id}")
        return s.DeleteOneResponse(deleted=deleted)

    @app.get(
        "/v1/gallery/{entry_id}",
        summary="One gallery entry's metadata",
        response_model=s.EntryOut,
        responses={**READ_ERRORS, **NOT_FOUND},
        tags=["gallery"],
    )
    async def get_entry(service: Reader, entry_id: EntryId) -> s.EntryOut:
        entry: Any = await service.get_entry(entry_id)
        meta = entry.metadata
        return s.EntryOut(
            id=entry.id,
            camera=meta.camera,
            timestamp=meta.timestamp,
            track=meta.track,
            box=None if meta.box is None else list(meta.box),
            source=meta.source,
            extra=dict(meta.extra),
            created=entry.created,
            thumbnail_url=f"/v1/gallery/{entry.id}/thumbnail" if entry.has_thumbnail else None,
        )

    @app.get(
        "/v1/gallery/{entry_id}/thumbnail",
        summary="One gallery entry's JPEG thumbnail",
        response_class=Response,
        responses={
            200: {"content": {"image/jpeg": {}}, "description": "JPEG thumbnail"},
            **READ_ERRORS,
            **NOT_FOUND,
        },
        tags=["gallery"],
    )
    async def thumbnail(service: Reader, entry_id: EntryId) -> Response:
        return Response(await service.thumbnail(entry_id), media_type="image/jpeg")

    @app.get(
        "/v1/model",
        summary="The served model, runtime and serving settings",
        response_model=s.ModelInfo,
        responses=READ_ERRORS,
        tags=["service"],
    )
    async def model(service: Reader) -> Any:
        return service.model_info()

    @app.get("/healthz", summary="Liveness", response_model=s.Health, tags=["service"])
    async def healthz() -> s.Health:
        return s.Health(status="ok")

    @app.get(
        "/readyz",
        summary="Readiness: model and gallery loaded",
        response_model=s.Health,
        responses={503: {"model": s.Health, "description": "Not ready"}},
        tags=["service"],
    )
    async def readyz(request: Request) -> Response:
        service = request.app.state.service
        ready = service is not None and service.is_ready()
        body = s.Health(status="ready" if ready else "not ready")
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
        tags=["service"],
    )
    async def metrics(request: Request) -> Response:
        service = request.app.state.service
        if service is None:
            return Response(b"", media_type="text/plain")
        return Response(service.metrics.render(), media_type=service.metrics.content_type)


__all__ = ["create_app"]
