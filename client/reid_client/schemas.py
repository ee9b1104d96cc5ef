"""The API contract: pydantic models of every request and answer of the search server.

The server builds its answers from these models (they document the OpenAPI schema) and
the clients parse answers into them, so both sides read the same typed fields. The
gRPC API (``proto/reid/v1/reid.proto``) carries the same values; its JSON fields
(``stats_json``, ``info_json``) hold :class:`GalleryStats` and :class:`ModelInfo`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_ID = 2**63 - 1
"""Largest gallery id the API accepts (SQLite's ``INTEGER``; gRPC ids are ``uint64``)."""
MAX_CAMERA = 2**31 - 1
"""Largest camera id the API accepts (gRPC cameras are ``int32``)."""
MIN_TRACK, MAX_TRACK = -(2**63), 2**63 - 1
"""Track ids are signed 64-bit integers (gRPC's ``int64``)."""

GalleryId = Annotated[int, Field(ge=0, le=MAX_ID)]
CameraId = Annotated[int, Field(ge=0, le=MAX_CAMERA)]


def _id_list(name: str, value: object, maximum: int = MAX_CAMERA) -> list[int] | None:
    """``"1,2"``, ``["1", "2"]``, ``["1,2"]`` or ``[1, 2]`` -> ``[1, 2]``; empty -> None.

    Every value must be in ``0..maximum`` (camera ids by default)."""
    if value is None:
        return None
    if isinstance(value, str):
        parts: list[object] = list(value.split(","))
    elif isinstance(value, list | tuple | set | frozenset):
        parts = list(value)
    else:  # one id; a wrong type is reported below (a TypeError would escape pydantic)
        parts = [value]
    out: list[int] = []
    for part in parts:
        if isinstance(part, str):
            if "," in part:
                out.extend(_id_list(name, part, maximum) or [])
                continue
            if not part.strip():
                continue
            if len(part.strip()) > 30:  # int() refuses 4,300+ digits with a long message
                raise ValueError(
                    f"{name} values must be between 0 and {maximum}, got {part[:20]}..."
                )
            try:
                part = int(part)
            except ValueError:
                raise ValueError(
                    f"{name} must be comma-separated integers, got {_cut(value)}"
                ) from None
        if isinstance(part, bool) or not isinstance(part, int):
            raise ValueError(f"{name} must be integers, got {_cut(part)}")
        if not 0 <= part <= maximum:
            raise ValueError(f"{name} values must be between 0 and {maximum}, got {_cut(part)}")
        out.append(part)
    return out or None


def _cut(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (a huge value is not echoed back)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return f"an integer of more than {limit} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _CameraTimeFilter(BaseModel):
    """Keep entries of some cameras within an inclusive time window (search and listing)."""

    model_config = ConfigDict(extra="forbid")
    cameras: list[CameraId] | None = Field(None, description="keep only these cameras")
    time_from: float | None = Field(None, description="earliest timestamp")
    time_to: float | None = Field(None, description="latest timestamp")

    @field_validator("cameras", mode="before")
    @classmethod
    def _parse_ids(cls, value: object, info: Any) -> list[int] | None:
        return _id_list(info.field_name, value)

    @field_validator("time_from", "time_to")
    @classmethod
    def _finite(cls, value: float | None, info: Any) -> float | None:
        return _finite_or_none(info.field_name, value)

    @model_validator(mode="after")
    def _time_order(self) -> _CameraTimeFilter:
        t_from, t_to = self.time_from, self.time_to
        if t_from is not None and t_to is not None and t_from > t_to:
            raise ValueError(f"time_from ({t_from}) is after time_to ({t_to})")
        return self


def _finite_or_none(name: str, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


class _SearchOptions(_CameraTimeFilter):
    """The search fields shared by every way of querying: k, ranking and filters."""

    k: int = Field(10, ge=1, le=2**31 - 1, description="matches per query")
    full_ranking: bool = Field(False, description="every entry passing the filters")
    exclude_same_camera: bool = Field(False, description="drop matches from the query's camera")
    exclude_cameras: list[CameraId] | None = Field(None, description="drop these cameras")
    min_score: float | None = Field(None, description="lowest cosine score")

    @field_validator("exclude_cameras", mode="before")
    @classmethod
    def _parse_excluded(cls, value: object, info: Any) -> list[int] | None:
        return _id_list(info.field_name, value)

    @field_validator("min_score")
    @classmethod
    def _finite_score(cls, value: float | None, info: Any) -> float | None:
        return _finite_or_none(info.field_name, value)

    def form_fields(self) -> dict[str, str]:
        """The fields as multipart form values (unset optional fields left out)."""
        return _form_values(self.model_dump(exclude_none=True))


class SearchParams(_SearchOptions):
    """How to search: the form fields of ``POST /v1/search`` (and of gRPC ``Search``).

    Camera lists are sent as comma-separated integers; ``k`` is ignored for a full
    ranking. The server also checks ``k`` against its own ``max_k``.
    """

    query_cameras: list[CameraId] | None = Field(None, description="the camera of each query image")

    @field_validator("query_cameras", mode="before")
    @classmethod
    def _parse_query_cameras(cls, value: object, info: Any) -> list[int] | None:
        return _id_list(info.field_name, value)

    @model_validator(mode="after")
    def _same_camera_needs_cameras(self) -> SearchParams:
        if self.exclude_same_camera and self.query_cameras is None:
            raise ValueError("exclude_same_camera needs query_cameras (one per query image)")
        return self


class EntrySearchParams(_SearchOptions):
    """How to search with a gallery entry (``POST /v1/search/by-entry/{id}``, gRPC
    ``SearchByEntry``): the fields of :class:`SearchParams` but the query cameras, since
    the entry's own camera is the query's (``exclude_same_camera`` uses it). The entry
    itself is never among its matches."""


MAX_PAGE_SIZE = 1000
"""Most entries one page of ``GET /v1/gallery`` may hold."""


class GalleryPageParams(_CameraTimeFilter):
    """Which page of the gallery to list (``GET /v1/gallery``, gRPC ``ListGallery``).

    Entries are ordered by id; ``cameras`` and the inclusive time window filter them as
    in a search (an entry without a camera or timestamp fails those filters).
    """

    offset: int = Field(
        0,
        description="entries to skip (matching the filters, in id order)",
        json_schema_extra={"minimum": 0, "maximum": MAX_ID},
    )
    limit: int = Field(
        50,
        description=f"entries per page, 1..{MAX_PAGE_SIZE}",
        json_schema_extra={"minimum": 1, "maximum": MAX_PAGE_SIZE},
    )

    @field_validator("offset")
    @classmethod
    def _offset_range(cls, value: int) -> int:
        if not 0 <= value <= MAX_ID:
            raise ValueError(f"offset must be between 0 and {MAX_ID}, got {value}")
        return value

    @field_validator("limit")
    @classmethod
    def _limit_range(cls, value: int) -> int:
        if not 1 <= value <= MAX_PAGE_SIZE:
            raise ValueError(
                f"limit must be between 1 and {MAX_PAGE_SIZE} (got {value}); "
                "page through the gallery with offset"
            )
        return value

    def query_values(self) -> dict[str, str]:
        """The fields as URL query values (unset optional fields left out)."""
        return _form_values(self.model_dump(exclude_none=True))


def _form_values(values: dict[str, Any]) -> dict[str, str]:
    """Form or query values: booleans as true/false, lists comma-separated."""
    fields: dict[str, str] = {}
    for name, value in values.items():
        if isinstance(value, bool):
            fields[name] = "true" if value else "false"
        elif isinstance(value, list):
            fields[name] = ",".join(str(v) for v in value)
        else:
            fields[name] = str(value)
    return fields


class EntryMetadataIn(BaseModel):
    """Where and when a crop was seen; one per image of ``POST /v1/gallery``."""

    model_config = ConfigDict(extra="forbid")
    camera: int | None = Field(None, ge=0, le=MAX_CAMERA, description="0-based camera id")
    timestamp: float | None = Field(None, description="seconds (unix or video time)")
    track: int | None = Field(None, ge=MIN_TRACK, le=MAX_TRACK, description="track id")
    box: list[float] | None = Field(
        None, min_length=4, max_length=4, description="[x, y, w, h] in the source frame"
    )
    source: str | None = Field(None, description="file, stream or video name")
    extra: dict[str, Any] = Field(default_factory=dict, description="JSON user data")
    key: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="idempotency key, unique in the gallery: an add whose key is already "
        "stored adds nothing and answers the stored entry's id",
    )


class ErrorDetail(BaseModel):
    type: str = Field(description="error class, e.g. BadInputError")
    message: str = Field(description="what was wrong, for a person to read")
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class MatchOut(BaseModel):
    id: int
    score: float = Field(description="cosine similarity, higher is closer")
    camera: int | None = None
    timestamp: float | None = None
    track: int | None = None
    box: list[float] | None = Field(None, description="[x, y, w, h] in the source frame")
    source: str | None = None
    thumbnail_url: str | None = None


class QueryResult(BaseModel):
    query_index: int
    query_camera: int | None = None
    matches: list[MatchOut]


class SearchResponse(BaseModel):
    results: list[QueryResult] = Field(description="one per query image, in query order")
    gallery_size: int | None = Field(None, description="entries searched (not sent over gRPC)")
    took_ms: float | None = Field(None, description="server time (not sent over gRPC)")


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]
    dim: int
    model: str


class AddResponse(BaseModel):
    ids: list[int]


class DeleteRequest(BaseModel):
    ids: list[GalleryId] = Field(min_length=1, max_length=10_000, description="gallery ids")

    @field_validator("ids", mode="before")
    @classmethod
    def _bounded_ids(cls, value: object) -> object:
        """Ids out of range are refused by value, naming the field (not as a 5xx)."""
        for item in value if isinstance(value, list) else ():
            if isinstance(item, int) and not isinstance(item, bool) and not 0 <= item <= MAX_ID:
                raise ValueError(f"ids values must be between 0 and {MAX_ID}, got {_cut(item)}")
        return value


class DeleteManyResponse(BaseModel):
    deleted: list[int]
    missing: list[int]


class DeleteOneResponse(BaseModel):
    deleted: list[int]


class EntryOut(BaseModel):
    id: int
    camera: int | None = None
    timestamp: float | None = None
    track: int | None = None
    box: list[float] | None = None
    source: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    key: str | None = Field(None, description="the idempotency key it was added with")
    created: float = Field(description="unix time of the add")
    thumbnail_url: str | None = None


class GalleryPage(BaseModel):
    """One page of the gallery (``GET /v1/gallery``), entries in id order."""

    entries: list[EntryOut] = Field(description="at most `limit` entries, in id order")
    total: int = Field(description="entries matching the filters, on every page together")
    offset: int = Field(description="entries skipped before this page")
    limit: int = Field(description="the page size asked for")


class GalleryStats(BaseModel):
    """The gallery's size, index and contents (``GET /v1/gallery/stats``)."""

    model_config = ConfigDict(extra="allow")  # a newer server may report more
    size: int = Field(description="entries in the gallery")
    dim: int = Field(description="embedding dimension")
    index: str = Field(description="index in use: flat, ivf, ivf_sq8 or hnsw")
    index_requested: str = Field(
        description="the configured choice (auto, flat, ivf, ivf_sq8, hnsw)"
    )
    ivf_nlist: int | None = None
    ivf_nprobe: int | None = None
    hnsw_ef_search: int | None = None
    hnsw_tombstones: int | None = None
    rerank_factor: int | None = Field(
        None,
        description="compressed index: candidates per result re-scored with exact embeddings",
    )
    recall: dict[str, Any] | None = Field(
        None, description="last measured recall@k of the index against exact search"
    )
    cameras: dict[int, int] = Field(default_factory=dict, description="entries per camera")
    time_range: list[float] | None = Field(None, description="[earliest, latest] timestamp")
    with_thumbnails: int = 0
    directory: str | None = Field(None, description="the gallery directory on the server")


class ModelSummary(BaseModel):
    """The served export, from its manifest."""

    name: str
    method: str | None = None
    embedding_dim: int
    normalized: bool = True
    input_size: list[int] = Field(description="[height, width] of the model input")
    preprocess: dict[str, Any] = Field(default_factory=dict)
    precision: dict[str, str] = Field(default_factory=dict)
    created: str = ""
    checkpoint_sha256: str | None = Field(
        None, description="SHA-256 of the checkpoint the export was made from"
    )
    export_dir: str | None = Field(
        None,
        description="the export directory on the server; only reported when the operator "
        "allows it (--expose-export-dir)",
    )


class RuntimeInfo(BaseModel):
    """The inference runtime; runtimes add their own fields (providers, precision...)."""

    model_config = ConfigDict(extra="allow")
    runtime: str
    device: str
    model: str
    embedding_dim: int
    input_size: list[int]


class BatchingInfo(BaseModel):
    enabled: bool
    max_batch: int
    max_wait_ms: float
    workers: int


class Limits(BaseModel):
    """What one request may ask for; larger requests are refused."""

    max_images: int = Field(description="images per request")
    max_body_mb: float
    max_pixels: int = Field(description="pixels per decoded image")
    max_request_pixels: int | None = Field(
        None, description="pixels of all the images of one request together"
    )
    max_k: int
    max_full_ranking: int | None = Field(
        description="entries returned by a full ranking at most (None: every entry)"
    )


class AuthInfo(BaseModel):
    writes_need_key: bool
    reads_need_key: bool


class ModelInfo(BaseModel):
    """``GET /v1/model``: the served model, runtime, batching, limits and auth."""

    model: ModelSummary
    runtime: RuntimeInfo
    batching: BatchingInfo
    limits: Limits
    auth: AuthInfo


class Health(BaseModel):
    status: str
