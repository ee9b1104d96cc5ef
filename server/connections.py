"""Slow and stalled HTTP clients: a deadline for a request's headers (uvicorn has none).

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` seconds, but a
client that opens a connection and sends nothing, or half a request line, or headers
one byte a minute, holds it (and a file descriptor) forever. :func:`h11_protocol` makes
uvicorn's h11 protocol close a connection whose request headers are not complete
``header_timeout`` seconds after the connection opened or after its previous response.
A stalled *body* is the app's business: ``server.middleware.BodyLimitMiddleware``
answers 408 when the client pauses longer than ``body_timeout_s``. The number of
connections and requests at once is uvicorn's ``limit_concurrency`` (``max_connections``):
beyond it a request is answered 503.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("server.http")

_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers are late."""

    header_timeout: float = 10.0

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


def h11_protocol(header_timeout: float) -> type[H11Protocol]:
    """The protocol class to give ``uvicorn.Config(http=...)``."""
    return type(
        "HeaderTimeoutH11Protocol",
        (HeaderTimeoutH11Protocol,),
        {"header_timeout": float(header_timeout)},
    )
