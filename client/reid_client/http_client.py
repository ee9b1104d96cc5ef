"""Typed clients of the search server's HTTP API: :class:`ReIDClient` and :class:`AsyncReIDClient`.

    with ReIDClient("http://127.0.0.1:8000", api_key="KEY") as client:
        ids = client.add([jpeg], [{"camera": 0, "timestamp": 12.5}])
        answer = client.search([query_jpeg], k=5, cameras=[1])
        best = answer.results[0].matches[0]          # a reid_client.schemas.MatchOut

Every answer is parsed into the models of :mod:`reid_client.schemas`, the same models
the server builds its answers from. Each endpoint is described once (:class:`Call`);
the blocking and the asyncio client only differ in how they send it. A ``503``
(not ready, overloaded) and a refused connection are retried with exponential backoff
(``retries``, ``backoff``); a timeout is retried only for requests that change nothing.
Failures raise :class:`~reid_client.errors.ServerError` and its subclasses.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
import numpy as np
from pydantic import BaseModel, ValidationError

from reid_client import schemas as s
from reid_client.errors import ProtocolError, ServerError, ServerUnreachableError

T = TypeVar("T")
DEFAULT_TIMEOUT = 120.0
RETRY_STATUSES = frozenset({503})

Metadata = s.EntryMetadataIn | Mapping[str, Any] | None
"""One image's metadata for ``add``: the schema model, a dict with its fields, or None."""


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    options: dict[str, Any] = field(default_factory=dict)
    safe_to_repeat: bool = True  # nothing changes on the server if it is sent twice
    retry: bool = True  # retry a 503 or a refused connection (readiness probes do not)


# -- building requests ---------------------------------------------------------------------


def _image_files(images: Sequence[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Multipart ``images`` fields; the server sniffs the format from the bytes."""
    if isinstance(images, bytes | bytearray):
        raise TypeError("images must be a sequence of encoded images, not one bytes object")
    return [
        ("images", (f"image{i}", bytes(data), "application/octet-stream"))
        for i, data in enumerate(images)
    ]


def search_params(params: s.SearchParams | None, fields: Mapping[str, Any]) -> s.SearchParams:
    """``params``, or a :class:`~reid_client.schemas.SearchParams` built from keywords."""
    if params is not None and fields:
        raise TypeError("pass either params= or search keywords, not both")
    return params if params is not None else s.SearchParams(**fields)


def entry_search_params(
    params: s.EntrySearchParams | None, fields: Mapping[str, Any]
) -> s.EntrySearchParams:
    """``params``, or :class:`~reid_client.schemas.EntrySearchParams` built from keywords."""
    if params is not None and fields:
        raise TypeError("pass either params= or search keywords, not both")
    return params if params is not None else s.EntrySearchParams(**fields)


def page_params(
    offset: int,
    limit: int,
    cameras: Sequence[int] | None,
    time_from: float | None,
    time_to: float | None,
) -> s.GalleryPageParams:
    """The page to list, checked before it is sent."""
    return s.GalleryPageParams(
        offset=offset,
        limit=limit,
        cameras=None if cameras is None else list(cameras),
        time_from=time_from,
        time_to=time_to,
    )


def metadata_models(metadata: Sequence[Metadata] | None, count: int) -> list[s.EntryMetadataIn]:
    """One validated metadata model per image (``None`` -> no metadata)."""
    items = list(metadata) if metadata is not None else [None] * count
    if len(items) != count:
        raise ValueError(f"{len(items)} metadata entries for {count} images (give one per image)")
    return [
        item if isinstance(item, s.EntryMetadataIn) else s.EntryMetadataIn(**dict(item or {}))
        for item in items
    ]


# -- reading answers -----------------------------------------------------------------------


def _error_text(response: httpx.Response) -> tuple[str, str | None]:
    """The API's error message and type if the body is the documented error JSON."""
    try:
        error = s.ErrorResponse.model_validate_json(response.content).error
    except ValidationError:
        return (response.text[:300] or response.reason_phrase), None
    return f"{error.type}: {error.message}", error.type


def _model(cls: type[BaseModel]) -> Callable[[httpx.Response], Any]:
    def parse(response: httpx.Response) -> Any:
        try:
            return cls.model_validate_json(response.content)
        except ValidationError as exc:
            raise ProtocolError(
                f"{response.request.method} {response.request.url}: the answer is not a "
                f"{cls.__name__} ({exc.error_count()} problems; first: {exc.errors()[0]['msg']})",
                status=response.status_code,
            ) from None

    return parse


def _ids(count: int) -> Callable[[httpx.Response], list[int]]:
    def parse(response: httpx.Response) -> list[int]:
        ids = _model(s.AddResponse)(response).ids
        if len(ids) != count:
            raise ProtocolError(f"POST /v1/gallery returned {len(ids)} ids for {count} images")
        return ids

    return parse


def _search(count: int) -> Callable[[httpx.Response], s.SearchResponse]:
    def parse(response: httpx.Response) -> s.SearchResponse:
        answer = _model(s.SearchResponse)(response)
        return checked_search(answer, count)

    return parse


def checked_search(answer: s.SearchResponse, count: int) -> s.SearchResponse:
    """``answer`` with its results ordered by ``query_index``; one per query, else an error."""
    results = sorted(answer.results, key=lambda r: r.query_index)
    if [r.query_index for r in results] != list(range(count)):
        raise ProtocolError(f"the search answered {len(results)} results for {count} queries")
    return answer.model_copy(update={"results": results})


def _embeddings(response: httpx.Response) -> np.ndarray:
    answer = _model(s.EmbedResponse)(response)
    return np.asarray(answer.embeddings, dtype=np.float32).reshape(-1, answer.dim)


def _ok(response: httpx.Response) -> bool:
    return True


def _content(response: httpx.Response) -> bytes:
    return response.content


class Endpoints:
    """The API's endpoints as :class:`Call` values (shared by both clients)."""

    @staticmethod
    def ready() -> Call[bool]:
        return Call("GET", "/readyz", _ok, retry=False)

    @staticmethod
    def model_info() -> Call[s.ModelInfo]:
        return Call("GET", "/v1/model", _model(s.ModelInfo))

    @staticmethod
    def stats() -> Call[s.GalleryStats]:
        return Call("GET", "/v1/gallery/stats", _model(s.GalleryStats))

    @staticmethod
    def embed(images: Sequence[bytes]) -> Call[np.ndarray]:
        return Call("POST", "/v1/embed", _embeddings, {"files": _image_files(images)})

    @staticmethod
    def search(images: Sequence[bytes], params: s.SearchParams) -> Call[s.SearchResponse]:
        options = {"files": _image_files(images), "data": params.form_fields()}
        return Call("POST", "/v1/search", _search(len(images)), options)

    @staticmethod
    def search_by_entry(entry_id: int, params: s.EntrySearchParams) -> Call[s.SearchResponse]:
        options = {"data": params.form_fields()}
        return Call("POST", f"/v1/search/by-entry/{int(entry_id)}", _search(1), options)

    @staticmethod
    def list_gallery(params: s.GalleryPageParams) -> Call[s.GalleryPage]:
        options = {"params": params.query_values()}
        return Call("GET", "/v1/gallery", _model(s.GalleryPage), options)

    @staticmethod
    def add(images: Sequence[bytes], metadata: Sequence[Metadata] | None) -> Call[list[int]]:
        metas = metadata_models(metadata, len(images))
        body = json.dumps([m.model_dump(exclude_defaults=True) for m in metas])
        options = {"files": _image_files(images), "data": {"metadata": body}}
        # With a key on every item a repeated add changes nothing (the server answers
        # the stored ids), so a timeout may be retried too.
        keyed = bool(metas) and all(m.key is not None for m in metas)
        return Call("POST", "/v1/gallery", _ids(len(images)), options, safe_to_repeat=keyed)

    @staticmethod
    def delete(ids: Sequence[int]) -> Call[s.DeleteManyResponse]:
        options = {"json": {"ids": [int(i) for i in ids]}}
        return Call("POST", "/v1/gallery/delete", _model(s.DeleteManyResponse), options)

    @staticmethod
    def entry(entry_id: int) -> Call[s.EntryOut]:
        return Call("GET", f"/v1/gallery/{int(entry_id)}", _model(s.EntryOut))

    @staticmethod
    def thumbnail(entry_id: int) -> Call[bytes]:
        return Call("GET", f"/v1/gallery/{int(entry_id)}/thumbnail", _content)


# -- sending -------------------------------------------------------------------------------


class _Transport:
    """Settings shared by both clients: base URL, key, timeout and the retry policy."""

    def __init__(
        self, base_url: str, api_key: str | None, timeout: float, retries: int, backoff: float
    ) -> None:
        if retries < 0 or backoff < 0:
            raise ValueError("retries and backoff must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds before retry ``attempt`` (0-based): Retry-After when sent, else backoff."""
        after = response.headers.get("retry-after") if response is not None else None
        if after is not None:
            try:
                return min(float(after), 30.0)
            except ValueError:
                pass
        return self.backoff * (2**attempt)

    def settle(
        self,
        call: Call[T],
        attempt: int,
        response: httpx.Response | None,
        error: httpx.TransportError | None,
    ) -> tuple[bool, Any]:
        """``(True, answer)`` when done (or raises), ``(False, delay)`` to retry."""
        if response is not None and not (response.status_code in RETRY_STATUSES and call.retry):
            return True, self.result(call, response)
        retry = (
            call.retry
            and attempt < self.retries
            and (
                response is not None
                or isinstance(error, httpx.ConnectError)  # the request never reached the server
                or (isinstance(error, httpx.TimeoutException) and call.safe_to_repeat)
            )
        )
        if retry:
            return False, self.delay(attempt, response)
        if response is not None:
            return True, self.result(call, response)
        raise self.failure(call, error) from None

    def failure(self, call: Call[Any], error: Exception | None) -> ServerError:
        url = f"{self.base_url}{call.path}"
        if isinstance(error, httpx.TimeoutException):
            return ServerUnreachableError(
                f"{call.method} {url} timed out after {self.timeout:g} s "
                f"({type(error).__name__}); raise the timeout or check the server"
            )
        return ServerUnreachableError(
            f"cannot reach the server at {self.base_url} ({error or type(error).__name__}); "
            "is it running? (python -m server --model EXPORT_DIR --gallery DIR)"
        )

    def result(self, call: Call[T], response: httpx.Response) -> T:
        if response.status_code >= 400:
            text, error_type = _error_text(response)
            raise ServerError(
                f"{call.method} {self.base_url}{call.path} failed with HTTP "
                f"{response.status_code}: {text}",
                status=response.status_code,
                error_type=error_type,
            )
        return call.parse(response)


class ReIDClient:
    """Blocking client of one server, e.g. ``ReIDClient("http://127.0.0.1:8000")``.

    ``client`` may be any ``httpx.Client`` whose base URL is the server (FastAPI's
    ``TestClient`` in tests); by default one is made for ``base_url``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.5,
        client: httpx.Client | None = None,
    ) -> None:
        self._t = _Transport(base_url, api_key, timeout, retries, backoff)
        self.base_url = self._t.base_url
        self._client = client or httpx.Client(base_url=self.base_url, timeout=timeout)

    def __enter__(self) -> ReIDClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def send(self, call: Call[T]) -> T:
        """Send ``call`` with the retry policy and parse its answer."""
        for attempt in itertools.count():
            try:
                response = self._client.request(
                    call.method, call.path, headers=self._t.headers, **call.options
                )
                done, value = self._t.settle(call, attempt, response, None)
            except httpx.TransportError as exc:
                done, value = self._t.settle(call, attempt, None, exc)
            if done:
                return value
            time.sleep(value)
        raise AssertionError("unreachable")

    def is_ready(self) -> bool:
        """True when ``GET /readyz`` answers 200 (False for 503; raises if unreachable)."""
        try:
            return self.send(Endpoints.ready())
        except ServerUnreachableError:
            raise
        except ServerError:
            return False

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.5) -> None:
        """Poll ``/readyz`` until 200; :class:`ServerUnreachableError` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            last = _readiness(self.is_ready)
            if last is None:
                return
            if time.monotonic() >= deadline:
                raise ServerUnreachableError(
                    f"the server at {self.base_url} was not ready within {timeout:g} s: {last}"
                )
            time.sleep(interval)

    def model_info(self) -> s.ModelInfo:
        """``GET /v1/model``: the served model, runtime, batching, limits and auth."""
        return self.send(Endpoints.model_info())

    def stats(self) -> s.GalleryStats:
        """``GET /v1/gallery/stats``."""
        return self.send(Endpoints.stats())

    def embed(self, images: Sequence[bytes]) -> np.ndarray:
        """``POST /v1/embed``: ``float32[N, D]`` embeddings of encoded images."""
        return self.send(Endpoints.embed(images))

    def search(
        self, images: Sequence[bytes], params: s.SearchParams | None = None, **fields: Any
    ) -> s.SearchResponse:
        """``POST /v1/search``; options as ``params`` or as its fields (``k=5, cameras=[1]``)."""
        return self.send(Endpoints.search(images, search_params(params, fields)))

    def search_by_entry(
        self, entry_id: int, params: s.EntrySearchParams | None = None, **fields: Any
    ) -> s.SearchResponse:
        """``POST /v1/search/by-entry/{id}``: "find this person elsewhere" with a stored
        entry (left out of its matches; its camera is the query camera)."""
        return self.send(Endpoints.search_by_entry(entry_id, entry_search_params(params, fields)))

    def list_gallery(
        self,
        offset: int = 0,
        limit: int = 50,
        cameras: Sequence[int] | None = None,
        time_from: float | None = None,
        time_to: float | None = None,
    ) -> s.GalleryPage:
        """``GET /v1/gallery``: one page of entries in id order, and how many match."""
        params = page_params(offset, limit, cameras, time_from, time_to)
        return self.send(Endpoints.list_gallery(params))

    def add(self, images: Sequence[bytes], metadata: Sequence[Metadata] | None = None) -> list[int]:
        """``POST /v1/gallery``: add images with one metadata each; returns their ids.

        An item whose ``key`` is already stored is not added again (its stored id is
        returned); when every item has a key, timeouts are retried as well."""
        return self.send(Endpoints.add(images, metadata))

    def delete(self, ids: Sequence[int]) -> s.DeleteManyResponse:
        """``POST /v1/gallery/delete``: the ids deleted and the ids that were missing."""
        return self.send(Endpoints.delete(ids))

    def get_entry(self, entry_id: int) -> s.EntryOut:
        """``GET /v1/gallery/{id}``: one entry's metadata."""
        return self.send(Endpoints.entry(entry_id))

    def thumbnail(self, entry_id: int) -> bytes:
        """``GET /v1/gallery/{id}/thumbnail``: JPEG bytes."""
        return self.send(Endpoints.thumbnail(entry_id))


class AsyncReIDClient:
    """:class:`ReIDClient` for asyncio code: the same methods as coroutines.

    ``client`` may be any ``httpx.AsyncClient`` (e.g. with ``httpx.ASGITransport``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.5,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._t = _Transport(base_url, api_key, timeout, retries, backoff)
        self.base_url = self._t.base_url
        self._client = client or httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def __aenter__(self) -> AsyncReIDClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def send(self, call: Call[T]) -> T:
        """Send ``call`` with the retry policy and parse its answer."""
        for attempt in itertools.count():
            try:
                response = await self._client.request(
                    call.method, call.path, headers=self._t.headers, **call.options
                )
                done, value = self._t.settle(call, attempt, response, None)
            except httpx.TransportError as exc:
                done, value = self._t.settle(call, attempt, None, exc)
            if done:
                return value
            await asyncio.sleep(value)
        raise AssertionError("unreachable")

    async def is_ready(self) -> bool:
        """True when ``GET /readyz`` answers 200 (False for 503; raises if unreachable)."""
        try:
            return await self.send(Endpoints.ready())
        except ServerUnreachableError:
            raise
        except ServerError:
            return False

    async def model_info(self) -> s.ModelInfo:
        """``GET /v1/model``."""
        return await self.send(Endpoints.model_info())

    async def stats(self) -> s.GalleryStats:
        """``GET /v1/gallery/stats``."""
        return await self.send(Endpoints.stats())

    async def embed(self, images: Sequence[bytes]) -> np.ndarray:
        """``POST /v1/embed``: ``float32[N, D]``."""
        return await self.send(Endpoints.embed(images))

    async def search(
        self, images: Sequence[bytes], params: s.SearchParams | None = None, **fields: Any
    ) -> s.SearchResponse:
        """``POST /v1/search``."""
        return await self.send(Endpoints.search(images, search_params(params, fields)))

    async def search_by_entry(
        self, entry_id: int, params: s.EntrySearchParams | None = None, **fields: Any
    ) -> s.SearchResponse:
        """``POST /v1/search/by-entry/{id}``."""
        call = Endpoints.search_by_entry(entry_id, entry_search_params(params, fields))
        return await self.send(call)

    async def list_gallery(
        self,
        offset: int = 0,
        limit: int = 50,
        cameras: Sequence[int] | None = None,
        time_from: float | None = None,
        time_to: float | None = None,
    ) -> s.GalleryPage:
        """``GET /v1/gallery``."""
        params = page_params(offset, limit, cameras, time_from, time_to)
        return await self.send(Endpoints.list_gallery(params))

    async def add(
        self, images: Sequence[bytes], metadata: Sequence[Metadata] | None = None
    ) -> list[int]:
        """``POST /v1/gallery``."""
        return await self.send(Endpoints.add(images, metadata))

    async def delete(self, ids: Sequence[int]) -> s.DeleteManyResponse:
        """``POST /v1/gallery/delete``."""
        return await self.send(Endpoints.delete(ids))

    async def get_entry(self, entry_id: int) -> s.EntryOut:
        """``GET /v1/gallery/{id}``."""
        return await self.send(Endpoints.entry(entry_id))

    async def thumbnail(self, entry_id: int) -> bytes:
        """``GET /v1/gallery/{id}/thumbnail``."""
        return await self.send(Endpoints.thumbnail(entry_id))


def _readiness(is_ready: Callable[[], bool]) -> str | None:
    """None when ready, else why not (for the wait loop's final message)."""
    try:
        return None if is_ready() else "it answered 503 (not ready)"
    except ServerUnreachableError as exc:
        return str(exc)
