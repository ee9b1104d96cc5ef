"""Translation between the protobuf messages of ``reid.v1`` and the service's Python types.

Requests are validated where they enter: the search fields through the same
:class:`server.wire.SearchForm` as HTTP's form, metadata through the same
:func:`server.wire.entry_metadata`, so a bad value gets the same message over both
protocols. Every refusal is a ``BadInputError`` (``INVALID_ARGUMENT``) naming the field.
Replies carry the typed :class:`GalleryStats` / :class:`ModelInfo` as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from reid.gallery import MAX_CAMERA, Entry, EntryMetadata, EntryPage, Match
from reid_client.proto import reid_pb2
from reid_client.schemas import GalleryStats, ModelInfo
from server.errors import BadInputError
from server.service import SearchOptions
from server.wire import (
    EntrySearchForm,
    GalleryQuery,
    SearchForm,
    entry_metadata,
    parse_json,
    search_options,
    thumbnail_url,
    validated,
)

DEFAULT_K = 10
"""Matches per query when a request sets neither ``k`` nor ``full_ranking``."""


def _optional(message: Any, name: str) -> Any:
    """The field's value, or None when an ``optional`` field is unset."""
    return getattr(message, name) if message.HasField(name) else None


def _box_to_proto(box: Sequence[float] | None) -> reid_pb2.Box | None:
    if box is None:
        return None
    x, y, w, h = box
    return reid_pb2.Box(x=x, y=y, w=w, h=h)


def _extra_from_json(text: str, where: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    extra = parse_json(text, f"{where}.extra_json")
    if not isinstance(extra, dict):
        raise BadInputError(f"{where}.extra_json must be a JSON object, got {type(extra).__name__}")
    return extra


def metadata_from_proto(message: reid_pb2.EntryMetadata, where: str = "metadata") -> EntryMetadata:
    """``EntryMetadata`` of a request message; ``where`` prefixes error messages."""
    box = message.box if message.HasField("box") else None
    fields = {
        "camera": _optional(message, "camera"),
        "timestamp": _optional(message, "timestamp"),
        "track": _optional(message, "track"),
        "box": None if box is None else (box.x, box.y, box.w, box.h),
        "source": _optional(message, "source"),
        "extra": _extra_from_json(message.extra_json, where),
        "key": _optional(message, "key"),
    }
    return entry_metadata(fields, where)


def search_options_from_proto(request: reid_pb2.SearchRequest) -> SearchOptions:
    """``SearchOptions`` of a request: k (or a full ranking), filters and query cameras."""
    if request.full_ranking and request.HasField("k"):
        raise BadInputError("set either k or full_ranking, not both")
    queries = request.queries or request.embeddings
    cameras = [_optional(query, "camera") for query in queries]
    known = [camera for camera in cameras if camera is not None]
    params = validated(
        SearchForm,
        {
            "k": request.k if request.HasField("k") else DEFAULT_K,
            "full_ranking": request.full_ranking,
            # The cameras the queries name (a query may leave its camera unset), so an
            # exclude_same_camera without any is refused as over HTTP.
            "query_cameras": known or None,
            **_filter_fields(request.filters),
        },
    )
    return search_options(params, query_cameras=cameras if known else None)


def _filter_fields(f: reid_pb2.SearchFilters) -> dict[str, Any]:
    """The search form fields of a ``SearchFilters`` message (empty lists: every camera)."""
    return {
        "exclude_same_camera": f.exclude_same_camera,
        "cameras": list(f.include_cameras) or None,
        "exclude_cameras": list(f.exclude_cameras) or None,
        "time_from": _optional(f, "time_from"),
        "time_to": _optional(f, "time_to"),
        "min_score": _optional(f, "min_score"),
    }


def entry_search_options(request: reid_pb2.SearchByEntryRequest) -> SearchOptions:
    """``SearchOptions`` of a search by entry, validated by HTTP's ``EntrySearchForm``
    (the service sets the query camera: the entry's)."""
    if request.full_ranking and request.HasField("k"):
        raise BadInputError("set either k or full_ranking, not both")
    params = validated(
        EntrySearchForm,
        {
            "k": request.k if request.HasField("k") else DEFAULT_K,
            "full_ranking": request.full_ranking,
            **_filter_fields(request.filters),
        },
    )
    return search_options(params)


def gallery_query(request: reid_pb2.ListGalleryRequest) -> GalleryQuery:
    """The page a ``ListGalleryRequest`` asks for, validated as ``GET /v1/gallery``'s query."""
    fields: dict[str, Any] = {
        "offset": request.offset,
        "cameras": list(request.cameras) or None,
        "time_from": _optional(request, "time_from"),
        "time_to": _optional(request, "time_to"),
    }
    if request.HasField("limit"):
        fields["limit"] = request.limit
    return validated(GalleryQuery, fields)


def query_images(request: reid_pb2.SearchRequest) -> list[bytes]:
    """The encoded query images of a request (empty when it queries by embedding)."""
    return [query.image for query in request.queries]


def query_embeddings(request: reid_pb2.SearchRequest) -> np.ndarray:
    """float32[N, D] query embeddings of a request; all must have the same, non-zero length."""
    lengths = {len(query.values) for query in request.embeddings}
    if 0 in lengths:
        raise BadInputError("embeddings: every query embedding needs values")
    if len(lengths) > 1:
        found = sorted(lengths)
        raise BadInputError(f"embeddings: all query embeddings must have one length, got {found}")
    return np.array([list(query.values) for query in request.embeddings], dtype=np.float32)


def check_one_query_kind(request: reid_pb2.SearchRequest) -> None:
    """Exactly one of ``queries`` and ``embeddings`` must be given."""
    if request.queries and request.embeddings:
        raise BadInputError("give either queries (images) or embeddings, not both")
    if not request.queries and not request.embeddings:
        raise BadInputError("no query: give at least one query image or embedding")


def _camera_out(camera: int | None) -> int | None:
    """A stored camera as the ``int32`` field carries it. Writes are checked against
    ``MAX_CAMERA`` (both protocols); a larger one, stored by an older server, is sent as
    unset rather than failing every search that returns it."""
    return camera if camera is None or 0 <= camera <= MAX_CAMERA else None


def match_to_proto(match: Match) -> reid_pb2.Match:
    """A ``Match`` message; unset optional fields stand for missing metadata."""
    meta = match.metadata
    return reid_pb2.Match(
        id=int(match.id),
        score=float(match.score),
        camera=_camera_out(meta.camera),
        timestamp=meta.timestamp,
        track=meta.track,
        box=_box_to_proto(meta.box),
        source=meta.source,
        thumbnail_url=thumbnail_url(match.id, match.has_thumbnail) or "",
        extra_json=json.dumps(meta.extra),
    )


def search_response(
    results: Sequence[Sequence[Match]], query_cameras: Sequence[int | None] | None = None
) -> reid_pb2.SearchResponse:
    """A ``SearchResponse`` with one ``QueryResult`` per query (and its camera, if known)."""
    cameras = query_cameras if query_cameras is not None else [None] * len(results)
    return reid_pb2.SearchResponse(
        results=[
            reid_pb2.QueryResult(
                matches=[match_to_proto(m) for m in matches], query_camera=_camera_out(camera)
            )
            for matches, camera in zip(results, cameras, strict=True)
        ]
    )


def metadata_to_proto(meta: EntryMetadata) -> reid_pb2.EntryMetadata:
    """An ``EntryMetadata`` message (unset optional fields stand for missing values)."""
    return reid_pb2.EntryMetadata(
        camera=_camera_out(meta.camera),
        timestamp=meta.timestamp,
        track=meta.track,
        box=_box_to_proto(meta.box),
        source=meta.source,
        extra_json=json.dumps(meta.extra),
        key=meta.key,
    )


def stored_entry(entry: Entry) -> reid_pb2.StoredEntry:
    """A ``StoredEntry`` message: id, metadata, creation time and thumbnail path."""
    return reid_pb2.StoredEntry(
        id=int(entry.id),
        metadata=metadata_to_proto(entry.metadata),
        created=float(entry.created),
        thumbnail_url=thumbnail_url(entry.id, entry.has_thumbnail) or "",
    )


def list_gallery_response(page: EntryPage) -> reid_pb2.ListGalleryResponse:
    """A ``ListGalleryResponse`` of one page."""
    return reid_pb2.ListGalleryResponse(
        entries=[stored_entry(entry) for entry in page.entries],
        total=page.total,
        offset=page.offset,
        limit=page.limit,
    )


def embed_response(embeddings: np.ndarray) -> reid_pb2.EmbedResponse:
    """An ``EmbedResponse`` from float32[N, D]."""
    array = np.asarray(embeddings, dtype=np.float32)
    dim = int(array.shape[1]) if array.ndim == 2 else 0
    return reid_pb2.EmbedResponse(
        dim=dim, embeddings=[reid_pb2.Embedding(values=row.tolist()) for row in array]
    )


def stats_response(stats: GalleryStats) -> reid_pb2.GalleryStatsResponse:
    """A ``GalleryStatsResponse``: size and dim, and the whole ``GalleryStats`` as JSON."""
    return reid_pb2.GalleryStatsResponse(
        size=stats.size, dim=stats.dim, stats_json=stats.model_dump_json()
    )


def model_info_response(info: ModelInfo) -> reid_pb2.ModelInfoResponse:
    """A ``ModelInfoResponse``: name and dim, and the whole ``ModelInfo`` as JSON."""
    return reid_pb2.ModelInfoResponse(
        name=info.model.name, dim=info.model.embedding_dim, info_json=info.model_dump_json()
    )
