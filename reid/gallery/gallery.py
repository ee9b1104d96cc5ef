"""``Gallery``: durable, thread-safe embedding search with metadata and thumbnails.

Durability. SQLite (``gallery.sqlite3``, WAL, ``synchronous=FULL``) is the source of
truth: one row per entry with its normalised float32 embedding, metadata columns,
thumbnail path and creation time. ``add`` writes the batch's thumbnails (fsync'd,
renamed, directory fsync'd), then inserts all its rows in one transaction and returns
only after the commit, so an acknowledged batch survives SIGKILL or power loss and a
batch is all-or-nothing. The FAISS index lives in memory and is rebuilt on open, either
from the rows or from a snapshot (``index.faiss``, written atomically by
``save_snapshot`` and on ``close``) reconciled with the rows: snapshot ids without a row
are removed, rows missing from the snapshot are added. A snapshot is only a cache;
losing or corrupting it costs a rebuild, never data.

Locking. A writer mutex serialises ``add``/``delete``/rebuilds; a readers-writer lock
lets any number of searches run together while index mutations take it exclusively (a
batch becomes visible to searches all at once, after its commit). Deletes remove the
rows and the index entries under the exclusive lock, so a search never returns an id
whose metadata is gone. SQLite: one writer connection behind the mutex, one reader
connection per thread.

Index choice. ``index="flat"``: exact inner product (default below ``auto_threshold``,
200k entries, with ``"auto"``). ``"ivf"``: IVF-Flat trained on the gallery (flat until
``IVF_MIN_TRAIN`` entries exist, retrained when the gallery has grown 4x since training).
``"ivf_sq8"``: the same with 8-bit scalar-quantised vectors (a quarter of the memory;
approximate scores), flat until ``IVF_MIN_TRAIN`` too. ``"hnsw"``: HNSW-Flat (no
training; deletes are tombstones, rebuilt past 20%; ``M`` / ``efConstruction`` chosen by
the gallery size, and the graph rebuilt when the gallery grows into a larger setting,
see ``IndexSettings`` and ``docs/GALLERY.md``). ``"auto"`` switches flat -> IVF when
the gallery crosses the threshold, and IVF -> IVF-SQ8 when its float32 vectors would
pass ``AUTO_COMPRESS_BYTES`` (8 GiB: 1.68M entries at 1280-d). Switching, retraining and
tombstone clean-up are copy-and-swap: the new index is built without blocking searches
or adds (the IVF kinds, and any rebuild from a compressed index, stream the vectors from
SQLite; the others copy them from the index), caught up with the writes made meanwhile,
then swapped in. ``measure_recall`` reports recall@k of the approximate index vs exact.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reid.gallery.index import (
    IVF_KINDS,
    KINDS,
    MAX_APPROX_FETCH,
    IndexSettings,
    VectorIndex,
    blockwise_top,
    rescore,
)
from reid.gallery.locking import ReadWriteLock
from reid.gallery.store import Store
from reid.gallery.types import (
    MAX_ID,
    Entry,
    EntryMetadata,
    EntryPage,
    GalleryClosedError,
    GalleryError,
    Match,
    SearchFilters,
    _short,
)

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "index.faiss"
AUTO_THRESHOLD = 200_000  # "auto": flat below this many entries, IVF from it
AUTO_COMPRESS_BYTES = 8 * 2**30  # "auto": IVF-SQ8 once float32 vectors would pass this
IVF_MIN_TRAIN = 1_000  # "ivf": flat until this many entries exist to train on
SNAPSHOT_MIN_SIZE = 50_000  # close() snapshots a changed flat index from this size on
MAX_PAGE = 10_000  # entries per page of Gallery.page at most
_REQUESTS = (*KINDS, "auto")


class Gallery:
    """A directory of embeddings searchable by cosine similarity. Use ``Gallery.open``."""

    def __init__(
        self,
        store: Store,
        index: VectorIndex,
        requested: str,
        settings: IndexSettings,
        auto_threshold: int,
        background_rebuild: bool,
    ) -> None:
        self._store, self._index = store, index
        self._requested, self._settings = requested, settings
        self._auto_threshold = auto_threshold
        self._background = background_rebuild
        self._writer = threading.RLock()
        self._rw = ReadWriteLock()
        self._rebuild_mutex = threading.Lock()
        self._rebuild_thread: threading.Thread | None = None
        self._closed = False
        self._dirty = False
        self._recall: dict[str, Any] | None = None
        self.dim: int = store.dim
        self.directory: Path = store.directory

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | Path,
        dim: int | None = None,
        *,
        index: str = "auto",
        create: bool = True,
        settings: IndexSettings | None = None,
        auto_threshold: int = AUTO_THRESHOLD,
        background_rebuild: bool = True,
    ) -> Gallery:
        """Open (or create) the gallery in ``directory``; ``dim`` is required to create one.

        ``index``: ``"flat"``, ``"ivf"``, ``"hnsw"`` or ``"auto"``. ``background_rebuild``:
        index switches triggered by ``add``/``delete`` run in a thread (else in the call).
        """
        if index not in _REQUESTS:
            raise GalleryError(f"unknown index {index!r}; expected one of {_REQUESTS}")
        settings = settings or IndexSettings()
        store = Store(directory, dim, create=create)
        try:
            removed = store.remove_orphan_thumbnails()
            if removed:
                log.info("%s: removed %d orphan thumbnail(s)", store.directory, removed)
            kind = _target_kind(index, store.count(), store.dim, auto_threshold)
            vector_index = _load_index(store, kind, settings)
        except BaseException:
            store.close()
            raise
        gallery = cls(store, vector_index, index, settings, auto_threshold, background_rebuild)
        vector_index.enable_gpu()
        return gallery

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __len__(self) -> int:
        self._check_open()
        return len(self._index)

    def close(self) -> None:
        """Wait for a running rebuild, snapshot a changed large index, close the store."""
        if self._closed:
            return
        thread = self._rebuild_thread
        if thread is not None:
            thread.join()
        with self._writer, self._rw.write():
            if self._closed:
                return
            try:
                index = self._index
                if self._dirty and (index.kind != "flat" or len(index) >= SNAPSHOT_MIN_SIZE):
                    index.save(self.directory / SNAPSHOT_NAME)
            finally:
                self._closed = True
                self._store.close()

    def is_available(self) -> bool:
        """True while open: a local gallery has no backend to lose."""
        return not self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise GalleryClosedError(f"gallery {self.directory} is closed")

    # -- writes --------------------------------------------------------------------------

    def add(
        self,
        embeddings: np.ndarray,
        metadata: Sequence[EntryMetadata],
        thumbnails: Sequence[bytes | None] | None = None,
    ) -> np.ndarray:
        """Add a batch durably; return its int64 ids once committed.

        New entries get new, increasing ids. An item whose ``metadata.key`` is already in
        the gallery (or repeats a key earlier in the batch) is not added again: its id is
        the existing entry's, so replaying an add is idempotent.
        """
        self._check_open()
        vectors = _normalised(embeddings, self.dim, "embeddings")
        metas = _metadata_list(metadata, len(vectors))
        thumbs = _thumbnail_list(thumbnails, len(vectors))
        if len(vectors) == 0:
            return np.empty(0, np.int64)
        cameras = np.array([-1 if m.camera is None else m.camera for m in metas], np.int64)
        times = np.array([math.nan if m.timestamp is None else m.timestamp for m in metas])
        with self._writer:
            self._check_open()
            ids, new = self._store.insert(vectors, metas, thumbs)
            if not new.any():
                return ids
            added = ids[new]
            with self._rw.write():
                try:
                    self._index.add(added, vectors[new], cameras[new], times[new])
                except Exception as error:  # committed rows must not stay unsearchable
                    self._reload_index(error, added)
                self._dirty = True
        self._maybe_rebuild()
        return ids

    def _reload_index(self, error: Exception, ids: np.ndarray) -> None:
        """After a failed in-memory update, rebuild the index from the committed rows."""
        log.error("%s: index update failed (%s); reloading from the store", self.directory, error)
        try:
            self._index = _load_index(self._store, self._index.kind, self._settings)
        except Exception as again:
            raise GalleryError(
                f"entries {int(ids[0])}..{int(ids[-1])} are stored durably but the in-memory "
                f"index could not be updated ({again}); reopen the gallery to search them"
            ) from error

    def delete(self, ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """Delete entries; return ``(deleted, missing)`` ids, each sorted."""
        self._check_open()
        wanted = _id_list(ids)
        with self._writer, self._rw.write():
            self._check_open()
            deleted, missing = self._store.delete(wanted)
            self._index.remove(np.asarray(deleted, np.int64))
            self._dirty = self._dirty or bool(deleted)
        self._maybe_rebuild()
        return deleted, missing

    # -- reads ---------------------------------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int | None = 10, filters: SearchFilters | None = None
    ) -> list[list[Match]]:
        """Per query, the ``k`` best passing entries (``k=None``: all), best first."""
        queries = _normalised(queries, self.dim, "queries")
        with self._rw.read():
            self._check_open()
            rankings = self._rank(queries, k, filters)
            wanted = np.unique(np.concatenate([ids for _, ids in rankings] or [[]]))
            rows = self._store.rows(wanted.astype(np.int64).tolist())
        return [
            [
                Match(int(i), float(s), rows[int(i)][0], rows[int(i)][1])
                for s, i in zip(scores, ids, strict=True)
            ]
            for scores, ids in rankings
        ]

    def search_arrays(
        self, queries: np.ndarray, k: int | None = 10, filters: SearchFilters | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Like ``search`` but ``(scores float32[m], ids int64[m])`` per query, no metadata."""
        queries = _normalised(queries, self.dim, "queries")
        with self._rw.read():
            self._check_open()
            return self._rank(queries, k, filters)

    def _rank(
        self, queries: np.ndarray, k: int | None, filters: SearchFilters | None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer))):
            raise GalleryError(f"k must be a positive integer or None, got {k!r}")
        if k is not None and k < 1:
            raise GalleryError(f"k must be >= 1 (or None for the full ranking), got {k}")
        if filters is not None and not isinstance(filters, SearchFilters):
            raise GalleryError(f"filters must be a SearchFilters, got {type(filters).__name__}")
        index = self._index
        want, mask = None if k is None else int(k), index.mask(filters)
        rankings = self._candidates(index, queries, want, mask)
        if filters is not None and filters.min_score is not None:
            rankings = [(s[s >= filters.min_score], i[s >= filters.min_score]) for s, i in rankings]
        return rankings

    def _candidates(
        self, index: VectorIndex, queries: np.ndarray, k: int | None, mask: np.ndarray | None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The index's rankings; a compressed index's with exact scores: ``rerank_factor``
        x k candidates (at most ``MAX_APPROX_FETCH``, at least k) re-scored with SQLite's
        float32 embeddings, or for a full ranking every passing entry scored from SQLite."""
        if not (index.lossy and self._settings.rerank_factor > 0):
            return index.search(queries, k, mask)
        if k is None:
            return self._exact_from_store(index, queries, None, mask)
        fetch = max(k, min(k * self._settings.rerank_factor, MAX_APPROX_FETCH))
        candidates = index.search(queries, fetch, mask)
        return rescore(queries, candidates, k, self._store.embeddings)

    def _exact_from_store(
        self, index: VectorIndex, queries: np.ndarray, k: int | None, mask: np.ndarray | None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Exact top ``k`` (None: all) of the index's passing entries, scored with their
        float32 embeddings read from SQLite by id, a block at a time (disk-bound on a
        large gallery: the SQLite file is read once per block of queries)."""
        allowed = index.ids if mask is None else index.ids[mask]
        want = len(allowed) if k is None else min(k, len(allowed))
        step = max(1, 2**22 // max(1, want))  # bounds the rankings' memory
        rankings: list[tuple[np.ndarray, np.ndarray]] = []
        for start in range(0, len(queries), step):
            blocks = (
                (ids, self._store.embeddings(ids), None)
                for ids in (allowed[s : s + 20_000] for s in range(0, len(allowed), 20_000))
            )
            rankings += blockwise_top(queries[start : start + step], want, blocks)
        return rankings

    def get(self, ids: Sequence[int]) -> list[Entry | None]:
        """The entries of ``ids`` in order (None where an id does not exist)."""
        self._check_open()
        wanted = _id_list(ids)
        with self._rw.read():
            self._check_open()
            rows = self._store.rows(wanted)
        return [Entry(i, rows[i][0], rows[i][1], rows[i][2]) if i in rows else None for i in wanted]

    def page(
        self,
        offset: int = 0,
        limit: int = 50,
        *,
        cameras: Sequence[int] | None = None,
        time_from: float | None = None,
        time_to: float | None = None,
    ) -> EntryPage:
        """The entries ``offset .. offset + limit - 1`` in id order among those passing the
        filters, and how many pass them (``total``); an ``offset`` past the end is an
        empty page. ``cameras``: only these (None: all); time bounds inclusive, an entry
        without a camera or timestamp fails those filters. At most ``MAX_PAGE`` entries
        per page: memory stays bounded whatever the gallery size."""
        self._check_open()
        if isinstance(limit, (int, np.integer)) and not isinstance(limit, bool):
            if limit > MAX_PAGE:
                raise GalleryError(f"limit must be at most {MAX_PAGE}, got {limit}")
            limit = int(limit)
        if isinstance(offset, np.integer):
            offset = int(offset)
        with self._rw.read():
            self._check_open()
            rows, total = self._store.page(offset, limit, cameras, time_from, time_to)
        entries = [Entry(i, meta, thumb, created) for i, (meta, thumb, created) in rows]
        return EntryPage(entries=entries, total=total, offset=offset, limit=limit)

    def embeddings(self, ids: Sequence[int]) -> np.ndarray:
        """float32[len(ids), dim] stored (normalised) embeddings; GalleryError if one is missing."""
        self._check_open()
        wanted = _id_list(ids)
        with self._rw.read():
            self._check_open()
            try:
                return self._store.embeddings(wanted)
            except KeyError:
                raise GalleryError("some of the requested ids do not exist") from None

    def thumbnail_path(self, id: int) -> Path | None:
        """Path of the entry's thumbnail file, or None (no such entry or no thumbnail)."""
        self._check_open()
        with self._rw.read():
            self._check_open()
            return self._store.thumbnail_path(_id_list([id])[0])

    def stats(self) -> dict[str, Any]:
        """Size, dim, index kind and parameters, per-camera counts, time range, thumbnails."""
        with self._rw.read():
            self._check_open()
            index = self._index
            summary = self._store.summary()
            return {
                "size": len(index),
                "dim": self.dim,
                "index": index.kind,
                "index_requested": self._requested,
                "ivf_nlist": index.nlist,
                "ivf_nprobe": index.nprobe,
                "hnsw_ef_search": index.ef_search,
                "hnsw_tombstones": len(index.tombstones) if index.kind == "hnsw" else None,
                "rerank_factor": self._settings.rerank_factor if index.lossy else None,
                "recall": self._recall,
                **summary,
                "directory": str(self.directory),
            }

    # -- index maintenance ---------------------------------------------------------------

    def save_snapshot(self) -> Path:
        """Write the FAISS index to ``index.faiss`` atomically so the next open is fast."""
        with self._writer, self._rw.read():
            self._check_open()
            path = self.directory / SNAPSHOT_NAME
            self._index.save(path)
            self._dirty = False
            return path

    def rebuild_index(self, kind: str | None = None) -> str:
        """Rebuild the index now (as ``kind``, default the configured choice); return the kind."""
        self._check_open()
        if kind is not None and kind not in KINDS:
            raise GalleryError(f"unknown index kind {kind!r}; expected one of {KINDS}")
        with self._rebuild_mutex:
            return self._rebuild(kind or self._wanted_kind())

    def wait_for_rebuild(self, timeout: float | None = None) -> bool:
        """Wait for a background index rebuild; return True when none is running."""
        thread = self._rebuild_thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _wanted_kind(self) -> str:
        return _target_kind(self._requested, len(self._index), self.dim, self._auto_threshold)

    def _needs_rebuild(self) -> bool:
        index, size = self._index, len(self._index)
        if index.kind != self._wanted_kind():
            return True
        if index.is_ivf and size > 4 * index.trained_size:
            return True
        if index.kind != "hnsw":
            return False
        m, ef_construction = self._settings.hnsw_build_for(size)
        grown = m > index.hnsw_m or ef_construction > index.hnsw_ef_construction
        return grown or len(index.tombstones) > 0.2 * max(size, 1)

    def _maybe_rebuild(self) -> None:
        if not self._needs_rebuild() or not self._rebuild_mutex.acquire(blocking=False):
            return
        if not self._background:
            try:
                self._rebuild(self._wanted_kind())
            finally:
                self._rebuild_mutex.release()
            return

        def run() -> None:
            try:
                self._rebuild(self._wanted_kind())
            except Exception:
                log.exception("%s: index rebuild failed; keeping the old index", self.directory)
            finally:
                self._rebuild_mutex.release()

        self._rebuild_thread = threading.Thread(target=run, name="gallery-rebuild", daemon=True)
        self._rebuild_thread.start()

    def _rebuild(self, kind: str) -> str:
        """Copy-and-swap: build from a copy of the vectors, catch up with new writes, swap."""
        with self._rw.read():
            self._check_open()
            old = self._index
            ids, cameras, times = old.ids.copy(), old.cameras.copy(), old.times.copy()
            from_store = kind in IVF_KINDS or old.lossy
            vectors = None if from_store else old.reconstruct(ids)
        if kind in IVF_KINDS and len(ids) == 0:
            kind = "flat"
        if vectors is None:  # stream the exact vectors from SQLite (rows deleted meanwhile
            # are skipped; the catch-up below reconciles both ways)
            new = _build_from_store(self._store, kind, self._settings, ids, cameras, times)
        else:
            new = VectorIndex.build(self.dim, kind, ids, vectors, cameras, times, self._settings)
        del vectors
        with self._writer:
            self._check_open()
            current = self._index  # no write can happen while we hold the writer mutex
            new.remove(np.setdiff1d(ids, current.ids))
            added = np.isin(current.ids, ids, invert=True)
            late = current.ids[added]
            new.add(
                late,
                self._store.embeddings(late.tolist())
                if current.lossy
                else current.reconstruct(late),
                current.cameras[added],
                current.times[added],
            )
            new.enable_gpu()
            with self._rw.write():
                self._index = new
                self._dirty = True
        log.info("%s: index rebuilt as %s (%d entries)", self.directory, kind, len(new))
        return kind


def measure_recall(
    gallery: Gallery, queries: np.ndarray, k: int = 10, filters: SearchFilters | None = None
) -> float:
    """Mean recall@k of the gallery's index vs exact search; also shown in ``stats()``."""
    queries = _normalised(queries, gallery.dim, "queries")
    with gallery._rw.read():
        gallery._check_open()
        index = gallery._index
        mask = index.mask(filters)
        approx = gallery._candidates(index, queries, k, mask)
        if index.lossy:  # against the float32 embeddings, not the codes
            exact = gallery._exact_from_store(index, queries, k, mask)
        else:
            exact = index.exact_search(queries, k, mask)
    hits = [
        len(np.intersect1d(a_ids, e_ids)) / len(e_ids)
        for (_, a_ids), (_, e_ids) in zip(approx, exact, strict=True)
        if len(e_ids)
    ]
    recall = float(np.mean(hits)) if hits else 1.0
    gallery._recall = {"k": k, "recall": recall, "queries": len(queries), "index": index.kind}
    return recall


# -- helpers ----------------------------------------------------------------------------


def _target_kind(requested: str, size: int, dim: int, auto_threshold: int) -> str:
    if requested == "auto":
        if size < auto_threshold:
            return "flat"
        return "ivf_sq8" if size * dim * 4 > AUTO_COMPRESS_BYTES else "ivf"
    if requested in IVF_KINDS and size < IVF_MIN_TRAIN:
        return "flat"
    return requested


def _load_index(store: Store, kind: str, settings: IndexSettings) -> VectorIndex:
    """The index of every row: from the snapshot when it matches ``kind``, else rebuilt."""
    ids, cameras, times = store.columns()
    snapshot = store.directory / SNAPSHOT_NAME
    if snapshot.exists():
        try:
            index, stored = VectorIndex.load(snapshot, store.dim, settings)
        except Exception as error:  # a snapshot is only a cache
            log.warning("%s: ignoring unreadable snapshot (%s)", snapshot, error)
        else:
            if index.kind == kind:
                return _reconcile(index, stored, store, ids, cameras, times)
            log.info("%s: snapshot is %s, want %s; rebuilding", snapshot, index.kind, kind)
    if kind in IVF_KINDS and len(ids):
        return _build_from_store(store, kind, settings, ids, cameras, times)
    index = VectorIndex(store.dim, "flat" if kind in IVF_KINDS else kind, settings, len(ids))
    start = 0
    for chunk_ids, vectors in store.iter_embeddings():
        stop = start + len(chunk_ids)
        index.add(chunk_ids, vectors, cameras[start:stop], times[start:stop])
        start = stop
    return index


def _build_from_store(
    store: Store,
    kind: str,
    settings: IndexSettings,
    ids: np.ndarray,
    cameras: np.ndarray,
    times: np.ndarray,
) -> VectorIndex:
    """A new index over the rows ``ids`` (sorted) with the vectors read from SQLite chunk
    by chunk: IVF kinds train on a sample of them first. Only the index and one chunk are
    in memory (10M x 1280 as IVF-SQ8: ~13.6 GB, where the float32 vectors are 51 GB)."""
    index = VectorIndex(store.dim, kind, settings, expected_size=len(ids))
    lists: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # first id -> (ids, list numbers)
    if index.is_ivf:
        sample = min(len(ids), settings.nlist_for(len(ids)) * settings.ivf_train_per_list)
        rows = np.sort(np.random.default_rng(0).choice(len(ids), sample, replace=False))
        index.train(_existing_embeddings(store, ids[rows]), expected_size=len(ids))
        # A first pass assigns every vector to its list, so each list is allocated once,
        # exactly (lists grown add by add keep growth slack: several GB at 10M x 1280).
        sizes = np.zeros(index.nlist, np.int64)
        for chunk_ids, vectors in store.iter_embeddings():
            wanted = np.isin(chunk_ids, ids)
            assigned = index.assign(vectors[wanted])
            lists[int(chunk_ids[0])] = (chunk_ids[wanted], assigned)
            sizes += np.bincount(assigned, minlength=len(sizes))
        index.reserve(sizes)
    for chunk_ids, vectors in store.iter_embeddings():
        wanted = np.isin(chunk_ids, ids)
        rows = np.searchsorted(ids, chunk_ids[wanted])
        first, assigned = lists.pop(int(chunk_ids[0]), (None, None))
        if first is None or not np.array_equal(first, chunk_ids[wanted]):
            assigned = None  # rows changed between the passes: let FAISS assign again
        index.add(chunk_ids[wanted], vectors[wanted], cameras[rows], times[rows], assigned)
    return index


def _existing_embeddings(store: Store, ids: np.ndarray) -> np.ndarray:
    """Vectors of those of ``ids`` that still have a row (a background rebuild reads while
    deletes go on)."""
    for _ in range(3):
        try:
            return store.embeddings(ids.tolist())
        except KeyError:
            ids = ids[np.isin(ids, store.columns()[0])]
    return store.embeddings(ids.tolist())


def _reconcile(
    index: VectorIndex,
    stored: np.ndarray,
    store: Store,
    ids: np.ndarray,
    cameras: np.ndarray,
    times: np.ndarray,
) -> VectorIndex:
    """Make a loaded snapshot hold exactly the rows: drop extra ids, add missing ones."""
    stored = np.sort(stored)
    index.set_columns(stored, np.full(len(stored), -1), np.full(len(stored), math.nan))
    index.remove(np.setdiff1d(stored, ids))
    # Columns must follow the index's storage order (flat searches scan the storage).
    order = index.storage_ids() if index.kind == "flat" else stored[np.isin(stored, ids)]
    rows = np.searchsorted(ids, order)
    index.set_columns(order, cameras[rows], times[rows])
    missing = np.flatnonzero(np.isin(ids, order, invert=True))
    for start in range(0, len(missing), 20_000):
        rows = missing[start : start + 20_000]
        index.add(ids[rows], store.embeddings(ids[rows].tolist()), cameras[rows], times[rows])
    return index


def _normalised(array: object, dim: int, what: str) -> np.ndarray:
    """float32[N, dim] L2-normalised copy of ``array``; GalleryError on bad input."""
    try:
        matrix = np.asarray(array)
    except (TypeError, ValueError) as error:
        raise GalleryError(f"{what} must be a numeric array: {error}") from None
    if matrix.dtype.kind not in "fiu":
        raise GalleryError(f"{what} must be a numeric array, got dtype {matrix.dtype}")
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise GalleryError(
            f"{what} must have shape [N, {dim}] (gallery dim {dim}), got {list(matrix.shape)}"
        )
    matrix = matrix.astype(np.float64)
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise GalleryError(
            f"{what} contain NaN or infinity in row(s) {np.flatnonzero(bad)[:10].tolist()}"
        )
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    if zero.any():
        raise GalleryError(f"{what} contain all-zero row(s) {np.flatnonzero(zero)[:10].tolist()}")
    return np.ascontiguousarray(matrix / norms, dtype=np.float32)


def _metadata_list(metadata: Sequence[Any], count: int) -> list[EntryMetadata]:
    if isinstance(metadata, (EntryMetadata, Mapping)) or not isinstance(metadata, Sequence):
        raise GalleryError("metadata must be a sequence with one EntryMetadata per embedding")
    if len(metadata) != count:
        raise GalleryError(f"{count} embedding(s) but {len(metadata)} metadata item(s)")
    result = []
    for number, item in enumerate(metadata):
        if isinstance(item, EntryMetadata):
            result.append(item)
        elif isinstance(item, Mapping):
            try:
                result.append(EntryMetadata.from_dict(item))
            except (TypeError, ValueError) as error:
                raise GalleryError(f"metadata[{number}]: {error}") from None
        else:
            raise GalleryError(f"metadata[{number}] must be an EntryMetadata, got {type(item)}")
    return result


def _thumbnail_list(thumbnails: Sequence[bytes | None] | None, count: int) -> list[bytes | None]:
    if thumbnails is None:
        return [None] * count
    if isinstance(thumbnails, (bytes, bytearray)) or len(thumbnails) != count:
        raise GalleryError(f"thumbnails must be a sequence of {count} bytes-or-None item(s)")
    result: list[bytes | None] = []
    for number, item in enumerate(thumbnails):
        if item is not None and not isinstance(item, (bytes, bytearray, memoryview)):
            raise GalleryError(f"thumbnails[{number}] must be bytes or None, got {type(item)}")
        result.append(None if item is None else bytes(item))
    return result


def _id_list(ids: Sequence[int]) -> list[int]:
    """Ids as ints in ``0..MAX_ID`` (an id outside cannot exist, and SQLite cannot bind it)."""
    if isinstance(ids, Sequence) and not isinstance(ids, (str, bytes)):
        for i in ids:
            if isinstance(i, int) and not isinstance(i, bool) and not 0 <= i <= MAX_ID:
                raise GalleryError(f"ids must be between 0 and {MAX_ID}, got {_short(i)}")
    array = np.asarray(ids).reshape(-1)
    if array.size and array.dtype.kind not in "iu":
        raise GalleryError(f"ids must be integers, got dtype {array.dtype}")
    out = [int(i) for i in array]
    for i in out:
        if not 0 <= i <= MAX_ID:
            raise GalleryError(f"ids must be between 0 and {MAX_ID}, got {i}")
    return out
