"""``/v1/gallery*``: add, delete, read entries, thumbnails and statistics."""

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from reid.gallery import Entry, EntryMetadata
from reid_client import schemas as s
from server.errors import BadInputError, NotFoundError
from server.routes.deps import (
    IMAGE_ERRORS,
    NOT_FOUND,
    READ_ERRORS,
    EntryId,
    Reader,
    Writer,
    errors,
)
from server.routes.search import read_files
from server.wire import GalleryQuery, entry_metadata, parse_json, thumbnail_url

router = APIRouter(prefix="/v1/gallery", tags=["gallery"])

METADATA_DOC = (
    "JSON list, one object per image (EntryMetadataIn): camera, timestamp, track, "
    "box [x,y,w,h], source, extra"
)


def parse_metadata(text: str | None, count: int) -> list[EntryMetadata]:
    """The ``metadata`` form field: a JSON list (or one object), else empty metadata."""
    if text is None or not text.strip():
        return [EntryMetadata() for _ in range(count)]
    items = parse_json(text, "metadata")
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise BadInputError("metadata must be a JSON list with one object per image")
    return [entry_metadata(item, f"metadata[{i}]") for i, item in enumerate(items)]


def entry_out(entry: Entry) -> s.EntryOut:
    meta = entry.metadata
    return s.EntryOut(
        id=entry.id,
        camera=meta.camera,
        timestamp=meta.timestamp,
        track=meta.track,
        box=None if meta.box is None else list(meta.box),
        source=meta.source,
        extra=dict(meta.extra),
        key=meta.key,
        created=entry.created,
        thumbnail_url=thumbnail_url(entry.id, entry.has_thumbnail),
    )


@router.post(
    "",
    status_code=201,
    summary="Add images with metadata to the gallery",
    responses=IMAGE_ERRORS,
)
async def add(
    service: Writer,
    images: Annotated[list[UploadFile], File(description="crops, 1 to max_images files")],
    metadata: Annotated[str | None, Form(description=METADATA_DOC)] = None,
) -> s.AddResponse:
    meta = parse_metadata(metadata, len(images))
    return s.AddResponse(ids=await service.add(await read_files(images), meta))


@router.get(
    "",
    summary="List gallery entries, a page at a time, in id order",
    responses=READ_ERRORS,
)
async def list_entries(service: Reader, params: Annotated[GalleryQuery, Query()]) -> s.GalleryPage:
    page = await service.list_entries(
        params.offset,
        params.limit,
        cameras=params.cameras,
        time_from=params.time_from,
        time_to=params.time_to,
    )
    return s.GalleryPage(
        entries=[entry_out(entry) for entry in page.entries],
        total=page.total,
        offset=page.offset,
        limit=page.limit,
    )


@router.post("/delete", summary="Delete several gallery entries", responses=READ_ERRORS)
async def delete_many(service: Writer, body: s.DeleteRequest) -> s.DeleteManyResponse:
    deleted, missing = await service.delete(body.ids)
    return s.DeleteManyResponse(deleted=deleted, missing=missing)


@router.get("/stats", summary="Gallery statistics", responses=READ_ERRORS)
async def stats(service: Reader) -> s.GalleryStats:
    return await service.stats()


@router.delete(
    "/{entry_id}",
    summary="Delete one gallery entry",
    responses={**errors(401, 403, 422, 503), **NOT_FOUND},
)
async def delete_one(service: Writer, entry_id: EntryId) -> s.DeleteOneResponse:
    deleted, _ = await service.delete([entry_id])
    if not deleted:
        raise NotFoundError(f"no gallery entry with id {entry_id}")
    return s.DeleteOneResponse(deleted=deleted)


@router.get(
    "/{entry_id}",
    summary="One gallery entry's metadata",
    responses={**READ_ERRORS, **NOT_FOUND},
)
async def get_entry(service: Reader, entry_id: EntryId) -> s.EntryOut:
    return entry_out(await service.get_entry(entry_id))


@router.get(
    "/{entry_id}/thumbnail",
    summary="One gallery entry's JPEG thumbnail",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "JPEG thumbnail"},
        **READ_ERRORS,
        **NOT_FOUND,
    },
)
async def thumbnail(service: Reader, entry_id: EntryId) -> Response:
    return Response(await service.thumbnail(entry_id), media_type="image/jpeg")
