"""The search service both front ends (HTTP and gRPC) call.

It owns the request limits, image decoding and preprocessing (from the manifest
only), the micro-batcher in front of the runtime, and the gallery. Blocking work
(decoding, inference, gallery I/O) runs in threads, never on the event loop.
Refusals are :mod:`server.errors` exceptions, so both protocols answer alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from gallery import (
    EntryMetadata,
    Gallery,
    GalleryClosedError,
    GalleryError,
    Match,
    SearchFilters,
)
from reid.preprocess import (
    ImageTooLargeError,
    PreprocessError,
    decode_image_bytes,
    preprocess_batch,
)
from reid.runtimes import Runtime
from server.batching import MicroBatcher
from server.errors import (
    BadInputError,
    ForbiddenError,
    NotFoundError,
    NotReadyError,
    PayloadTooLargeError,
    UnauthorizedError,
)
from server.metrics import Metrics
from server.settings import ServerSettings
from server.thumbnails import make_thumbnail

log = logging.getLogger("server.service")
_NO_FILTERS = SearchFilters()


@dataclass(frozen=True)
class SearchOptions:
    """How to search: top-k (``None`` = full ranking) and filters."""

    k: int | None = 10
    filters: SearchFilters = field(default_factory=SearchFilters)
    query_cameras: Sequence[int | None] | None = None  # one per query image
    exclude_same_camera: bool = False  # add each query's camera to exclude_cameras


class SearchService:
    """Embeds images, searches and edits the gallery; shared by HTTP and gRPC."""

    def __init__(
        self,
        runtime: Runtime,
        gallery: Gallery,
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

    def is_ready(self) -> bool:
        return self._started and not self._closed and self.batcher.running

    def _check_ready(self) -> None:
        if not self.is_ready():
            raise NotReadyError("the service is not ready (starting up or shutting down)")

    # -- auth ------------------------------------------------------------------------

    def authorize(self, key: str | None, *, write: bool) -> None:
        """Raise ``UnauthorizedError`` (no key) / ``ForbiddenError`` (wrong key) if needed.

        Writes need ``api_key`` when one is set. Reads need ``read_key`` or
        ``api_key`` when ``read_key`` is set; otherwise reads are open.
        """
        write_key = self.settings.api_key
        read_key = self.settings.read_key
        accepted = [write_key] if write else [read_key, write_key]
        secrets = [s.get_secret_value() for s in accepted if s is not None]
        if (write and write_key is None) or (not write and read_key is None):
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

    # -- validation ------------------------------------------------------------------

    def validate_k(self, k: int | None) -> int | None:
        """``k`` in ``1..max_k``; ``None`` (full ranking) becomes ``max_full_ranking``."""
        if k is None:
            return self.settings.max_full_ranking
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise BadInputError(f"k must be an integer, got {k!r}")
        if not 1 <= k <= self.settings.max_k:
            raise BadInputError(
                f"k must be between 1 and {self.settings.max_k} (got {k}); "
                "ask for a full ranking instead of a huge k"
            )
        return int(k)

    def check_images(self, images: Sequence[object]) -> None:
        """1..max_images images, else ``BadInputError`` / ``PayloadTooLargeError``."""
        if len(images) == 0:
            raise BadInputError("no images in the request (send at least one)")
        if len(images) > self.settings.max_images:
            raise PayloadTooLargeError(
                f"{len(images)} images in one request; the limit is {self.settings.max_images}"
            )

    def _check_filters(self, options: SearchOptions, count: int) -> None:
        f = options.filters
        if f.time_from is not None and f.time_to is not None and f.time_from > f.time_to:
            raise BadInputError(f"time_from ({f.time_from}) is after time_to ({f.time_to})")
        if options.query_cameras is not None and len(options.query_cameras) != count:
            raise BadInputError(
                f"query_cameras has {len(options.query_cameras)} values for {count} queries "
                "(give one camera per query image)"
            )
        if options.exclude_same_camera and options.query_cameras is None:
            raise BadInputError("exclude_same_camera needs query_cameras (one per query image)")

    # -- decoding --------------------------------------------------------------------

    def _decode_one(self, index: int, data: bytes) -> np.ndarray:
        label = f"image {index}"
        if not data:
            raise BadInputError(f"{label}: empty file (0 bytes)")
        try:  # the pixel limit is checked from the header, before decoding
            return decode_image_bytes(data, max_pixels=self.settings.max_pixels)
        except ImageTooLargeError as exc:
            raise PayloadTooLargeError(f"{label}: {exc}") from None
        except PreprocessError as exc:
            raise BadInputError(f"{label}: {exc}") from None

    def _decode(self, images: Sequence[bytes]) -> list[np.ndarray]:
        return [self._decode_one(i, bytes(data)) for i, data in enumerate(images)]

    def _prepare(self, images: Sequence[bytes]) -> np.ndarray:
        """Decode + preprocess with the manifest's settings (runs in a thread)."""
        return preprocess_batch(self._decode(images), self.runtime.manifest.preprocess)

    async def _gallery(self, method: str, *args: object) -> Any:
        """Call a blocking gallery method in a thread, mapping its errors."""
        try:
            return await asyncio.to_thread(getattr(self.gallery, method), *args)
        except GalleryClosedError:
            raise NotReadyError("the gallery is closed (the server is shutting down)") from None
        except GalleryError as exc:
            raise BadInputError(str(exc)) from None

    # -- operations ------------------------------------------------------------------

    async def embed(self, images: Sequence[bytes]) -> np.ndarray:
        """Encoded images -> ``float32[N, D]`` embeddings (micro-batched)."""
        self._check_ready()
        self.check_images(images)
        batch = await asyncio.to_thread(self._prepare, images)
        return await self.batcher.embed(batch)

    async def search(self, images: Sequence[bytes], options: SearchOptions) -> list[list[Match]]:
        """Embed the query images and search the gallery (one result list per image)."""
        self.check_images(images)
        self.validate_k(options.k)
        self._check_filters(options, len(images))
        embeddings = await self.embed(images)
        return await self.search_embeddings(embeddings, options)

    async def search_embeddings(
        self, embeddings: np.ndarray, options: SearchOptions
    ) -> list[list[Match]]:
        """Search with ready embeddings ``float32[Q, D]``."""
        self._check_ready()
        queries = self._check_embeddings(embeddings)
        k = self.validate_k(options.k)
        self._check_filters(options, len(queries))
        groups = self._filter_groups(options, len(queries))
        results: list[list[Match]] = [[] for _ in range(len(queries))]
        for filters, rows in groups:
            chosen = None if filters == _NO_FILTERS else filters  # the gallery's fast path
            found = await self._gallery("search", queries[rows], k, chosen)
            for row, matches in zip(rows, found, strict=True):
                results[row] = list(matches)
        return results

    def _check_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        try:
            queries = np.asarray(embeddings, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"embeddings are not numbers: {exc}") from None
        dim = self.runtime.embedding_dim
        if queries.ndim != 2 or queries.shape[1] != dim or len(queries) == 0:
            raise BadInputError(f"embeddings must be float32[Q, {dim}], got {list(queries.shape)}")
        if len(queries) > self.settings.max_images:
            raise PayloadTooLargeError(
                f"{len(queries)} queries; the limit is {self.settings.max_images}"
            )
        if not np.isfinite(queries).all():
            raise BadInputError("embeddings contain NaN or infinite values")
        return queries

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
        self.check_images(images)
        if len(metadata) != len(images):
            raise BadInputError(
                f"{len(metadata)} metadata objects for {len(images)} images (give one per image)"
            )
        decoded = await asyncio.to_thread(self._decode, images)
        config = self.runtime.manifest.preprocess
        batch, thumbs = await asyncio.to_thread(self._batch_and_thumbnails, decoded, config)
        embeddings = await self.batcher.embed(batch)
        ids = await self._gallery("add", embeddings, list(metadata), thumbs)
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
        deleted, missing = await self._gallery("delete", [int(i) for i in ids])
        self._update_size_gauge()
        return [int(i) for i in deleted], [int(i) for i in missing]

    async def get_entry(self, entry_id: int) -> object:
        """One stored entry (``gallery.Entry``); ``NotFoundError`` if unknown."""
        (entry,) = await self._gallery("get", [int(entry_id)])
        if entry is None:
            raise NotFoundError(f"no gallery entry with id {entry_id}")
        return entry

    async def thumbnail(self, entry_id: int) -> bytes:
        """The entry's JPEG thumbnail; ``NotFoundError`` if the entry or thumbnail is absent."""
        path = await self._gallery("thumbnail_path", int(entry_id))
        if path is None:
            raise NotFoundError(f"no thumbnail for gallery id {entry_id}")
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFoundError(f"no thumbnail for gallery id {entry_id}") from None

    async def stats(self) -> dict:
        """Gallery statistics (size, dimension, index, cameras...)."""
        stats = dict(await self._gallery("stats"))
        self._update_size_gauge()
        return stats

    def gallery_size(self) -> int:
        """Entries in the gallery; ``NotReadyError`` once it is closed."""
        try:
            return len(self.gallery)
        except GalleryClosedError:
            raise NotReadyError("the gallery is closed (the server is shutting down)") from None

    def _update_size_gauge(self) -> None:
        with contextlib.suppress(GalleryClosedError):
            self.metrics.gallery_size.set(len(self.gallery))

    def model_info(self) -> dict:
        """Manifest summary, runtime description and serving settings."""
        m = self.runtime.manifest
        return {
            "model": {
                "name": m.model_name,
                "method": m.method,
                "embedding_dim": m.embedding_dim,
                "normalized": m.normalized,
                "input_size": [m.preprocess.height, m.preprocess.width],
                "preprocess": m.preprocess.to_dict(),
                "precision": dict(m.precision),
                "created": m.created,
                "checkpoint_sha256": m.source.get("sha256"),
            },
            "runtime": _jsonable(self.runtime.describe()),
            **self.settings.public_summary(),
        }


def _jsonable(value: object) -> object:
    """Describe dicts may hold numpy scalars or tuples; make them JSON-friendly."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def build_service(settings: ServerSettings) -> SearchService:
    """Load the manifest, runtime and gallery named by ``settings`` (blocking)."""
    from reid.manifest import load_manifest
    from reid.runtimes import load_runtime

    if settings.model is None or settings.gallery is None:
        raise ValueError("both --model EXPORT_DIR and --gallery GALLERY_DIR are needed")
    manifest = load_manifest(settings.model)
    options = {} if settings.threads is None else {"threads": settings.threads}
    runtime = load_runtime(manifest, settings.runtime, settings.device, **options)
    try:
        gallery = Gallery.open(settings.gallery, manifest.embedding_dim, index=settings.index)
    except BaseException:
        runtime.close()
        raise
    return SearchService(runtime, gallery, settings)
