"""Pydantic models of the HTTP API's bodies (they document the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    type: str = Field(description="error class, e.g. BadInputError")
    message: str = Field(description="what was wrong, for a person to read")


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
    results: list[QueryResult]
    gallery_size: int
    took_ms: float


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]
    dim: int
    model: str


class AddResponse(BaseModel):
    ids: list[int]


class DeleteRequest(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=10_000, description="gallery ids")


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
    created: float = Field(description="unix time of the add")
    thumbnail_url: str | None = None


class StatsResponse(BaseModel):
    """The gallery's own statistics (size, dim, index, cameras, ...)."""

    model_config = ConfigDict(extra="allow")


class ModelInfo(BaseModel):
    """Manifest summary, runtime description, batching and limits."""

    model_config = ConfigDict(extra="allow")
    model: dict[str, Any]
    runtime: dict[str, Any]
    batching: dict[str, Any]
    limits: dict[str, Any]
    auth: dict[str, Any]


class Health(BaseModel):
    status: str
