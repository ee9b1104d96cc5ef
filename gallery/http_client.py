"""A small synchronous client for the search server's HTTP API (``server/http.py``).

Only what the gallery tools need: readiness, model info, gallery add/delete/stats,
embed and search. Every failure becomes a :class:`ServerError` whose message names
the URL and, for API errors, the server's own ``{"error": {"type", "message"}}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_TIMEOUT = 120.0


class ServerError(RuntimeError):
    """The server refused a request or answered something unexpected."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerUnreachableError(ServerError):
    """Nothing answers at the server URL (refused, DNS, timeout) or it never became ready."""


@dataclass(frozen=True)
class Match:
    """One gallery entry of a search result; higher ``score`` (cosine) is closer."""

    id: int | str  # as the server sent it (the HTTP API uses ints)
    score: float
    camera: int | None = None


def _bool_field(value: bool) -> str:
    return "true" if value else "false"


def _image_files(images: Sequence[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Multipart ``images`` fields; the server sniffs the format from the bytes."""
    return [
        ("images", (f"image{i}", data, "application/octet-stream")) for i, data in enumerate(images)
    ]


def _error_text(response: httpx.Response) -> str:
    """The API's error message if the body is the documented error JSON, else the body."""
    try:
        error = response.json()["error"]
        return f"{error.get('type', 'error')}: {error.get('message', '')}"
    except (ValueError, KeyError, TypeError):
        return response.text[:300] or response.reason_phrase


class ReIDHttpClient:
    """Talks to one server, e.g. ``ReIDHttpClient("http://127.0.0.1:8000")``.

    ``client`` may be any ``httpx.Client`` (for example FastAPI's ``TestClient``) whose
    base URL is the server; by default one is created for ``base_url``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"X-API-Key": api_key} if api_key else {}
        self._client = client or httpx.Client(base_url=self.base_url, timeout=timeout)
        self._headers = headers
        self._timeout = timeout

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._client.close()

    def __enter__(self) -> ReIDHttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"{self.base_url}{path}"
        try:
            response = self._client.request(method, path, headers=self._headers, **kwargs)
        except httpx.TimeoutException as exc:
            raise ServerUnreachableError(
                f"{method} {url} timed out after {self._timeout:g} s ({type(exc).__name__}); "
                "raise --timeout or check the server"
            ) from None
        except httpx.TransportError as exc:
            raise ServerUnreachableError(
                f"cannot reach the server at {self.base_url} ({exc or type(exc).__name__}); "
                "is it running? (python -m server --model EXPORT_DIR --gallery DIR)"
            ) from None
        if response.status_code >= 400:
            raise ServerError(
                f"{method} {url} failed with HTTP {response.status_code}: {_error_text(response)}",
                status=response.status_code,
            )
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ServerError(
                f"{method} {self.base_url}{path}: the answer is not JSON ({response.text[:200]!r})"
            ) from None

    # ------------------------------------------------------------------ endpoints

    def is_ready(self) -> bool:
        """True when ``GET /readyz`` answers 200 (False for 503; raises if unreachable)."""
        try:
            self._request("GET", "/readyz")
        except ServerUnreachableError:
            raise
        except ServerError:
            return False
        return True

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        """Poll ``/readyz`` until 200; :class:`ServerUnreachableError` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        last = "it answered 503 (not ready)"
        while True:
            try:
                if self.is_ready():
                    return
            except ServerUnreachableError as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                raise ServerUnreachableError(
                    f"the server at {self.base_url} was not ready within {timeout:g} s: {last}"
                )
            time.sleep(interval)

    def model_info(self) -> dict[str, Any]:
        """``GET /v1/model``: the served export's manifest summary."""
        return self._json("GET", "/v1/model")

    def stats(self) -> dict[str, Any]:
        """``GET /v1/gallery/stats``: ``{"size", "dim", "cameras", ...}``."""
        return self._json("GET", "/v1/gallery/stats")

    def add_gallery(
        self, images: Sequence[bytes], metadata: Sequence[Mapping[str, Any]]
    ) -> list[int | str]:
        """``POST /v1/gallery``: add images with per-image metadata; returns the new ids."""
        if len(images) != len(metadata):
            raise ValueError(f"{len(images)} images but {len(metadata)} metadata entries")
        body = self._json(
            "POST",
            "/v1/gallery",
            files=_image_files(images),
            data={"metadata": json.dumps(list(metadata))},
        )
        ids = list(body.get("ids", []))
        if len(ids) != len(images):
            raise ServerError(f"POST /v1/gallery returned {len(ids)} ids for {len(images)} images")
        return ids

    def delete_gallery(self, ids: Sequence[int | str]) -> list[int | str]:
        """``POST /v1/gallery/delete``; returns the ids actually deleted."""
        body = self._json("POST", "/v1/gallery/delete", json={"ids": list(ids)})
        return list(body.get("deleted", []))

    def embed(self, images: Sequence[bytes]) -> list[list[float]]:
        """``POST /v1/embed``: one embedding per image."""
        return self._json("POST", "/v1/embed", files=_image_files(images))["embeddings"]

    def search(
        self,
        images: Sequence[bytes],
        *,
        k: int = 10,
        full_ranking: bool = False,
        **filters: object,
    ) -> list[list[Match]]:
        """``POST /v1/search``: one ranked match list per query image, best first.

        ``filters`` are the API's other form fields (``query_cameras`` as a list of
        ints, ``exclude_same_camera``, ``min_score``, ...); ``None`` values are left out.
        """
        data: dict[str, str] = {"k": str(k), "full_ranking": _bool_field(full_ranking)}
        for name, value in filters.items():
            if value is None:
                continue
            if isinstance(value, bool):
                data[name] = _bool_field(value)
            elif isinstance(value, (list, tuple)):
                data[name] = ",".join(str(v) for v in value)
            else:
                data[name] = str(value)
        body = self._json("POST", "/v1/search", files=_image_files(images), data=data)
        return parse_search_results(body, len(images))


def parse_search_results(body: Mapping[str, Any], num_queries: int) -> list[list[Match]]:
    """The ``results`` of a search answer as match lists ordered by ``query_index``."""
    try:
        results = sorted(body["results"], key=lambda r: int(r.get("query_index", 0)))
        ranked = [
            [Match(m["id"], float(m["score"]), m.get("camera")) for m in result["matches"]]
            for result in results
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ServerError(f"malformed search answer ({type(exc).__name__}: {exc})") from None
    if len(ranked) != num_queries:
        raise ServerError(f"search answered {len(ranked)} results for {num_queries} queries")
    return ranked
