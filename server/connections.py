"""Slow and stalled HTTP clients: a deadline for a request's headers (uvicorn has none).

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` seconds, but a
client that opens a connection and sends nothing, or half a request line, or headers
one byte a minute, holds it (and a file descriptor) forever. :func:`http_protocol` makes
uvicorn's HTTP protocol close a connection whose request headers are not complete
``header_timeout`` seconds after the connection opened or after its previous response.

The protocol is uvicorn's httptools one (the llhttp parser, in C) when httptools is
installed, else its h11 one (pure Python: ~0.2 ms more CPU per request, measured with
wrk, see docs/BENCHMARKS.md).
A stalled *body* is the app's business: ``server.middleware.BodyLimitMiddleware``
answers 408 when the client pauses longer than ``body_timeout_s``. The number of
connections and requests at once is uvicorn's ``limit_concurrency`` (``max_connections``):
beyond it a request is answered 503.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("server.http")

_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


class HeaderTimeout(asyncio.Protocol):
    """Mixed into a uvicorn HTTP protocol (h11 or httptools: both have ``cycle``,
    ``loop``, ``transport`` and ``on_response_complete``): closes connections whose
    request headers are late."""

    header_timeout: float = 10.0
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._received = False
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def data_received(self, data: bytes) -> None:
        self._received = True
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete:
            self._cancel_header_timer()  # a request is being served: headers are in

    def on_response_complete(self) -> None:
        self._received = False
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._arm_header_timer()  # the next request's headers have a deadline too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is in progress
        if self._received:  # part of a request came: say why it is dropped
            body = (
                b'{"error":{"type":"RequestTimeoutError","message":"the request headers '
                b'did not arrive in time (header_timeout_s)"}}'
            )
            self.transport.write(_TIMEOUT_RESPONSE % (len(body), body))
        self.transport.close()


def base_protocol() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol when httptools is installed, else its h11 one."""
    if importlib.util.find_spec("httptools") is None:
        return H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    return HttpToolsProtocol


def http_protocol(
    header_timeout: float, base: type[asyncio.Protocol] | None = None
) -> type[asyncio.Protocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``: ``base`` (default
    :func:`base_protocol`) with the header deadline."""
    base = base or base_protocol()
    return type(
        f"HeaderTimeout{base.__name__}",
        (HeaderTimeout, base),
        {"header_timeout": float(header_timeout)},
    )
