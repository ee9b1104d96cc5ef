"""Errors of the clients: one family for HTTP and gRPC, each naming what failed."""

from __future__ import annotations


class ServerError(RuntimeError):
    """The server refused a request; ``status`` is the HTTP status (gRPC: its equivalent).

    ``error_type`` is the server's own error class (``BadInputError``, ...), from the
    documented error body ``{"error": {"type", "message"}}``; ``grpc_code`` is the gRPC
    status name for calls made over gRPC.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        grpc_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.grpc_code = grpc_code


class ServerUnreachableError(ServerError):
    """Nothing answers at the address (refused, DNS, timeout), or it never became ready."""


class ProtocolError(ServerError):
    """The server answered something that is not the documented API (wrong version?)."""
