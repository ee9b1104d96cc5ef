"""Translation between the protobuf messages of ``reid.v1`` and the service's Python types.

Every check here raises ``BadInputError`` with a message naming the offending field, so a
malformed request becomes ``INVALID_ARGUMENT`` like any other bad input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gallery.types import EntryMetadata, Match, SearchFilters
from server.errors import BadInputError
from server.grpc_api import reid_pb2
from server.service import SearchOptions

DEFAULT_K = 10
"""Matches per query when a request sets neither ``k`` nor ``full_ranking``."""


def thumbnail_url(entry_id: int) -> str:
    """Path of an entry's thumbnail on the HTTP server."""
    return f"/v1/gallery/{entry_id}/thumbnail"


def _optional(message: Any, name: str) -> Any:
    """The field's value, or None when an ``optional`` field is unset."""
    return getattr(message, name) if message.HasField(name) else None


def _box_from_proto(message: Any) -> tuple[float, float, float, float] | None:
    if not message.HasField("box"):
        return None
    box = message.box
    return (box.x, box.y, box.w, box.h)


def _box_to_proto(box: Sequence[float] | None) -> reid_pb2.Box | None:
    if box is None:
        return None
    x, y, w, h = box
    return reid_pb2.Box(x=x, y=y, w=w, h=h)


def _extra_from_json(text: str, where: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        extra = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInputError(f"{where}.extra_json is not valid JSON: {error}") from None
    if not isinstance(extra, dict):
        raise BadInputError(f"{where}.extra_json must be a JSON object, got {type(extra).__name__}")
    return extra


def metadata_from_proto(message: reid_pb2.EntryMetadata, where: str = "metadata") -> EntryMetadata:
    """``EntryMetadata`` of a request message; ``where`` prefixes error messages."""
    try:
        return EntryMetadata(
            camera=_optional(message, "camera"),
            timestamp=_optional(message, "timestamp"),
            track=_optional(message, "track"),
            box=_box_from_proto(message),
            source=_optional(message, "source"),
            extra=_extra_from_json(message.extra_json, where),
        )
    except ValueError as error:
        raise BadInputError(f"{where}: {error}") from None


def filters_from_proto(message: reid_pb2.SearchFilters) -> SearchFilters:
    """``SearchFilters`` of a request; an empty ``include_cameras`` means every camera."""
    try:
        return SearchFilters(
            exclude_cameras=frozenset(message.exclude_cameras),
            include_cameras=frozenset(message.include_cameras) or None,
            time_from=_optional(message, "time_from"),
            time_to=_optional(message, "time_to"),
            min_score=_optional(message, "min_score"),
        )
    except ValueError as error:
        raise BadInputError(f"filters: {error}") from None


def search_options_from_proto(request: reid_pb2.SearchRequest) -> SearchOptions:
    """``SearchOptions`` of a request: k (or a full ranking), filters and query cameras."""
    if request.full_ranking and request.HasField("k"):
        raise BadInputError("set either k or full_ranking, not both")
    k = None if request.full_ranking else (request.k if request.HasField("k") else DEFAULT_K)
    queries = request.queries or request.embeddings
    cameras = [_optional(query, "camera") for query in queries]
    return SearchOptions(
        k=k,
        filters=filters_from_proto(request.filters),
        # None when no query names a camera, so exclude_same_camera is refused clearly.
        query_cameras=cameras if any(c is not None for c in cameras) else None,
        exclude_same_camera=request.filters.exclude_same_camera,
    )


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


def match_to_proto(match: Match) -> reid_pb2.Match:
    """A ``Match`` message; unset optional fields stand for missing metadata."""
    meta = match.metadata
    return reid_pb2.Match(
        id=int(match.id),
        score=float(match.score),
        camera=meta.camera,
        timestamp=meta.timestamp,
        track=meta.track,
        box=_box_to_proto(meta.box),
        source=meta.source,
        thumbnail_url=thumbnail_url(match.id) if match.has_thumbnail else "",
        extra_json=json.dumps(meta.extra),
    )


def search_response(results: Sequence[Sequence[Match]]) -> reid_pb2.SearchResponse:
    """A ``SearchResponse`` with one ``QueryResult`` per query."""
    return reid_pb2.SearchResponse(
        results=[
            reid_pb2.QueryResult(matches=[match_to_proto(m) for m in matches])
            for matches in results
        ]
    )


def embed_response(embeddings: np.ndarray) -> reid_pb2.EmbedResponse:
    """An ``EmbedResponse`` from float32[N, D]."""
    array = np.asarray(embeddings, dtype=np.float32)
    dim = int(array.shape[1]) if array.ndim == 2 else 0
    return reid_pb2.EmbedResponse(
        dim=dim, embeddings=[reid_pb2.Embedding(values=row.tolist()) for row in array]
    )


def _int_field(data: Mapping[str, Any], *names: str) -> int:
    for name in names:
        value = data.get(name)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
    return 0


def _to_json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, default=str, sort_keys=True)


def stats_response(stats: Mapping[str, Any]) -> reid_pb2.GalleryStatsResponse:
    """A ``GalleryStatsResponse``: size and dim pulled out, the whole dict as JSON."""
    return reid_pb2.GalleryStatsResponse(
        size=_int_field(stats, "size", "count"),
        dim=_int_field(stats, "dim"),
        stats_json=_to_json(stats),
    )


def model_info_response(info: Mapping[str, Any]) -> reid_pb2.ModelInfoResponse:
    """A ``ModelInfoResponse``: name and dim pulled out, the whole dict as JSON.

    The name and dim are read from ``info["model"]`` when that is a dict (the service's
    layout), else from the top level.
    """
    model = info.get("model")
    summary = model if isinstance(model, Mapping) else info
    return reid_pb2.ModelInfoResponse(
        name=str(summary.get("name") or ""),
        dim=_int_field(summary, "embedding_dim", "dim"),
        info_json=_to_json(info),
    )
