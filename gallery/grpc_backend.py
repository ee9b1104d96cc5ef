"""Send the evaluation's queries over gRPC while gallery adds and deletes stay on HTTP."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gallery.http_client import Match, ReIDHttpClient, ServerError


class GrpcUnavailableError(RuntimeError):
    """The gRPC client module (``server.grpc_api.client``) cannot be imported."""


def _field(item: Any, name: str) -> Any:
    return item[name] if isinstance(item, Mapping) else getattr(item, name)


def _matches(result: Any) -> list[Match]:
    items = _field(result, "matches") if not isinstance(result, (list, tuple)) else result
    return [Match(_field(m, "id"), float(_field(m, "score"))) for m in items]


def normalise_results(answer: Any, num_queries: int) -> list[list[Match]]:
    """Match lists from a gRPC search answer (``{"results": [...]}``, an object, or a list)."""
    if isinstance(answer, Mapping) or hasattr(answer, "results"):
        answer = _field(answer, "results")
    try:
        ranked = [_matches(result) for result in answer]
    except (KeyError, AttributeError, TypeError, ValueError) as exc:
        raise ServerError(f"malformed gRPC search answer ({type(exc).__name__}: {exc})") from None
    if len(ranked) != num_queries:
        raise ServerError(f"gRPC search answered {len(ranked)} results for {num_queries} queries")
    return ranked


class GrpcQueryBackend:
    """A :class:`gallery.evaluate.SearchBackend`: search over gRPC, the rest over HTTP."""

    def __init__(self, http: ReIDHttpClient, target: str, api_key: str | None = None) -> None:
        try:
            from server.grpc_api.client import ReIDGrpcClient
        except ImportError as exc:
            raise GrpcUnavailableError(
                f"gRPC client not available (server.grpc_api.client: {exc}); "
                "leave out --grpc to send the queries over HTTP"
            ) from None
        self.http = http
        self.grpc = ReIDGrpcClient(target, api_key=api_key)

    def add_gallery(self, images: Sequence[bytes], metadata: Sequence[dict]) -> list[int | str]:
        """Gallery adds go over HTTP."""
        return self.http.add_gallery(images, metadata)

    def delete_gallery(self, ids: Sequence[int | str]) -> list[int | str]:
        """Deletes go over HTTP."""
        return self.http.delete_gallery(ids)

    def search(
        self, images: Sequence[bytes], *, k: int = 10, full_ranking: bool = False
    ) -> list[list[Match]]:
        """One gRPC search call for the batch; ``grpc.RpcError`` becomes ``ServerError``."""
        import grpc

        try:
            answer = self.grpc.search(list(images), k=k, full_ranking=full_ranking)
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            details = exc.details() if hasattr(exc, "details") else str(exc)
            raise ServerError(f"gRPC search failed: {code}: {details}") from None
        return normalise_results(answer, len(images))

    def close(self) -> None:
        """Close the gRPC channel when the client has a ``close``."""
        close = getattr(self.grpc, "close", None)
        if close is not None:
            close()
