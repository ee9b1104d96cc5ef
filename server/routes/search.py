"""``/v1/search``, ``/v1/search/raw``, ``/v1/search/by-entry/{id}`` and ``/v1/embed``:
queries by image (or by a stored entry's embedding)."""

import time
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from pydantic import ValidationError

from reid.gallery import Match
from reid_client import schemas as s
from server.errors import ServiceError, UnsupportedMediaError
from server.routes.deps import IMAGE_ERRORS, NOT_FOUND, EntryId, Reader
from server.routes.fastpath import QueryModel, fast_path, request_key
from server.service import SearchOptions, SearchService
from server.wire import (
    EntrySearchForm,
    JsonResponse,
    RawSearchQuery,
    SearchForm,
    search_options,
    thumbnail_url,
)

router = APIRouter(tags=["search"], responses=IMAGE_ERRORS)

RAW_TYPES = ("image/", "application/octet-stream")
Images = Annotated[
    list[UploadFile], File(description="query images (JPEG, PNG, ...), 1 to max_images files")
]


async def read_files(files: list[UploadFile]) -> list[bytes]:
    return [await f.read() for f in files]


def match_out(m: Match) -> dict[str, Any]:
    """One match as ``MatchOut``'s JSON object."""
    meta = m.metadata
    return {
        "id": int(m.id),
        "score": float(m.score),
        "camera": meta.camera,
        "timestamp": meta.timestamp,
        "track": meta.track,
        "box": None if meta.box is None else [float(v) for v in meta.box],
        "source": meta.source,
        "thumbnail_url": thumbnail_url(m.id, m.has_thumbnail),
    }


def search_response(
    service: SearchService, results: list[list[Match]], options: SearchOptions, started: float
) -> JsonResponse:
    """The ``SearchResponse`` JSON of ``results``.

    Built as plain JSON values and encoded once: the values come typed from the gallery
    (``EntryMetadata`` checks its fields), so building ``SearchResponse`` models and having
    FastAPI validate them again would only repeat that work (``tests/test_server_http.py``
    checks the answer against the model).
    """
    cameras = options.query_cameras or [None] * len(results)
    return JsonResponse(
        {
            "results": [
                {"query_index": i, "query_camera": cam, "matches": [match_out(m) for m in ms]}
                for i, (cam, ms) in enumerate(zip(cameras, results, strict=True))
            ],
            "gallery_size": service.gallery_size(),
            "took_ms": round((time.perf_counter() - started) * 1000, 3),
        }
    )


@router.post(
    "/v1/search",
    summary="Search the gallery with one or more query images",
    response_model=s.SearchResponse,
)
async def search(
    service: Reader, images: Images, params: Annotated[SearchForm, Form()]
) -> JsonResponse:
    started = time.perf_counter()
    options = search_options(params)
    results = await service.search(await read_files(images), options)
    return search_response(service, results, options, started)


@router.post(
    "/v1/search/by-entry/{entry_id}",
    summary="Find a gallery entry's person elsewhere: search with its stored embedding",
    description=(
        "The entry's own camera is the query camera (so `exclude_same_camera` drops it) "
        "and the entry itself is left out of its matches. One result, whose "
        "`query_camera` is the entry's camera."
    ),
    responses=NOT_FOUND,
    openapi_extra={"requestBody": {"required": False}},  # every field is optional
    response_model=s.SearchResponse,
)
async def search_by_entry(
    service: Reader, entry_id: EntryId, params: Annotated[EntrySearchForm, Form()]
) -> JsonResponse:
    started = time.perf_counter()
    options = search_options(params)
    entry, matches = await service.search_by_entry(entry_id, options)
    options = replace(options, query_cameras=[entry.metadata.camera])
    return search_response(service, [matches], options, started)


_RAW_BODY = {
    "requestBody": {
        "required": True,
        "description": "one encoded image",
        "content": {
            t: {"schema": {"type": "string", "format": "binary"}}
            for t in ("image/jpeg", "image/png", "application/octet-stream")
        },
    }
}


async def _search_raw(
    request: Request, service: SearchService, params: RawSearchQuery
) -> JsonResponse:
    started = time.perf_counter()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type.startswith(RAW_TYPES):
        raise UnsupportedMediaError(
            f"send the image bytes with an image/* (or application/octet-stream) "
            f"Content-Type, got {content_type or 'none'}"
        )
    options = search_options(params)
    results = await service.search([await request.body()], options)
    return search_response(service, results, options, started)


_RAW_QUERY = QueryModel(RawSearchQuery)


async def _search_raw_fast(request: Request) -> JsonResponse | None:
    """The ordinary raw search without FastAPI's dependency solving (see
    ``server.routes.fastpath``); None (FastAPI's turn) when the service is not loaded,
    the key is refused or the query parameters are."""
    service: SearchService | None = request.app.state.service
    if service is None:
        return None
    try:
        service.authorize(request_key(request.headers), write=False)
        params = _RAW_QUERY.parse(request.query_params)
    except (ServiceError, ValidationError):
        return None
    return await _search_raw(request, service, params)


@router.post(
    "/v1/search/raw",
    summary="Search with one image sent as the raw request body",
    openapi_extra=_RAW_BODY,
    response_model=s.SearchResponse,
)
@fast_path(_search_raw_fast)
async def search_raw(
    request: Request, service: Reader, params: Annotated[RawSearchQuery, Query()]
) -> JsonResponse:
    return await _search_raw(request, service, params)


@router.post("/v1/embed", summary="Embed images without searching")
async def embed(service: Reader, images: Images) -> s.EmbedResponse:
    vectors = await service.embed(await read_files(images))
    return s.EmbedResponse(
        embeddings=vectors.astype(float).tolist(),
        dim=int(vectors.shape[1]),
        model=service.runtime.manifest.model_name,
    )
