"""ASGI middleware of the HTTP app: request body limit and request metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def error_response(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    """The API's error body ``{"error": {"type", "message"}}``."""
    return JSONResponse({"error": {"type": kind, "message": message, **extra}}, status_code=status)


# -- middleware ------------------------------------------------------------------------


class BodyLimitMiddleware:
    """413 for bodies over the limit: from Content-Length, or counted while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

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
        state = {"seen": 0, "over": False, "replaced": False}

        async def counting_receive() -> Message:
            msg = await receive()
            if msg["type"] == "http.request":
                state["seen"] += len(msg.get("body", b""))
                if state["seen"] > limit:
                    state["over"] = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return msg

        async def guarded_send(msg: Message) -> None:
            if state["over"]:  # whatever the app answers, the client gets the 413
                if msg["type"] == "http.response.start" and not state["replaced"]:
                    state["replaced"] = True
                    await error_response(413, "PayloadTooLargeError", message)(scope, receive, send)
                return
            await send(msg)

        await self.app(scope, counting_receive, guarded_send)


class MetricsMiddleware:
    """Counts requests by route template and status; records latency."""

    def __init__(self, app: ASGIApp, get_metrics: Callable[[], Any]) -> None:
        self.app = app
        self.get_metrics = get_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}
        start = time.perf_counter()

        async def recording_send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status["code"] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            metrics = self.get_metrics()
            if metrics is not None:
                seconds = time.perf_counter() - start
                metrics.observe_request("http", path, status["code"], seconds)
