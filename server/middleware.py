"""ASGI middleware of the HTTP app: request body limit, and per request its id, access
log line and metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import logs
from server.errors import ServiceError

access_log = logging.getLogger("server.access")
log = logging.getLogger("server.http")

SCOPE_KEY = "reid.request_id"
"""Where the request's id is kept in the ASGI scope (for handlers outside its context)."""


def error_response(
    status: int, kind: str, message: str, *, request_id: str | None = None, **extra: Any
) -> JSONResponse:
    """The API's error body ``{"error": {"type", "message", "request_id"}}``.

    ``request_id`` defaults to the id of the request being served (``server.logs``).
    """
    rid = request_id or logs.request_id.get()
    body = {"type": kind, "message": message, **extra}
    if rid:
        body["request_id"] = rid
    headers = {logs.HEADER: rid} if rid else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def service_error_response(exc: ServiceError) -> JSONResponse:
    """The answer to a :class:`ServiceError` (its status, type and message)."""
    return error_response(exc.http_status, type(exc).__name__, exc.message)


# -- middleware ------------------------------------------------------------------------


class BodyTimeoutError(Exception):
    """The client paused longer than the body timeout while sending a request body."""


class BodyLimitMiddleware:
    """413 for bodies over the limit: from Content-Length, or counted while streaming;
    408 when the client pauses more than ``timeout`` seconds while sending the body.

    Either way the app's own answer is replaced (what it read was cut short) and the
    connection is closed.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        message = f"request body is larger than the limit of {limit} bytes (max_body_mb)"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    await error_response(413, "PayloadTooLargeError", message)(scope, receive, send)
                    return
        state = {"seen": 0, "over": False, "late": False, "done": False, "replaced": False}
        timeout = self.timeout

        async def counting_receive() -> Message:
            if state["done"] or timeout is None:
                msg = await receive()
            else:
                try:
                    async with asyncio.timeout(timeout):  # a timer, not a task (wait_for)
                        msg = await receive()
                except TimeoutError:
                    state["late"] = True
                    raise BodyTimeoutError(f"no body data for {timeout:g} s") from None
            if msg["type"] == "http.request":
                state["seen"] += len(msg.get("body", b""))
                if not msg.get("more_body", False):
                    state["done"] = True
                if state["seen"] > limit:
                    state["over"] = True
                    state["done"] = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return msg

        async def replace() -> None:
            if state["replaced"]:
                return
            state["replaced"] = True
            if state["over"]:
                answer = error_response(413, "PayloadTooLargeError", message)
            else:
                answer = error_response(
                    408,
                    "RequestTimeoutError",
                    f"the request body stopped arriving for more than {timeout:g} s "
                    "(body_timeout_s)",
                )
            answer.headers["connection"] = "close"
            await answer(scope, receive, send)

        async def guarded_send(msg: Message) -> None:
            if state["over"] or state["late"]:  # whatever the app answers, this is the answer
                if msg["type"] == "http.response.start":
                    await replace()
                return
            await send(msg)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTimeoutError:
            await replace()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _access_log_enabled(scope: Scope) -> bool:
    settings = getattr(getattr(scope.get("app"), "state", None), "settings", None)
    return bool(getattr(settings, "access_log", True))


class MetricsMiddleware:
    """The outermost layer of every HTTP request: its id, access log line and metrics.

    * The request id is the client's ``X-Request-ID`` when usable (1-128 plain
      characters), else a new one; it is bound for the request's log lines
      (``server.logs.request_id``), put in every error body (:func:`error_response`) and
      echoed in the ``X-Request-ID`` response header.
    * Unless the settings say ``access_log=False``: one ``server.access`` line per
      request (method, path, status, milliseconds, client).
    * An exception no handler turned into an answer is logged with its traceback and
      answered 500 ``InternalError`` (the message names the request id, never internals).
    * Requests are counted by route template and status, with their latency.
    """

    def __init__(self, app: ASGIApp, get_metrics: Callable[[], Any]) -> None:
        self.app = app
        self.get_metrics = get_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = logs.usable_request_id(_header(scope, b"x-request-id"))
        scope[SCOPE_KEY] = rid
        token = logs.request_id.set(rid)
        status = {"code": 500, "started": False}
        start = time.perf_counter()

        async def recording_send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status["code"] = msg["status"]
                status["started"] = True
                headers = [(k, v) for k, v in msg.get("headers", []) if k != b"x-request-id"]
                msg = {**msg, "headers": [*headers, (b"x-request-id", rid.encode("latin-1"))]}
            await send(msg)

        try:
            await self.app(scope, receive, recording_send)
        except Exception:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if status["started"]:
                raise
            message = f"the server failed on this request (request id {rid}; see the server log)"
            await error_response(500, "InternalError", message)(scope, receive, recording_send)
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            metrics = self.get_metrics()
            if metrics is not None:
                metrics.observe_request("http", path, status["code"], seconds)
            if _access_log_enabled(scope):
                client = scope.get("client")
                query = scope.get("query_string", b"")
                access_log.info(
                    "%s %s%s %d %.1f ms%s",
                    scope.get("method"),
                    scope.get("path"),
                    "?" + query.decode("latin-1") if query else "",
                    status["code"],
                    1000 * seconds,
                    f" from {client[0]}:{client[1]}" if client else "",
                )
            logs.request_id.reset(token)
