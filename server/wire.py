"""From the API contract (``reid_client.schemas``) to the service's typed values, for both
front ends.

Each request is validated once, where it enters the server: the HTTP routes read their
fields into :class:`SearchForm` / :class:`RawSearchQuery` (FastAPI validates them), the
gRPC servicer builds the same models from its messages (:func:`validated`). A value that
a validator refuses is ``400`` / ``INVALID_ARGUMENT`` with the same message over both
protocols. The service checks only what needs its limits or the request as a whole (the
image count, ``k`` against ``max_k``, one query camera per image); the gallery, a
library, checks its own inputs for every caller.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema
from starlette.responses import Response

from reid.gallery import EntryMetadata, SearchFilters
from reid_client.schemas import MAX_CAMERA, EntrySearchParams, GalleryPageParams, SearchParams
from server.errors import BadInputError
from server.service import SearchOptions

M = TypeVar("M", bound=BaseModel)


class JsonResponse(Response):
    """A JSON answer encoded by orjson from plain values (dicts, lists, str, int, float,
    None); routes that return one declare their ``response_model`` for the OpenAPI schema.

    The same JSON as Starlette's ``JSONResponse`` (compact, UTF-8, no ASCII escapes)
    for those values, in a fraction of the time. Non-finite floats become ``null``.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def thumbnail_url(entry_id: int, has_thumbnail: bool) -> str | None:
    """Path of an entry's thumbnail on the HTTP server; None when it has none."""
    return f"/v1/gallery/{int(entry_id)}/thumbnail" if has_thumbnail else None


# -- search options ------------------------------------------------------------------------


class SearchForm(SearchParams):
    """The search fields as the server reads them: the form of ``POST /v1/search``.

    Unknown fields are ignored (the image files share the form). ``k`` is only typed
    here: its range depends on the server's ``max_k``, so the service checks it, with
    one message for ``k=0`` and for a ``k`` that is too large.
    """

    model_config = ConfigDict(extra="ignore")
    k: int = Field(10, description="matches per query, 1..max_k (see GET /v1/model)")


class RawSearchQuery(SearchForm):
    """The query parameters of ``POST /v1/search/raw``: one image, so one ``query_camera``."""

    query_cameras: Annotated[
        list[int] | None,
        WithJsonSchema({"type": "integer", "minimum": 0, "maximum": MAX_CAMERA}),
    ] = Field(None, alias="query_camera", description="the query image's camera")


class EntrySearchForm(EntrySearchParams):
    """The form of ``POST /v1/search/by-entry/{entry_id}`` (and of gRPC ``SearchByEntry``):
    :class:`SearchForm` without query cameras, the entry's own camera being the query's.
    """

    model_config = ConfigDict(extra="ignore")
    k: int = Field(10, description="matches per query, 1..max_k (see GET /v1/model)")


class GalleryQuery(GalleryPageParams):
    """The query parameters of ``GET /v1/gallery`` (unknown parameters are ignored)."""

    model_config = ConfigDict(extra="ignore")


def search_options(
    params: SearchParams | EntrySearchParams,
    *,
    query_cameras: Sequence[int | None] | None = None,
) -> SearchOptions:
    """The service's options from validated parameters; ``k=None`` for a full ranking.

    ``query_cameras`` (one camera or None per query) overrides ``params.query_cameras``
    where the protocol lets a query leave its camera unknown (gRPC). A search by entry
    has none: the service takes the entry's camera.
    """
    if query_cameras is None:
        query_cameras = getattr(params, "query_cameras", None)
    include = params.cameras
    return SearchOptions(
        k=None if params.full_ranking else params.k,
        filters=SearchFilters(
            exclude_cameras=frozenset(params.exclude_cameras or ()),
            include_cameras=None if include is None else frozenset(include),
            time_from=params.time_from,
            time_to=params.time_to,
            min_score=params.min_score,
        ),
        query_cameras=query_cameras,
        exclude_same_camera=params.exclude_same_camera,
    )


# -- gallery metadata ----------------------------------------------------------------------


def parse_json(text: str, where: str) -> Any:
    """A JSON value sent as text (HTTP's ``metadata`` field, gRPC's ``extra_json``), or
    ``BadInputError`` naming ``where``: invalid JSON, an integer of 4,300+ digits,
    nesting too deep for the parser."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInputError(f"{where} is not valid JSON: {error}") from None
    except RecursionError:
        raise BadInputError(f"{where} is nested too deeply") from None
    except ValueError as error:  # "Exceeds the limit (4300 digits) for integer string..."
        if "digits" in str(error):
            raise BadInputError(f"{where} has an integer of more than 4300 digits") from None
        raise BadInputError(f"{where} is not valid JSON: {error}") from None


def entry_metadata(data: Mapping[str, Any], where: str) -> EntryMetadata:
    """One image's metadata (HTTP's JSON object or a gRPC message's fields), checked by
    ``EntryMetadata`` itself; ``where`` names the item in the error message."""
    try:
        return EntryMetadata.from_dict(data)
    except (TypeError, ValueError) as error:
        raise BadInputError(f"{where}: {error}") from None
    except RecursionError:
        raise BadInputError(f"{where}: nested too deeply") from None


# -- validation errors ---------------------------------------------------------------------


def refused_values(errors: Sequence[Mapping[str, Any]]) -> bool:
    """True when every error is a validator refusing a well-typed value (a ``400``);
    a missing field or a wrong type stays a ``422``."""
    return bool(errors) and all(error.get("type") == "value_error" for error in errors)


def describe(errors: Sequence[Mapping[str, Any]]) -> str:
    """One line for a person: the validators' own messages (they name their field),
    other errors prefixed by where they are."""
    parts = []
    for error in errors:
        cause = (error.get("ctx") or {}).get("error")
        if error.get("type") == "value_error" and isinstance(cause, Exception):
            parts.append(str(cause))
            continue
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
        message = error.get("msg", "invalid")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def validated(model: type[M], data: Mapping[str, Any]) -> M:
    """``model`` validated from ``data``; ``BadInputError`` with :func:`describe`'s message."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise BadInputError(describe(error.errors())) from None
