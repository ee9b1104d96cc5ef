"""``MilvusGallery``: the gallery API on a Milvus collection shared by several servers.

Selected by ``python -m server --gallery milvus://HOST:PORT/COLLECTION``. Tested against
Milvus 2.3.5 standalone with ``pymilvus`` 2.6 (the ``milvus`` extra); see
``docs/GALLERY.md`` for the deployment notes.

Schema (one entity per entry): ``id`` INT64 primary key (no auto id: ids are chosen
here, see ``_IdSource``), ``embedding`` FLOAT_VECTOR (normalised, metric IP, so the
score is the cosine like FAISS's), scalar fields ``camera`` (-1: none), ``timestamp`` +
``has_time``, ``track`` + ``has_track``, ``source``, ``key`` ("" : none), ``box`` and
``extra`` (JSON text), ``thumbnail`` (bool) and ``created``.

Filters are Milvus boolean expressions on those scalar fields, evaluated by Milvus
before the top-k (``camera in [...]``, ``camera not in [...]``, ``has_time == true &&
timestamp >= t``), so a filtered search returns ``k`` results whenever ``k`` entries
pass. ``min_score`` is applied to the top-k afterwards, exactly as the FAISS gallery
does. Every read and write uses consistency level Strong: a search issued after an add
was acknowledged (by any server) sees it, and a deleted entry is never returned again.
A Strong search waits for the server's next time tick (``proxy.timeTickInterval``, 200 ms
by default): run Milvus with 20 ms for ~40 ms searches (docs/GALLERY.md).

Idempotent adds: an entry with a ``key`` gets the id derived from the key (63 bits of
its SHA-256) and is written with ``upsert``, so two servers racing on one key end with
one entity. Thumbnails are files in a directory every server reads (``thumbnail_dir``,
a shared filesystem): Milvus has no blob type, and a base64 VARCHAR would cap a
thumbnail at 48 KB and make every query heavier.

Availability: any connection failure raises ``GalleryUnavailableError``; a background
probe keeps ``is_available()`` current, and the client reconnects on the next call.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from reid.gallery.gallery import (
    MAX_PAGE,
    _id_list,
    _metadata_list,
    _normalised,
    _thumbnail_list,
)
from reid.gallery.types import (
    MAX_ID,
    MAX_KEY_CHARS,
    MAX_SOURCE_CHARS,
    Entry,
    EntryMetadata,
    EntryPage,
    GalleryClosedError,
    GalleryError,
    GalleryUnavailableError,
    Match,
    SearchFilters,
)

log = logging.getLogger(__name__)

SCHEME = "milvus://"
MAX_TOPK = 16_384  # Milvus's limit on k and on offset + limit of one query
_TEXT = 65_535  # longest VARCHAR
_QUERY_BATCH = 4_096  # ids per ``id in [...]`` query
SCAN_BATCH = MAX_TOPK  # entities per step of an id-ordered walk (``id > last``)
_META_FIELDS = [
    "id",
    "camera",
    "timestamp",
    "has_time",
    "track",
    "has_track",
    "box",
    "source",
    "extra",
    "key",
    "thumbnail",
    "created",
]
_SHARD = 10_000


def is_milvus_url(location: object) -> bool:
    """True for ``milvus://HOST:PORT/COLLECTION``."""
    return isinstance(location, str) and location.startswith(SCHEME)


def parse_milvus_url(url: str) -> tuple[str, str]:
    """``milvus://HOST:PORT/COLLECTION`` -> (``http://HOST:PORT``, ``COLLECTION``)."""
    parsed = urlparse(url)
    collection = parsed.path.strip("/")
    if parsed.scheme != "milvus" or not parsed.hostname or not collection:
        raise GalleryError(f"expected milvus://HOST:PORT/COLLECTION, got {url!r}")
    if not collection.replace("_", "a").isalnum() or collection[0].isdigit():
        raise GalleryError(
            f"collection name {collection!r} must be letters, digits and _ (not first a digit)"
        )
    return f"http://{parsed.hostname}:{parsed.port or 19530}", collection


class _IdSource:
    """Unique int64 ids across servers without coordination: milliseconds since 2025
    (41 bits), a random 10-bit process number and a 12-bit sequence (Twitter's
    snowflake). Ids of one process increase; ids of servers sharing a collection differ
    unless two processes draw the same process number *and* the same millisecond and
    sequence (a 1-in-1,024 draw, then a coincidence in time)."""

    EPOCH_MS = 1_735_689_600_000  # 2025-01-01 UTC

    def __init__(self) -> None:
        self._node = secrets.randbelow(1024)
        self._lock = threading.Lock()
        self._last_ms = 0
        self._seq = 0

    def take(self, count: int) -> list[int]:
        out = []
        with self._lock:
            for _ in range(count):
                now = max(int(time.time() * 1000) - self.EPOCH_MS, self._last_ms)
                if now == self._last_ms:
                    self._seq += 1
                    if self._seq >= 4096:  # sequence spent: borrow the next millisecond
                        now, self._seq = now + 1, 0
                else:
                    self._seq = 0
                self._last_ms = now
                out.append((now << 22) | (self._node << 12) | self._seq)
        return out


def key_id(key: str) -> int:
    """The id of the entry with idempotency key ``key``: 63 bits of its SHA-256, >= 1."""
    digest = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return (digest & MAX_ID) or 1


def filter_expression(filters: SearchFilters | None) -> str | None:
    """The Milvus boolean expression of ``filters`` (None: every entry passes).

    Same semantics as the FAISS gallery: an entry without a camera passes
    ``exclude_cameras`` and fails ``include_cameras``; one without a timestamp fails
    every time bound; bounds are inclusive. ``min_score`` is not part of it.
    """
    if filters is None:
        return None
    parts = []
    if filters.include_cameras is not None:
        parts.append(f"camera in {sorted(filters.include_cameras)}")
    if filters.exclude_cameras:
        parts.append(f"camera not in {sorted(filters.exclude_cameras)}")
    parts += _time_parts(filters.time_from, filters.time_to)
    return " && ".join(f"({p})" for p in parts) or None


def _time_parts(time_from: float | None, time_to: float | None) -> list[str]:
    parts = []
    if time_from is not None or time_to is not None:
        parts.append("has_time == true")
    if time_from is not None:
        parts.append(f"timestamp >= {float(time_from)!r}")
    if time_to is not None:
        parts.append(f"timestamp <= {float(time_to)!r}")
    return parts


class MilvusGallery:
    """A Milvus collection searchable by cosine similarity. Use ``MilvusGallery.open``."""

    def __init__(
        self,
        uri: str,
        collection: str,
        dim: int | None,
        thumbnail_dir: Path | None,
        *,
        index: str = "flat",
        timeout: float = 10.0,
        probe_interval: float = 1.0,
    ) -> None:
        self.uri, self.collection = uri, collection
        self.dim: int = 0 if dim is None else int(dim)
        self._wanted_dim = dim
        self.thumbnail_dir = thumbnail_dir
        self.directory = f"milvus://{uri.removeprefix('http://')}/{collection}"
        self._index_kind = index
        self._kind = "flat" if index == "auto" else index  # auto: exact, like FAISS below 200k
        self._timeout = timeout
        self._ids = _IdSource()
        self._client: Any = None
        self._ready_collection = False
        self._lock = threading.Lock()
        self._closed = False
        self._available = False
        self._stop = threading.Event()
        self._probe_interval = probe_interval
        self._prober: threading.Thread | None = None

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str,
        dim: int | None = None,
        *,
        thumbnail_dir: str | Path | None = None,
        index: str = "flat",
        timeout: float = 10.0,
        wait: bool = False,
    ) -> MilvusGallery:
        """Connect to ``milvus://HOST:PORT/COLLECTION``, creating the collection (``dim``
        needed) if missing. With ``wait=False`` an unreachable server is not an error:
        the gallery starts unavailable and connects once Milvus answers."""
        try:
            import pymilvus  # noqa: F401
        except ImportError:
            raise GalleryError(
                "a milvus:// gallery needs pymilvus: pip install 'reid[milvus]'"
            ) from None
        if index not in ("flat", "hnsw", "ivf", "ivf_sq8", "auto"):
            raise GalleryError(
                f"unknown index {index!r} for Milvus; expected flat, hnsw, ivf or ivf_sq8"
            )
        uri, collection = parse_milvus_url(url)
        thumbs = None if thumbnail_dir is None else Path(thumbnail_dir)
        if thumbs is not None:
            thumbs.mkdir(parents=True, exist_ok=True)
        gallery = cls(uri, collection, dim, thumbs, index=index, timeout=timeout)
        try:
            gallery._connected()
        except GalleryUnavailableError as error:
            if wait:
                raise
            log.warning("%s: %s; starting unavailable, retrying", gallery.directory, error)
        gallery._start_probe()
        return gallery

    def __enter__(self) -> MilvusGallery:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the probe and close the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._prober is not None:
            self._prober.join(timeout=5)
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a dead connection
                client.close()

    def is_available(self) -> bool:
        """True when the last call or probe reached Milvus and the collection is there."""
        return self._available and not self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise GalleryClosedError(f"gallery {self.directory} is closed")

    # -- connection ----------------------------------------------------------------------

    def _connected(self) -> Any:
        """The client, connected and with the collection loaded; reconnects if needed."""
        self._check_open()
        with self._lock:
            if self._client is None or not self._ready_collection:
                self._connect()
            return self._client

    def _connect(self) -> None:
        from pymilvus import MilvusClient

        try:
            if self._client is None:
                self._client = MilvusClient(uri=self.uri, timeout=self._timeout)
            self._ensure_collection(self._client)
        except GalleryError:
            raise
        except Exception as error:
            self._client = None
            self._available = False
            raise self._unavailable(error) from None
        self._ready_collection = True
        self._available = True

    def _unavailable(self, error: BaseException) -> GalleryUnavailableError:
        text = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        return GalleryUnavailableError(f"Milvus at {self.uri} is unreachable ({text})")

    def _ensure_collection(self, client: Any) -> None:
        from pymilvus import DataType

        name, t = self.collection, self._timeout
        if client.has_collection(name, timeout=t):
            info = client.describe_collection(name, timeout=t)
            vector = next(f for f in info["fields"] if f["name"] == "embedding")
            stored = int(vector["params"]["dim"])
            if self._wanted_dim is not None and stored != self._wanted_dim:
                raise GalleryError(
                    f"Milvus collection {name} has dimension {stored}, the model {self._wanted_dim}"
                )
            self.dim = stored
            client.load_collection(name, timeout=t)
            return
        if self._wanted_dim is None:
            raise GalleryError(f"Milvus collection {name} does not exist and no dim was given")
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self._wanted_dim)
        schema.add_field("camera", DataType.INT64)
        schema.add_field("timestamp", DataType.DOUBLE)
        schema.add_field("has_time", DataType.BOOL)
        schema.add_field("track", DataType.INT64)
        schema.add_field("has_track", DataType.BOOL)
        schema.add_field("box", DataType.VARCHAR, max_length=256)
        schema.add_field("source", DataType.VARCHAR, max_length=4 * MAX_SOURCE_CHARS)
        schema.add_field("extra", DataType.VARCHAR, max_length=_TEXT)
        schema.add_field("key", DataType.VARCHAR, max_length=4 * MAX_KEY_CHARS)
        schema.add_field("thumbnail", DataType.BOOL)
        schema.add_field("created", DataType.DOUBLE)
        params = client.prepare_index_params()
        params.add_index("embedding", **_index_params(self._kind))
        client.create_collection(
            name, schema=schema, index_params=params, consistency_level="Strong", timeout=t
        )
        client.load_collection(name, timeout=t)
        self.dim = int(self._wanted_dim)
        log.info("%s: created (dim %d, index %s)", self.directory, self.dim, self._index_kind)

    def _known_dim(self) -> int:
        """The dimension, from the model or (opened without one) from the collection: bad
        input is refused as such (400) even while Milvus is down, when the dim is known."""
        if not self.dim:
            self._connected()
        return self.dim

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.method(...)`` at Strong consistency; connection failures ->
        ``GalleryUnavailableError`` (and the next call reconnects)."""
        client = self._connected()
        try:
            result = getattr(client, method)(*args, timeout=self._timeout, **kwargs)
        except Exception as error:
            if _is_input_error(error):
                raise GalleryError(f"Milvus refused the request: {error}") from None
            with self._lock:
                self._ready_collection = False  # re-check the collection on reconnect
                self._available = False
            raise self._unavailable(error) from None
        self._available = True
        return result

    def _start_probe(self) -> None:
        def run() -> None:
            while not self._stop.wait(self._probe_interval):
                try:
                    client = self._connected()
                    client.get_server_version(timeout=min(self._timeout, 2.0))
                    self._available = True
                except GalleryClosedError:
                    return
                except GalleryError as error:
                    log.error("%s: %s", self.directory, error)
                    self._available = False
                except Exception:
                    with self._lock:
                        self._ready_collection = False
                    self._available = False

        self._prober = threading.Thread(target=run, name="milvus-probe", daemon=True)
        self._prober.start()

    # -- writes --------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count(None)

    def add(
        self,
        embeddings: np.ndarray,
        metadata: Sequence[EntryMetadata],
        thumbnails: Sequence[bytes | None] | None = None,
    ) -> np.ndarray:
        """Add a batch; return its int64 ids once Milvus acknowledged the write.

        An item whose ``key`` is already stored (or repeats a key earlier in the batch)
        is not added again: its id is the stored entry's.
        """
        self._check_open()
        vectors = _normalised(embeddings, self._known_dim(), "embeddings")
        metas = _metadata_list(metadata, len(vectors))
        thumbs = _thumbnail_list(thumbnails, len(vectors))
        if len(vectors) == 0:
            return np.empty(0, np.int64)
        if any(t is not None for t in thumbs) and self.thumbnail_dir is None:
            raise GalleryError("this Milvus gallery keeps no thumbnails (no thumbnail directory)")
        fresh = iter(self._ids.take(sum(m.key is None for m in metas)))
        ids = [next(fresh) if m.key is None else key_id(m.key) for m in metas]
        existing = self._existing_keys([i for i, m in zip(ids, metas, strict=True) if m.key])
        rows, written, seen = [], [], set(existing)
        now = time.time()
        for i, vector, meta, thumb in zip(ids, vectors, metas, thumbs, strict=True):
            if meta.key is not None:
                stored = existing.get(i)
                if stored is not None and stored != meta.key:
                    raise GalleryError(f"key {meta.key!r} collides with key {stored!r}")
                if i in seen:
                    continue
                seen.add(i)
            rows.append(_row(i, vector, meta, thumb is not None, now))
            if thumb is not None:
                written.append(self._write_thumbnail(i, thumb))
        if rows:
            try:
                if any(m.key for m in metas):
                    self._call("upsert", self.collection, rows)
                else:
                    self._call("insert", self.collection, rows)
            except BaseException:
                for path in written:
                    path.unlink(missing_ok=True)
                raise
        return np.asarray(ids, np.int64)

    def _existing_keys(self, ids: list[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for start in range(0, len(ids), _QUERY_BATCH):
            chunk = ids[start : start + _QUERY_BATCH]
            for row in self._query(f"id in {chunk}", ["id", "key"]):
                found[int(row["id"])] = row["key"]
        return found

    def delete(self, ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """Delete entries; return ``(deleted, missing)`` ids, each sorted."""
        self._check_open()
        wanted = sorted(set(_id_list(ids)))
        rows = self._rows_of(wanted, ["id", "thumbnail"])
        deleted = sorted(rows)
        if deleted:
            for start in range(0, len(deleted), _QUERY_BATCH):
                chunk = deleted[start : start + _QUERY_BATCH]
                self._call("delete", self.collection, filter=f"id in {chunk}")
            for i in deleted:
                if rows[i]["thumbnail"] and self.thumbnail_dir is not None:
                    self._thumbnail_file(i).unlink(missing_ok=True)
        return deleted, [i for i in wanted if i not in rows]

    # -- reads ---------------------------------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int | None = 10, filters: SearchFilters | None = None
    ) -> list[list[Match]]:
        """Per query, the ``k`` best passing entries (``k=None``: all), best first."""
        return [
            [Match(int(h["id"]), float(h["distance"]), *_meta(h["entity"])) for h in hits]
            for hits in self._search(queries, k, filters, _META_FIELDS)
        ]

    def search_arrays(
        self, queries: np.ndarray, k: int | None = 10, filters: SearchFilters | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Like ``search`` but ``(scores float32[m], ids int64[m])`` per query, no metadata."""
        return [
            (
                np.array([h["distance"] for h in hits], np.float32),
                np.array([h["id"] for h in hits], np.int64),
            )
            for hits in self._search(queries, k, filters, [])
        ]

    def _search(
        self,
        queries: np.ndarray,
        k: int | None,
        filters: SearchFilters | None,
        fields: list[str],
    ) -> list[list[dict[str, Any]]]:
        self._check_open()
        queries = _normalised(queries, self._known_dim(), "queries")
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer))):
            raise GalleryError(f"k must be a positive integer or None, got {k!r}")
        if k is not None and k < 1:
            raise GalleryError(f"k must be >= 1 (or None for the full ranking), got {k}")
        if filters is not None and not isinstance(filters, SearchFilters):
            raise GalleryError(f"filters must be a SearchFilters, got {type(filters).__name__}")
        expr = filter_expression(filters)
        nothing = filters is not None and filters.include_cameras == frozenset()
        if len(queries) == 0 or nothing:
            return [[] for _ in queries]
        limit = self._count(expr) if k is None else int(k)
        if limit == 0:
            return [[] for _ in queries]
        if limit > MAX_TOPK:
            if k is None:
                raise GalleryError(
                    f"a full ranking of {limit} entries is more than Milvus returns ({MAX_TOPK})"
                )
            limit = MAX_TOPK
        results = []
        for start in range(0, len(queries), 256):
            batch = queries[start : start + 256]
            results += self._call(
                "search",
                self.collection,
                data=[row.tolist() for row in batch],
                limit=limit,
                filter=expr or "",
                output_fields=fields,
                search_params={"metric_type": "IP", "params": _search_params(self._kind, limit)},
                consistency_level="Strong",
            )
        hits_per_query = [list(hits) for hits in results]
        if filters is not None and filters.min_score is not None:
            floor = filters.min_score
            hits_per_query = [
                [h for h in hits if h["distance"] >= floor] for hits in hits_per_query
            ]
        return hits_per_query

    def _query(self, expr: str, fields: list[str], **kwargs: Any) -> list[dict[str, Any]]:
        return list(
            self._call(
                "query",
                self.collection,
                filter=expr,
                output_fields=fields,
                consistency_level="Strong",
                **kwargs,
            )
        )

    def _count(self, expr: str | None) -> int:
        self._check_open()
        rows = self._query(expr or "", ["count(*)"])
        return int(rows[0]["count(*)"])

    def _rows_of(self, ids: list[int], fields: list[str]) -> dict[int, dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), _QUERY_BATCH):
            chunk = ids[start : start + _QUERY_BATCH]
            for row in self._query(f"id in {chunk}", fields):
                found[int(row["id"])] = row
        return found

    def get(self, ids: Sequence[int]) -> list[Entry | None]:
        """The entries of ``ids`` in order (None where an id does not exist)."""
        self._check_open()
        wanted = _id_list(ids)
        rows = self._rows_of(sorted(set(wanted)), _META_FIELDS)
        return [_entry(rows[i]) if i in rows else None for i in wanted]

    def page(
        self,
        offset: int = 0,
        limit: int = 50,
        *,
        cameras: Sequence[int] | None = None,
        time_from: float | None = None,
        time_to: float | None = None,
    ) -> EntryPage:
        """Entries ``offset .. offset + limit - 1`` in id order among those passing the
        filters, and how many pass (``total``); same rules as ``Gallery.page``. Deep
        pages walk the ids in batches (``id > last``), as Milvus caps offset + limit."""
        self._check_open()
        if isinstance(offset, np.integer):
            offset = int(offset)
        if isinstance(limit, np.integer):
            limit = int(limit)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise GalleryError(f"offset must be an integer >= 0, got {offset!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise GalleryError(f"limit must be an integer >= 1, got {limit!r}")
        if limit > MAX_PAGE:
            raise GalleryError(f"limit must be at most {MAX_PAGE}, got {limit}")
        parts = _time_parts(time_from, time_to)
        if cameras is not None:
            chosen = sorted({int(c) for c in cameras})
            if not chosen:
                return EntryPage(entries=[], total=0, offset=offset, limit=limit)
            parts.insert(0, f"camera in {chosen}")
        expr = " && ".join(f"({p})" for p in parts)
        total = self._count(expr)
        entries: list[Entry] = []
        last, skip = 0, offset
        while len(entries) < limit and skip + len(entries) < total:
            where = f"id > {last}" + (f" && {expr}" if expr else "")
            batch = sorted(
                self._query(where, ["id"], limit=SCAN_BATCH), key=lambda row: int(row["id"])
            )
            if not batch:
                break
            last = int(batch[-1]["id"])
            ids = [int(row["id"]) for row in batch]
            if skip >= len(ids):
                skip -= len(ids)
                continue
            wanted = ids[skip : skip + limit - len(entries)]
            skip = 0
            rows = self._rows_of(wanted, _META_FIELDS)
            entries += [_entry(rows[i]) for i in wanted if i in rows]
        return EntryPage(entries=entries, total=total, offset=offset, limit=limit)

    def embeddings(self, ids: Sequence[int]) -> np.ndarray:
        """float32[len(ids), dim] stored (normalised) embeddings; GalleryError if one is missing."""
        self._check_open()
        wanted = _id_list(ids)
        rows = self._rows_of(sorted(set(wanted)), ["id", "embedding"])
        if any(i not in rows for i in wanted):
            raise GalleryError("some of the requested ids do not exist")
        if not wanted:
            return np.empty((0, self.dim), np.float32)
        return np.array([rows[i]["embedding"] for i in wanted], np.float32)

    def thumbnail_path(self, id: int) -> Path | None:
        """Path of the entry's thumbnail file, or None (no such entry or no thumbnail)."""
        self._check_open()
        (entry,) = self.get([id])
        if entry is None or not entry.has_thumbnail or self.thumbnail_dir is None:
            return None
        return self._thumbnail_file(entry.id)

    def stats(self) -> dict[str, Any]:
        """Size, dim, index, per-camera counts, time range, thumbnails (a scan of the
        scalar fields in id order: O(entries), like a full export)."""
        self._check_open()
        cameras: dict[int, int] = {}
        low, high, thumbs, size, last = math.inf, -math.inf, 0, 0, 0
        while True:
            batch = self._query(
                f"id > {last}", ["id", "camera", "timestamp", "has_time", "thumbnail"],
                limit=SCAN_BATCH,
            )  # fmt: skip
            if not batch:
                break
            for row in batch:
                size += 1
                if row["camera"] >= 0:
                    cameras[int(row["camera"])] = cameras.get(int(row["camera"]), 0) + 1
                if row["has_time"]:
                    low, high = min(low, row["timestamp"]), max(high, row["timestamp"])
                thumbs += bool(row["thumbnail"])
            last = max(int(row["id"]) for row in batch)
        return {
            "size": size,
            "dim": self.dim,
            "index": self._kind,
            "index_requested": self._index_kind,
            "ivf_nlist": None,
            "ivf_nprobe": None,
            "hnsw_ef_search": None,
            "hnsw_tombstones": None,
            "rerank_factor": None,
            "recall": None,
            "cameras": dict(sorted(cameras.items())),
            "time_range": None if low == math.inf else [low, high],
            "with_thumbnails": thumbs,
            "directory": self.directory,
            "backend": "milvus",
        }

    # -- thumbnails ----------------------------------------------------------------------

    def _thumbnail_file(self, entry_id: int) -> Path:
        assert self.thumbnail_dir is not None
        return (
            self.thumbnail_dir / self.collection / f"{entry_id // _SHARD:015d}" / f"{entry_id}.jpg"
        )

    def _write_thumbnail(self, entry_id: int, data: bytes) -> Path:
        """Write through a temporary file, fsync'd and renamed: a reader on any server
        sees the whole file or none."""
        path = self._thumbnail_file(entry_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        return path


# -- rows ---------------------------------------------------------------------------------


def _row(
    entry_id: int, vector: np.ndarray, meta: EntryMetadata, thumbnail: bool, created: float
) -> dict[str, Any]:
    extra = json.dumps(meta.extra, allow_nan=False)
    if len(extra.encode("utf-8")) > _TEXT:
        raise GalleryError(f"extra is more than {_TEXT} bytes as JSON, the Milvus limit")
    return {
        "id": entry_id,
        "embedding": vector.tolist(),
        "camera": -1 if meta.camera is None else meta.camera,
        "timestamp": 0.0 if meta.timestamp is None else meta.timestamp,
        "has_time": meta.timestamp is not None,
        "track": 0 if meta.track is None else meta.track,
        "has_track": meta.track is not None,
        "box": "" if meta.box is None else json.dumps(list(meta.box)),
        "source": "" if meta.source is None else meta.source,
        "extra": extra,
        "key": meta.key or "",
        "thumbnail": thumbnail,
        "created": created,
    }


def _meta(row: dict[str, Any]) -> tuple[EntryMetadata, bool]:
    meta = EntryMetadata.stored(
        camera=None if row["camera"] < 0 else int(row["camera"]),
        timestamp=float(row["timestamp"]) if row["has_time"] else None,
        track=int(row["track"]) if row["has_track"] else None,
        box=tuple(json.loads(row["box"])) if row["box"] else None,
        source=row["source"] or None,
        extra=json.loads(row["extra"]),
        key=row["key"] or None,
    )
    return meta, bool(row["thumbnail"])


def _entry(row: dict[str, Any]) -> Entry:
    meta, thumbnail = _meta(row)
    return Entry(int(row["id"]), meta, thumbnail, float(row["created"]))


def _index_params(kind: str) -> dict[str, Any]:
    if kind == "flat":
        return {"index_type": "FLAT", "metric_type": "IP"}
    if kind == "ivf":
        return {"index_type": "IVF_FLAT", "metric_type": "IP", "params": {"nlist": 1024}}
    if kind == "ivf_sq8":
        return {"index_type": "IVF_SQ8", "metric_type": "IP", "params": {"nlist": 1024}}
    return {"index_type": "HNSW", "metric_type": "IP", "params": {"M": 16, "efConstruction": 200}}


def _search_params(kind: str, limit: int) -> dict[str, Any]:
    if kind in ("ivf", "ivf_sq8"):
        return {"nprobe": 64}
    if kind == "hnsw":
        return {"ef": max(256, limit)}  # Milvus needs ef >= k
    return {}


def _is_input_error(error: BaseException) -> bool:
    """A request Milvus refused as malformed (not a connection or server failure)."""
    from pymilvus.exceptions import DataTypeNotMatchException, ParamError

    return isinstance(error, (ParamError, DataTypeNotMatchException))
