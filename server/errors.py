"""Errors the search service raises; both front ends map them the same way.

Each class carries its HTTP status and its gRPC status code name, so the FastAPI
exception handler and the gRPC servicer translate one error identically (a client
sees the same message over either protocol).
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: a request the service refuses, with a message for the client."""

    http_status: int = 500
    grpc_code: str = "INTERNAL"  # name of a grpc.StatusCode member

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInputError(ServiceError):
    """Undecodable image, bad metadata, k out of range, malformed filters."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class PayloadTooLargeError(ServiceError):
    """Too many images, too many bytes, or an image with too many pixels."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class UnsupportedMediaError(ServiceError):
    """A body whose content type is not an image or multipart form, or an image in a
    pixel format that is not embedded (floating-point samples)."""

    http_status = 415
    grpc_code = "INVALID_ARGUMENT"


class NotFoundError(ServiceError):
    """An unknown gallery id."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class UnauthorizedError(ServiceError):
    """No API key where one is required."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class ForbiddenError(ServiceError):
    """A wrong API key."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"


class NotReadyError(ServiceError):
    """The model or gallery is not loaded yet, or the service is shutting down."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class StorageFullError(ServiceError):
    """The gallery's disk is full: a write was refused and nothing of it was kept."""

    http_status = 507
    grpc_code = "RESOURCE_EXHAUSTED"


class StorageUnavailableError(ServiceError):
    """The gallery's storage refused a write (read-only, I/O error); reads still work."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
