"""The search service both front ends (HTTP and gRPC) call.

It owns the request limits, image decoding and preprocessing (from the manifest
only), the micro-batcher in front of the runtime, and the gallery. Blocking work
(decoding, inference, gallery I/O) runs in threads, never on the event loop.
Refusals are :mod:`server.errors` exceptions, so both protocols answer alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from reid.gallery import (
    Entry,
    EntryMetadata,
    EntryPage,
    GalleryBackend,
    GalleryClosedError,
    GalleryError,
    GalleryStorageError,
    GalleryUnavailableError,
    Match,
    SearchFilters,
)
from reid.jsonable import to_jsonable
from reid.preprocess import (
    ImageTooLargeError,
    PreprocessError,
    UnsupportedImageError,
    decode_image_bytes,
    image_size,
    preprocess_batch,
)
from reid.runtimes import Runtime
from reid_client.schemas import GalleryStats, ModelInfo, ModelSummary, RuntimeInfo
from server.batching import MicroBatcher
from server.coalesce import Outcome, TurnCoalescer, each
from server.errors import (
    BadInputError,
    ForbiddenError,
    NotFoundError,
    NotReadyError,
    PayloadTooLargeError,
    StorageFullError,
    StorageUnavailableError,
    UnauthorizedError,
    UnsupportedMediaError,
)
from server.metrics import Metrics
from server.settings import ServerSettings
from server.thumbnails import make_thumbnail

log = logging.getLogger("server.service")
_NO_FILTERS = SearchFilters()
GALLERY_ERRORS = (GalleryError, GalleryClosedError, GalleryStorageError, GalleryUnavailableError)
T = TypeVar("T")
SearchJob = tuple[np.ndarray, int | None, SearchFilters | None]
"""One gallery search: ``float32[Q, D]`` queries, ``k``, filters (None: none)."""
DECODE_JOB_REQUESTS = 16
"""Requests decoded by one job of the decode pool (the pool runs ``decode_workers``)."""
SEARCH_JOB_QUERIES = 64
"""Searches merged into one gallery call at most."""


@dataclass(frozen=True)
class SearchOptions:
    """How to search: top-k (``None`` = full ranking) and filters.

    The front ends build it from a validated request (``server.wire.search_options``);
    the service checks ``k`` against ``max_k`` and ``query_cameras`` against the number
    of queries. ``exclude_same_camera`` excludes nothing for a query without a camera.
    """

    k: int | None = 10
    filters: SearchFilters = field(default_factory=SearchFilters)
    query_cameras: Sequence[int | None] | None = None  # one per query image
    exclude_same_camera: bool = False  # add each query's camera to exclude_cameras


class SearchService:
    """Embeds images, searches and edits the gallery; shared by HTTP and gRPC."""

    def __init__(
        self,
        runtime: Runtime,
        gallery: GalleryBackend,
        settings: ServerSettings,
        *,
        batcher: MicroBatcher | None = None,
    ) -> None:
        self.runtime = runtime
        self.gallery = gallery
        self.settings = settings
        self.metrics = batcher.metrics if batcher is not None else Metrics()
        self.batcher = batcher or MicroBatcher(
            runtime,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            enabled=settings.batching,
            max_queue=settings.max_queue,
            metrics=self.metrics,
            workers=settings.workers,
        )
        self._started = False
        self._closed = False
        self._decode_pool = ThreadPoolExecutor(
            max_workers=settings.decode_workers, thread_name_prefix="decode"
        )
        # The requests of one event-loop turn share a thread hop (server.coalesce): their
        # decoding is one job of the decode pool, their gallery searches one call.
        self._decoder: TurnCoalescer[Sequence[bytes], np.ndarray] = TurnCoalescer(
            self._decode_pool, each(self._prepare), max_items=DECODE_JOB_REQUESTS
        )
        self._searcher: TurnCoalescer[SearchJob, list[list[Match]]] = TurnCoalescer(
            None, self._search_many, max_items=SEARCH_JOB_QUERIES
        )

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the batcher (idempotent); the service is ready afterwards."""
        await self.batcher.start()
        self._started = True
        self._update_size_gauge()

    async def stop(self) -> None:
        """Finish queued embeddings and stop accepting work (idempotent)."""
        self._started = False
        await self.batcher.stop()

    async def close(self) -> None:
        """Stop, then close the gallery and the runtime."""
        await self.stop()
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self.gallery.close)
            self.runtime.close()
            self._decode_pool.shutdown(wait=False, cancel_futures=True)

    def is_ready(self) -> bool:
        """Started, not closing, and the gallery's backend reachable (a Milvus gallery)."""
        return (
            self._started
            and not self._closed
            and self.batcher.running
            and self.gallery.is_available()
        )

    def _check_ready(self) -> None:
        if not self.is_ready():
            if self._started and not self._closed and not self.gallery.is_available():
                raise NotReadyError(
                    f"the gallery {self.gallery_location()} is unreachable; retry later"
                )
            raise NotReadyError("the service is not ready (starting up or shutting down)")

    def gallery_location(self) -> str:
        """The gallery's directory or ``milvus://`` URL, as configured."""
        return str(self.settings.gallery)

    # -- auth ------------------------------------------------------------------------

    def authorize(self, key: str | None, *, write: bool) -> None:
        """Raise ``UnauthorizedError`` (no key) / ``ForbiddenError`` (wrong key) if needed.

        Writes need ``api_key`` when one is set. Reads need ``read_key`` or
        ``api_key`` when ``read_key`` is set; otherwise reads are open. Writes are never
        less protected than reads: with only ``read_key`` set they need it too, unless
        ``allow_anonymous_writes`` (``python -m server`` refuses to start that way without it).
        """
        settings = self.settings
        write_key, read_key = settings.api_key, settings.read_key
        if write:
            needed = settings.writes_need_key
            accepted = [write_key] if write_key is not None else [read_key]
        else:
            needed = settings.reads_need_key
            accepted = [read_key, write_key]
        secrets = [s.get_secret_value() for s in accepted if s is not None]
        if not needed:
            return
        action = "writing to the gallery" if write else "this operation"
        if not key:
            raise UnauthorizedError(
                f"an API key is required for {action}: send 'X-API-Key: KEY' "
                "or 'Authorization: Bearer KEY'"
            )
        given = key.encode()
        # Compare against every accepted key (no early exit) in constant time.
        ok = False
        for secret in secrets:
            ok |= hmac.compare_digest(given, secret.encode())
        if not ok:
            raise ForbiddenError(f"the API key is not valid for {action}")

    # -- request checks ------------------------------------------------------------
    # Each public operation checks its request once, against the service's limits, then
    # calls the unchecked helpers below. Field syntax and consistency were checked where
    # the request entered the server (server.wire); the gallery checks its own inputs.

    def _check_count(self, count: int, noun: str) -> None:
        """1..max_images images (or query embeddings) per request."""
        if count == 0:
            raise BadInputError(f"no {noun} in the request (send at least one)")
        if count > self.settings.max_images:
            raise PayloadTooLargeError(
                f"{count} {noun} in one request; the limit is {self.settings.max_images}"
            )

    def _check_search(self, options: SearchOptions, count: int) -> int | None:
        """The ``k`` to ask the gallery for (``max_full_ranking`` for a full ranking)."""
        k = options.k
        if k is not None and not 1 <= k <= self.settings.max_k:
            raise BadInputError(
                f"k must be between 1 and {self.settings.max_k} (got {k}); "
                "ask for a full ranking instead of a huge k"
            )
        if options.query_cameras is not None and len(options.query_cameras) != count:
            raise BadInputError(
                f"query_cameras has {len(options.query_cameras)} values for {count} queries "
                "(give one camera per query image)"
            )
        return self.settings.max_full_ranking if k is None else k

    def _check_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Query embeddings from outside: ``float32[Q, D]``, finite, 1..max_images rows."""
        try:
            queries = np.asarray(embeddings, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"embeddings are not numbers: {exc}") from None
        dim = self.runtime.embedding_dim
        if queries.ndim != 2 or queries.shape[1] != dim or len(queries) == 0:
            raise BadInputError(f"embeddings must be float32[Q, {dim}], got {list(queries.shape)}")
        self._check_count(len(queries), "queries")
        if not np.isfinite(queries).all():
            raise BadInputError("embeddings contain NaN or infinite values")
        return queries

    # -- decoding --------------------------------------------------------------------
    # Memory: at most ``decode_workers`` requests decode at once (a dedicated pool, so
    # waiting requests hold no thread), one image at a time each; every image is shrunk
    # to about the model input size as it is decoded (JPEGs by the JPEG decoder itself),
    # so a request keeps only small images, whatever the size of what it sent.

    def _decode_size(self) -> tuple[int, int]:
        """``(height, width)`` an image is kept at (at least): model input and thumbnail."""
        config = self.runtime.manifest.preprocess
        return max(config.height, self.settings.thumbnail_height), config.width

    def _check_pixels(self, images: Sequence[bytes]) -> None:
        """Every image's pixels (from its header) against ``max_pixels``, and their sum
        against ``max_request_pixels``, before any image is decoded."""
        total = 0
        limit = self.settings.max_pixels
        for index, data in enumerate(images):
            if not data:
                raise BadInputError(f"image {index}: empty file (0 bytes)")
            try:
                width, height = image_size(bytes(data))
            except ImageTooLargeError as exc:
                raise PayloadTooLargeError(
                    f"image {index}: {exc}; the limit is {limit} (max_pixels)"
                ) from None
            except PreprocessError as exc:
                raise BadInputError(f"image {index}: {exc}") from None
            if width * height > limit:
                raise PayloadTooLargeError(
                    f"image {index}: image is {width}x{height} = {width * height} pixels; "
                    f"the limit is {limit} (max_pixels)"
                )
            total += width * height
        budget = self.settings.max_request_pixels
        if total > budget:
            raise PayloadTooLargeError(
                f"the {len(images)} images have {total} pixels together; the limit for one "
                f"request is {budget} (max_request_pixels): send fewer or smaller images"
            )

    def _decode_one(self, index: int, data: bytes) -> np.ndarray:
        label = f"image {index}"
        if not data:
            raise BadInputError(f"{label}: empty file (0 bytes)")
        try:  # the pixel limit is checked from the header, before decoding
            return decode_image_bytes(
                data, max_pixels=self.settings.max_pixels, min_size=self._decode_size()
            )
        except ImageTooLargeError as exc:
            raise PayloadTooLargeError(f"{label}: {exc}") from None
        except UnsupportedImageError as exc:
            raise UnsupportedMediaError(f"{label}: {exc}") from None
        except PreprocessError as exc:
            raise BadInputError(f"{label}: {exc}") from None

    def _decode(self, images: Sequence[bytes]) -> list[np.ndarray]:
        self._check_pixels(images)
        return [self._decode_one(i, bytes(data)) for i, data in enumerate(images)]

    def _prepare(self, images: Sequence[bytes]) -> np.ndarray:
        """Decode + preprocess with the manifest's settings (runs in the decode pool)."""
        return preprocess_batch(self._decode(images), self.runtime.manifest.preprocess)

    def _prepare_with_thumbnails(
        self, images: Sequence[bytes]
    ) -> tuple[np.ndarray, list[bytes | None]]:
        return self._batch_and_thumbnails(self._decode(images), self.runtime.manifest.preprocess)

    async def _in_decode_pool(self, method: Callable[..., T], *args: object) -> T:
        """Run decoding work in the decode pool (``decode_workers`` threads)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._decode_pool, functools.partial(method, *args))

    async def _call(self, method: Callable[..., T], *args: object) -> T:
        """Run a blocking gallery method in a thread, mapping its errors."""
        try:
            return await asyncio.to_thread(method, *args)
        except GALLERY_ERRORS as exc:
            raise _gallery_error(exc) from None

    def _search_many(self, jobs: Sequence[SearchJob]) -> list[Outcome[list[list[Match]]]]:
        """Gallery searches of several requests (in a thread): one gallery call for the
        queries of every request with the same ``k`` and filters. A call that fails is
        retried request by request, so an error reaches only the request that caused it."""
        out: list[Outcome[list[list[Match]]]] = [[] for _ in jobs]
        groups: dict[tuple[int | None, SearchFilters | None], list[int]] = {}
        for index, (_, k, filters) in enumerate(jobs):
            groups.setdefault((k, filters), []).append(index)
        for (k, filters), members in groups.items():
            if len(members) > 1:
                queries = np.concatenate([jobs[i][0] for i in members])
                try:
                    found = self.gallery.search(queries, k, filters)
                except Exception:
                    pass  # one by one below
                else:
                    offset = 0
                    for i in members:
                        count = len(jobs[i][0])
                        out[i] = found[offset : offset + count]
                        offset += count
                    continue
            for i in members:
                try:
                    out[i] = self.gallery.search(jobs[i][0], k, filters)
                except Exception as exc:
                    out[i] = exc
        return out

    # -- operations ------------------------------------------------------------------

    async def embed(self, images: Sequence[bytes]) -> np.ndarray:
        """Encoded images -> ``float32[N, D]`` embeddings (micro-batched)."""
        self._check_ready()
        self._check_count(len(images), "images")
        return await self._embed(images)

    async def embed_tensor(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed ``float32[N, 3, H, W]`` (the model's input) -> embeddings, batched
        with every other request (the Open Inference Protocol's ``infer``)."""
        self._check_ready()
        height, width = (
            self.runtime.manifest.preprocess.height,
            self.runtime.manifest.preprocess.width,
        )
        if batch.ndim != 4 or tuple(batch.shape[1:]) != (3, height, width):
            raise BadInputError(
                f"the input must be FP32 [N, 3, {height}, {width}], got {list(batch.shape)}"
            )
        self._check_count(len(batch), "images")
        if not np.isfinite(batch).all():
            raise BadInputError("the input holds NaN or infinite values")
        return await self.batcher.embed(np.ascontiguousarray(batch, dtype=np.float32))

    async def _embed(self, images: Sequence[bytes]) -> np.ndarray:
        batch = await self._decoder.run(images)
        return await self.batcher.embed(batch)

    async def search(self, images: Sequence[bytes], options: SearchOptions) -> list[list[Match]]:
        """Embed the query images and search the gallery (one result list per image)."""
        self._check_ready()
        self._check_count(len(images), "images")
        k = self._check_search(options, len(images))
        return await self._search(await self._embed(images), options, k)

    async def search_embeddings(
        self, embeddings: np.ndarray, options: SearchOptions
    ) -> list[list[Match]]:
        """Search with ready embeddings ``float32[Q, D]``."""
        self._check_ready()
        queries = self._check_embeddings(embeddings)
        k = self._check_search(options, len(queries))
        return await self._search(queries, options, k)

    async def _search(
        self, queries: np.ndarray, options: SearchOptions, k: int | None
    ) -> list[list[Match]]:
        results: list[list[Match]] = [[] for _ in range(len(queries))]
        for filters, rows in self._filter_groups(options, len(queries)):
            chosen = None if filters == _NO_FILTERS else filters  # the gallery's fast path
            try:
                found = await self._searcher.run((queries[rows], k, chosen))
            except GALLERY_ERRORS as exc:
                raise _gallery_error(exc) from None
            for row, matches in zip(rows, found, strict=True):
                results[row] = list(matches)
        return results

    async def search_by_entry(
        self, entry_id: int, options: SearchOptions
    ) -> tuple[Entry, list[Match]]:
        """Search with a stored entry's embedding ("find this person elsewhere").

        The entry's camera is the query camera (``options.query_cameras`` is replaced, so
        ``exclude_same_camera`` drops the entry's camera); the entry itself is left out of
        its matches. ``NotFoundError`` for an unknown id. Returns the entry and its matches.
        """
        self._check_ready()
        k = self._check_search(replace(options, query_cameras=None), 1)
        entry = await self.get_entry(entry_id)
        options = replace(options, query_cameras=[entry.metadata.camera])
        try:
            query = await asyncio.to_thread(self.gallery.embeddings, [entry.id])
        except GalleryClosedError:
            raise NotReadyError("the gallery is closed (the server is shutting down)") from None
        except GalleryUnavailableError as exc:
            raise NotReadyError(f"{exc}; retry later") from None
        except GalleryError:  # deleted since it was read
            raise NotFoundError(f"no gallery entry with id {entry_id}") from None
        # One more than asked, since the entry itself is usually its own best match.
        (matches,) = await self._search(query, options, None if k is None else k + 1)
        kept = [match for match in matches if match.id != entry.id]
        return entry, kept if k is None else kept[:k]

    @staticmethod
    def _filter_groups(options: SearchOptions, count: int) -> list[tuple[SearchFilters, list[int]]]:
        """Queries grouped by their effective filters (same-camera exclusion differs)."""
        base = options.filters
        if not options.exclude_same_camera or options.query_cameras is None:
            return [(base, list(range(count)))]
        by_camera: dict[int | None, list[int]] = {}
        for row, camera in enumerate(options.query_cameras):
            by_camera.setdefault(camera, []).append(row)
        groups = []
        for camera, rows in by_camera.items():
            filters = base
            if camera is not None:
                filters = replace(base, exclude_cameras=base.exclude_cameras | {camera})
            groups.append((filters, rows))
        return groups

    async def add(self, images: Sequence[bytes], metadata: Sequence[EntryMetadata]) -> list[int]:
        """Embed and store images with their metadata and thumbnails; durable on return."""
        self._check_ready()
        self._check_count(len(images), "images")
        if len(metadata) != len(images):  # before the embedding work (the gallery checks too)
            raise BadInputError(
                f"{len(metadata)} metadata objects for {len(images)} images (give one per image)"
            )
        batch, thumbs = await self._in_decode_pool(self._prepare_with_thumbnails, images)
        embeddings = await self.batcher.embed(batch)
        ids = await self._call(self.gallery.add, embeddings, list(metadata), thumbs)
        self._update_size_gauge()
        return [int(i) for i in ids]

    def _batch_and_thumbnails(
        self, decoded: list[np.ndarray], config: object
    ) -> tuple[np.ndarray, list[bytes | None]]:
        batch = preprocess_batch(decoded, config)  # type: ignore[arg-type]
        height = self.settings.thumbnail_height
        return batch, [make_thumbnail(image, height) for image in decoded]

    async def delete(self, ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """Remove entries; returns ``(deleted, missing)``."""
        self._check_ready()
        if len(ids) == 0:
            raise BadInputError("no ids to delete")
        deleted, missing = await self._call(self.gallery.delete, [int(i) for i in ids])
        self._update_size_gauge()
        return [int(i) for i in deleted], [int(i) for i in missing]

    async def get_entry(self, entry_id: int) -> Entry:
        """One stored entry; ``NotFoundError`` if unknown."""
        (entry,) = await self._call(self.gallery.get, [int(entry_id)])
        if entry is None:
            raise NotFoundError(f"no gallery entry with id {entry_id}")
        return entry

    async def list_entries(
        self,
        offset: int = 0,
        limit: int = 50,
        *,
        cameras: Sequence[int] | None = None,
        time_from: float | None = None,
        time_to: float | None = None,
    ) -> EntryPage:
        """One page of entries in id order, with the number matching the filters."""
        return await self._call(
            functools.partial(
                self.gallery.page,
                offset,
                limit,
                cameras=None if cameras is None else list(cameras),
                time_from=time_from,
                time_to=time_to,
            )
        )

    async def thumbnail(self, entry_id: int) -> bytes:
        """The entry's JPEG thumbnail; ``NotFoundError`` if the entry or thumbnail is absent."""
        path = await self._call(self.gallery.thumbnail_path, int(entry_id))
        if path is None:
            raise NotFoundError(f"no thumbnail for gallery id {entry_id}")
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFoundError(f"no thumbnail for gallery id {entry_id}") from None

    async def stats(self) -> GalleryStats:
        """Gallery statistics (size, dimension, index, cameras...)."""
        stats = await self._call(self.gallery.stats)
        self._update_size_gauge()
        return GalleryStats.model_validate(to_jsonable(stats, nonfinite_as_none=True))

    def gallery_size(self) -> int:
        """Entries in the gallery; ``NotReadyError`` once it is closed."""
        try:
            return len(self.gallery)
        except GalleryClosedError:
            raise NotReadyError("the gallery is closed (the server is shutting down)") from None
        except GalleryUnavailableError as exc:
            raise NotReadyError(f"{exc}; retry later") from None

    def _update_size_gauge(self) -> None:
        with contextlib.suppress(GalleryClosedError, GalleryUnavailableError):
            self.metrics.gallery_size.set(len(self.gallery))

    def model_info(self) -> ModelInfo:
        """Manifest summary, runtime description and serving settings.

        The export directory is reported only with ``expose_export_dir`` (a path on the
        server, which an evaluation client on the same machine can load).
        """
        m = self.runtime.manifest
        export_dir = None
        if self.settings.expose_export_dir and m.directory is not None:
            export_dir = str(Path(m.directory).resolve())
        model = ModelSummary(
            name=m.model_name,
            method=m.method,
            embedding_dim=m.embedding_dim,
            normalized=m.normalized,
            input_size=[m.preprocess.height, m.preprocess.width],
            preprocess=to_jsonable(m.preprocess.to_dict(), nonfinite_as_none=True),
            precision=dict(m.precision),
            created=m.created,
            checkpoint_sha256=m.source.get("sha256"),
            export_dir=export_dir,
        )
        runtime = RuntimeInfo.model_validate(
            to_jsonable(self.runtime.describe(), nonfinite_as_none=True)
        )
        return ModelInfo.model_validate(
            {"model": model, "runtime": runtime, **self.settings.public_summary()}
        )


def _gallery_error(exc: Exception) -> Exception:
    """The service's refusal for a gallery error."""
    if isinstance(exc, GalleryClosedError):
        return NotReadyError("the gallery is closed (the server is shutting down)")
    if isinstance(exc, GalleryUnavailableError):
        return NotReadyError(f"{exc}; retry later (nothing was changed)")
    if isinstance(exc, GalleryStorageError):
        if exc.reason == "full":
            return StorageFullError(f"{exc}; nothing was changed")
        return StorageUnavailableError(f"{exc}; nothing was changed")
    return BadInputError(str(exc))


def build_service(settings: ServerSettings) -> SearchService:
    """Load the manifest, runtime and gallery named by ``settings`` (blocking)."""
    from reid.gallery import is_milvus_url, open_gallery
    from reid.manifest import load_manifest
    from reid.runtimes import load_runtime

    if settings.model is None or settings.gallery is None:
        raise ValueError("both --model EXPORT_DIR and --gallery GALLERY_DIR are needed")
    if is_milvus_url(settings.gallery) and settings.thumbnail_dir is None:
        raise ValueError(
            "a milvus:// gallery needs --thumbnail-dir DIR, a directory every server reads"
        )
    manifest = load_manifest(settings.model)
    options = {} if settings.threads is None else {"threads": settings.threads}
    runtime = load_runtime(manifest, settings.runtime, settings.device, **options)
    try:
        gallery = open_gallery(
            settings.gallery,
            manifest.embedding_dim,
            index=settings.index,
            thumbnail_dir=settings.thumbnail_dir,
        )
    except BaseException:
        runtime.close()
        raise
    return SearchService(runtime, gallery, settings)
