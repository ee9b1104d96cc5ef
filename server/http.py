"""The HTTP front end (FastAPI): thin routes over :class:`server.service.SearchService`.

``create_app(settings, service)`` builds the app from the routers of
:mod:`server.routes` (search, gallery, service); tests inject a service made of fakes,
``python -m server`` injects the real one (shared with gRPC). Every refusal answers
``{"error": {"type": ..., "message": ...}}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from server import docs, logs, wire
from server.errors import ServiceError
from server.middleware import (
    SCOPE_KEY,
    BodyLimitMiddleware,
    MetricsMiddleware,
    error_response,
    service_error_response,
)
from server.routes import ROUTERS, page
from server.routes.fastpath import FastPathMiddleware
from server.service import SearchService
from server.settings import ServerSettings

log = logging.getLogger("server.http")

MULTIPART_PATHS = {"/v1/search", "/v1/embed", "/v1/gallery"}
MULTIPART_LIMIT = re.compile(r"exceeded maximum size|Too many (fields|files)", re.I)
"""Starlette's messages for a multipart form over its limits (it answers 400)."""


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
            'gallery. Errors answer `{"error": {"type", "message", "request_id"}}`; the '
            "request id (the caller's `X-Request-ID` or a new one) is also in the answer's "
            "`X-Request-ID` header and in every server log line of the request."
        ),
        lifespan=lifespan,
        docs_url=None,  # served from local files by server.docs
        redoc_url=None,
    )
    app.state.service = service
    app.state.settings = settings
    _add_handlers(app)
    docs.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(page.router)
    # innermost of the middleware: after the request id, metrics and body limits
    app.add_middleware(FastPathMiddleware, routes=lambda: _all_routes(app))
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout_s
    )
    app.add_middleware(
        MetricsMiddleware,
        get_metrics=lambda: app.state.service.metrics if app.state.service else None,
    )
    return app


def _add_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return service_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        """415 when a multipart route was sent something else; 400 for values a validator
        refused (the message gRPC sends too); 422 for missing or mistyped fields."""
        content_type = request.headers.get("content-type", "")
        multipart = request.method == "POST" and request.url.path in MULTIPART_PATHS
        if multipart and "multipart/form-data" not in content_type:
            return error_response(
                415,
                "UnsupportedMediaError",
                f"expected a multipart/form-data body with 'images' files, got "
                f"{content_type or 'no content type'}",
            )
        errors = exc.errors()
        if wire.refused_values(errors):
            return error_response(400, "BadInputError", wire.describe(errors))
        return error_response(422, "ValidationError", wire.describe(errors) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = str(exc.detail)
        if exc.status_code == 400 and MULTIPART_LIMIT.search(detail):
            # Starlette's multipart limits: 1 MiB per text field, 1,000 fields or files.
            return error_response(413, "PayloadTooLargeError", f"multipart form: {detail}")
        response = error_response(exc.status_code, "HTTPError", detail)
        for name, value in (exc.headers or {}).items():  # e.g. Allow on a 405
            response.headers[name] = value
        if exc.status_code == 405:  # every method of the path, not only its first route's
            response.headers["Allow"] = ", ".join(_allowed_methods(request))
        return response

    @app.exception_handler(Exception)
    async def last_resort(request: Request, exc: Exception) -> Response:
        """Anything no other handler answered: a JSON 500 with the request id (logged
        with its traceback by ``MetricsMiddleware`` or here), never a plain-text page."""
        rid = request.scope.get(SCOPE_KEY) or logs.request_id.get()
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        message = f"the server failed on this request (request id {rid}; see the server log)"
        return error_response(500, "InternalError", message, request_id=rid)


def _all_routes(app: FastAPI) -> list[BaseRoute]:
    """The app's own routes and those of the routers it includes (``server.routes``)."""
    own = [route for route in app.router.routes if getattr(route, "path", None)]
    return [*own, *(route for router in (*ROUTERS, page.router) for route in router.routes)]


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route of the app answers at the request's path."""
    methods: set[str] = set()
    for route in _all_routes(request.app):
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


__all__ = ["create_app"]
