"""A fast path for a hot route: the ordinary request skips FastAPI's per-request work.

For every request FastAPI walks the route's declarations to solve its dependencies and
parameters: for ``POST /v1/search/raw`` (three dependencies, two security schemes, a
query model of nine fields) that was ~0.3 ms of CPU, as much as decoding, embedding
bookkeeping and searching together; and Starlette's exception middleware, its router
and FastAPI's request wrappers were half of the event loop's CPU per inference request
(py-spy, docs/BENCHMARKS.md). An endpoint marked with :func:`fast_path` keeps its
signature (it defines the OpenAPI schema and serves every request the fast path
declines); :class:`FastPathMiddleware`, just inside the server's own middleware
(request id, metrics, access log, body limits), first offers each request for it to its
fast path: an ``async`` function of the request that answers the ordinary case (service
ready, key accepted, parameters valid) and returns ``None`` for anything else, which
then goes down the ordinary stack, body included, and FastAPI handles exactly as
before. So every refusal (503, 401/403, 400/422 with FastAPI's validation messages)
still comes from FastAPI and the dependencies; the fast path only has to agree with
them on what they accept (``tests/test_server_http.py`` checks both helpers below
against FastAPI).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from fastapi import Request
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette._utils import get_route_path
from starlette.datastructures import Headers, QueryParams
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import ServiceError
from server.middleware import service_error_response

M = TypeVar("M", bound=BaseModel)
FastPath = Callable[[Request], Awaitable[Response | None]]
_ATTRIBUTE = "__reid_fast_path__"


def fast_path(handler: FastPath) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator (under ``@router.post``): ``handler`` answers the endpoint's ordinary
    requests first (in an app with :class:`FastPathMiddleware`).

    A handler that returns None (declines) must not have read the body other than with
    ``await request.body()`` (which the rest of the stack gets again)."""

    def mark(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        setattr(endpoint, _ATTRIBUTE, handler)
        return endpoint

    return mark


class FastPathMiddleware:
    """Offers each request for a fast-path route (``routes``: the routers' routes, in
    the app's order) to that route's fast path before the rest of the ASGI stack.

    A request goes to the fast path only when the first route matching its path and
    method is a fast-path one (as the router would choose). ``ServiceError`` answers as
    the app's handler does; anything else propagates to the outer middleware (a JSON
    500 with the request id). Declined requests (``None``) go on with their body intact.
    """

    def __init__(self, app: ASGIApp, routes: Callable[[], list[BaseRoute]]) -> None:
        self.app = app
        self._routes = routes
        self._tables: dict[str, list[tuple[APIRoute, FastPath | None]]] = {}

    def table(self, method: str) -> list[tuple[APIRoute, FastPath | None]]:
        """The API routes answering ``method``, in order, up to the last fast-path one,
        each with its fast path (or None); empty where no fast path takes ``method``, so
        those requests pass with no matching at all."""
        if method not in self._tables:
            rows = [
                (route, getattr(route.endpoint, _ATTRIBUTE, None))
                for route in self._routes()
                if isinstance(route, APIRoute) and (not route.methods or method in route.methods)
            ]
            last = max((i for i, (_, fast) in enumerate(rows) if fast), default=-1)
            self._tables[method] = rows[: last + 1]
        return self._tables[method]

    def _find(self, scope: Scope) -> tuple[APIRoute, FastPath, dict[str, Any]] | None:
        path = get_route_path(scope)  # as the router reads it
        for route, fast in self.table(scope["method"]):
            match = route.path_regex.match(path)
            if match is None:
                continue
            if fast is None:
                return None  # an ordinary route answers this request first
            params = {
                key: route.param_convertors[key].convert(value)
                for key, value in match.groupdict().items()
            }
            return route, fast, params
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._find(scope) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        route, fast, params = found
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = params
        request = Request(scope, receive, send)
        try:
            response = await fast(request)
        except ServiceError as exc:
            response = service_error_response(exc)  # as the app's exception handler
        if response is None:
            await self.app(scope, _replay(request, receive), send)
            return
        await response(scope, receive, send)


def _replay(request: Request, receive: Receive) -> Receive:
    """``receive`` for the rest of the stack: the body again if the fast path read it."""
    body: bytes | None = getattr(request, "_body", None)
    if body is None:
        if getattr(request, "_stream_consumed", False):
            raise RuntimeError("a fast path declined after streaming the body (read it with "
                               "request.body(), or answer)")  # fmt: skip
        return receive
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def request_key(headers: Headers) -> str | None:
    """The API key of a request as ``server.routes.deps`` reads it: ``X-API-Key``
    (FastAPI's ``APIKeyHeader``), else the credentials of ``Authorization: Bearer``
    (``HTTPBearer``), else None. The first of repeated headers counts, as there."""
    api_key = authorization = None
    for name, value in headers.raw:  # one pass (a missing header costs a KeyError in .get)
        if name == b"x-api-key":
            if api_key is None:
                api_key = value
        elif name == b"authorization" and authorization is None:
            authorization = value
    if api_key:
        return api_key.decode("latin-1")
    if not authorization:
        return None
    scheme, _, credentials = authorization.decode("latin-1").partition(" ")
    credentials = credentials.strip()
    if not (scheme and credentials) or scheme.lower() != "bearer":
        return None
    return credentials


def _is_sequence(annotation: Any) -> bool:
    """Whether a field takes repeated query parameters (``list[int] | None`` and the
    like), as FastAPI decides it."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_sequence(arg) for arg in typing.get_args(annotation))
    return origin in (list, set, tuple, frozenset) or annotation in (list, set, tuple)


class QueryModel(Generic[M]):
    """Reads a pydantic model from query parameters as FastAPI's ``Query()`` model does:
    a list field from every value of its alias, any other field from the last value,
    absent (or empty lists) left to the defaults; then the model validates it."""

    def __init__(self, model: type[M]) -> None:
        self.model = model
        self.fields = [
            (field.alias or name, _is_sequence(field.annotation))
            for name, field in model.model_fields.items()
        ]

    def parse(self, query: QueryParams) -> M:
        """The validated model; ``pydantic.ValidationError`` when the values are refused."""
        values: dict[str, Any] = {}
        for alias, many in self.fields:
            if many:
                found = query.getlist(alias)
                if found:
                    values[alias] = found
            else:
                value = query.get(alias)
                if value is not None:
                    values[alias] = value
        return self.model.model_validate(values)
