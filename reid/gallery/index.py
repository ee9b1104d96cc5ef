"""The in-memory vector index: FAISS (exact flat, IVF or HNSW) plus filter columns.

``VectorIndex`` is not thread-safe; ``Gallery`` serialises writes and lets searches run
concurrently under a readers-writer lock (FAISS searches are read-only).

* ``flat``: ``IndexIDMap2(IndexFlatIP)`` holds the vectors and ids (add, remove,
  persistence); searches scan its storage in place with one BLAS matrix product per
  block of entries and apply filters as a mask on the scores. This is exact, and on our
  CPU it was faster than FAISS's own flat search at batch 32 (which also loses its BLAS
  path when given an ID selector).
* ``ivf``: ``IndexIVFFlat`` (inner product, spherical k-means), trained on the vectors it
  is built from, native int64 ids and a hash-table direct map (for removal and
  reconstruction). ``nprobe`` trades recall for speed.
* ``ivf_sq8``: ``IndexIVFScalarQuantizer`` (8-bit scalar quantizer on the residuals, one
  byte per dimension instead of four: 10M x 1280 fits in 12 GB), otherwise exactly like
  ``ivf`` (training, ids, direct map, removal, filters). Its stored vectors are the
  decoded codes, so its scores (and the exact fallback below) are approximations, within
  about 1e-3 of the float32 cosine. ``Gallery`` fetches ``rerank_factor`` x k candidates
  from it and re-scores them with the exact float32 embeddings (``rescore``).
* ``hnsw``: ``IndexIDMap2(IndexHNSWFlat)``. HNSW cannot remove vectors: deleted ids stay in
  the graph as *tombstones* that every search excludes with a selector; ``Gallery``
  rebuilds the index when tombstones exceed a fifth of it. ``M`` and ``efConstruction``
  are fixed when the graph is created, chosen by the expected gallery size
  (``IndexSettings.hnsw_build_for``); ``efSearch`` follows the current size.

Approximate indexes with a filter may find fewer than k passing entries (the graph walk
or the probed lists run dry). Such queries, full rankings (``k=None``), k above 2048 and
filters that at most 4096 entries pass use an exact scan of the passing entries
instead, so filters never lose results. Results are sorted by score descending, ties
by id ascending (a few extra neighbours are fetched so ties at the k-th place resolve
by id).

Filter columns (id, camera, timestamp per live entry; for flat in the storage order of
the FAISS index) are numpy arrays kept beside it, so a filter becomes a boolean mask
without touching SQLite.
GPU: with ``use_gpu`` and ``faiss.get_num_gpus() > 0`` a flat index keeps a GPU copy of
its vectors for unfiltered searches with k <= 2048 (FAISS GPU has no ID selectors).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from reid.gallery.types import GalleryError, SearchFilters

KINDS = ("flat", "ivf", "ivf_sq8", "hnsw")
IVF_KINDS = ("ivf", "ivf_sq8")  # trained IndexIVF variants (same ids, lists, filters)
_TIE_MARGIN = 8  # extra neighbours fetched so ties at the k-th place resolve by id
_GPU_MAX_K = 2048
_EXACT_BELOW = 4096  # filtered approximate searches scan exactly when this few entries pass
MAX_APPROX_FETCH = _GPU_MAX_K - _TIE_MARGIN  # larger fetches scan every entry exactly

Ranking = tuple[np.ndarray, np.ndarray]  # (float32 scores, int64 ids) of one query
Block = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # ids, vectors, keep-mask or None
VectorLookup = Callable[[np.ndarray], np.ndarray]  # sorted unique ids -> float32 vectors
_BLOCK_SCORES = 2**24  # scores computed at once (64 MB of float32)


# HNSW by gallery size: (entries from, M, efConstruction, efSearch); the last row whose
# size the gallery reaches applies. Measured at 1280-d (docs/BENCHMARKS.md, "FAISS HNSW
# build settings by size"): M 16 / efC 40 gave recall@10 0.985 at 100k, 0.936 at 200k
# and 0.600 at 1M (efSearch 128); M 32 / efC 200 gave 1.000 at 100k and 200k (efSearch
# 64-512) for 13x the build time. The wider search from 600k is a margin for the
# unmeasured 1M build (the M 16 graph lost most of its recall between 200k and 1M).
HNSW_LARGE = 150_000  # from this size on, the larger graph
HNSW_HUGE = 600_000  # from this size on, a wider search too
HNSW_TIERS: tuple[tuple[int, int, int, int], ...] = (
    (0, 16, 40, 128),
    (HNSW_LARGE, 32, 200, 128),
    (HNSW_HUGE, 32, 200, 256),
)


@dataclass(frozen=True)
class IndexSettings:
    """Tuning knobs of the approximate indexes (``None``: chosen by gallery size)."""

    hnsw_m: int | None = None  # None: by expected size (HNSW_TIERS)
    hnsw_ef_construction: int | None = None
    hnsw_ef_search: int | None = None  # None: by current size
    ivf_nlist: int | None = None  # None: about 2 sqrt(n), at most 4096
    ivf_nprobe: int | None = None  # None: nlist / 16, at least 16
    ivf_train_per_list: int = 40  # training vectors per list (a sample of the gallery)
    # compressed (ivf_sq8) indexes: candidates fetched per wanted result, then re-scored
    # exactly with the float32 embeddings of SQLite (``Gallery``); 0 returns code scores
    rerank_factor: int = 4
    use_gpu: bool = True  # only used when faiss sees a GPU

    def hnsw_build_for(self, n: int) -> tuple[int, int]:
        """HNSW ``(M, efConstruction)`` for a graph expected to hold ``n`` entries."""
        tier = _tier(n)
        m = self.hnsw_m if self.hnsw_m is not None else tier[1]
        ef = self.hnsw_ef_construction if self.hnsw_ef_construction is not None else tier[2]
        return m, ef

    def hnsw_ef_search_for(self, n: int) -> int:
        """HNSW ``efSearch`` for a graph holding ``n`` entries."""
        return self.hnsw_ef_search if self.hnsw_ef_search is not None else _tier(n)[3]

    def nlist_for(self, n: int) -> int:
        """Number of IVF lists for ``n`` training vectors."""
        if self.ivf_nlist is not None:
            return max(1, min(self.ivf_nlist, n))
        return max(1, min(int(2 * math.sqrt(n)), 4096, n // 39 or 1))

    def nprobe_for(self, nlist: int) -> int:
        """Number of lists probed per query."""
        if self.ivf_nprobe is not None:
            return max(1, min(self.ivf_nprobe, nlist))
        return min(nlist, max(16, nlist // 16))


def _tier(n: int) -> tuple[int, int, int, int]:
    return [tier for tier in HNSW_TIERS if n >= tier[0]][-1]


class VectorIndex:
    """Vectors of the live entries in a FAISS index, with camera/time columns for filters.

    ``expected_size``: the number of entries the index is built for; it chooses HNSW's
    ``M`` and ``efConstruction`` (``IndexSettings.hnsw_build_for``).
    """

    def __init__(
        self,
        dim: int,
        kind: str,
        settings: IndexSettings | None = None,
        expected_size: int = 0,
    ) -> None:
        if kind not in KINDS:
            raise GalleryError(f"unknown index kind {kind!r}; expected one of {KINDS}")
        self.dim, self.kind = dim, kind
        self.settings = settings or IndexSettings()
        self._faiss: faiss.Index | None = None
        self._nprobe = 1
        self._ef_search: int | None = None  # None: settings.hnsw_ef_search_for(len(self))
        self.hnsw_m, self.hnsw_ef_construction = self.settings.hnsw_build_for(expected_size)
        self.ids = np.empty(0, np.int64)
        self.cameras = np.empty(0, np.int64)
        self.times = np.empty(0, np.float64)
        self.tombstones: set[int] = set()
        self.trained_size = 0
        self._gpu: _GpuMirror | None = None
        if kind not in IVF_KINDS:
            self._faiss = self._new_idmap()

    @property
    def is_ivf(self) -> bool:
        """True for the trained IVF kinds (``ivf``, ``ivf_sq8``)."""
        return self.kind in IVF_KINDS

    @property
    def lossy(self) -> bool:
        """True when the stored vectors are compressed (``reconstruct`` is approximate)."""
        return self.kind == "ivf_sq8"

    def _new_idmap(self) -> faiss.Index:
        if self.kind == "flat":
            inner = faiss.IndexFlatIP(self.dim)
        else:
            inner = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.hnsw_ef_construction
        index = faiss.IndexIDMap2(inner)
        index.own_fields = True
        inner.this.disown()
        return index

    # -- building ----------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        dim: int,
        kind: str,
        ids: np.ndarray,
        vectors: np.ndarray,
        cameras: np.ndarray,
        times: np.ndarray,
        settings: IndexSettings | None = None,
    ) -> VectorIndex:
        """A new index over the given entries (IVF is trained on a sample of them)."""
        index = cls(dim, kind, settings, expected_size=len(ids))
        if kind in IVF_KINDS:
            index.train(vectors)
        index.add(ids, vectors, cameras, times)
        return index

    def train(self, vectors: np.ndarray, expected_size: int | None = None) -> None:
        """Create and train an empty IVF index on (a sample of) ``vectors``.

        ``expected_size`` (default ``len(vectors)``) sets the number of lists.
        """
        if not self.is_ivf:
            raise GalleryError(f"a {self.kind} index needs no training")
        n = len(vectors)
        if n == 0:
            raise GalleryError("an IVF index needs vectors to train on")
        nlist = min(self.settings.nlist_for(expected_size or n), n)
        quantizer = faiss.IndexFlatIP(self.dim)
        if self.kind == "ivf_sq8":
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, self.dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                faiss.METRIC_INNER_PRODUCT, True,
            )  # fmt: skip
        else:
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()
        index.cp.spherical = True
        index.cp.niter = 10
        sample = min(n, nlist * self.settings.ivf_train_per_list)
        rows = np.random.default_rng(0).choice(n, sample, replace=False) if sample < n else None
        train = vectors if rows is None else vectors[np.sort(rows)]
        index.train(np.ascontiguousarray(train, dtype=np.float32))
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        self._faiss, self._nprobe = index, self.settings.nprobe_for(nlist)
        self.trained_size = expected_size or n

    @property
    def nlist(self) -> int | None:
        """Number of IVF lists (None for other kinds)."""
        return int(self._faiss.nlist) if self.is_ivf else None

    @property
    def nprobe(self) -> int | None:
        """Lists probed per IVF query (None for other kinds)."""
        return self._nprobe if self.is_ivf else None

    def tune(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the search-time recall/speed knobs (IVF ``nprobe``, HNSW ``efSearch``)."""
        if nprobe is not None:
            self._nprobe = max(1, min(int(nprobe), self.nlist or 1))
        if ef_search is not None:
            self._ef_search = max(1, int(ef_search))

    @property
    def ef_search(self) -> int | None:
        """HNSW ``efSearch`` (None for other kinds): tuned, else by the current size."""
        if self.kind != "hnsw":
            return None
        if self._ef_search is not None:
            return self._ef_search
        return self.settings.hnsw_ef_search_for(len(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """IVF: the list number of each vector (what ``add`` would compute)."""
        if not self.is_ivf or self._faiss is None:
            raise GalleryError(f"a {self.kind} index has no lists to assign to")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        _, lists = self._faiss.quantizer.search(vectors, 1)
        return np.ascontiguousarray(lists[:, 0], dtype=np.int64)

    def reserve(self, list_sizes: np.ndarray) -> None:
        """IVF: allocate each list's storage for ``list_sizes[i]`` more entries at once.

        Lists grown add by add keep std::vector growth slack (measured 1.8x the codes
        over 20 appends); reserved first, they are exactly sized, as after a snapshot
        load. Use with ``add(..., lists=assign(vectors))`` for the same vectors.
        """
        if not self.is_ivf or self._faiss is None:
            raise GalleryError(f"a {self.kind} index has no lists to reserve")
        lists = faiss.downcast_InvertedLists(self._faiss.invlists)
        if not isinstance(lists, faiss.ArrayInvertedLists):
            return
        for number in np.flatnonzero(list_sizes):
            size = int(lists.list_size(int(number)))
            lists.resize(int(number), size + int(list_sizes[number]))  # allocates exactly
            lists.resize(int(number), size)  # keeps the capacity

    def add(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        cameras: np.ndarray,
        times: np.ndarray,
        lists: np.ndarray | None = None,
    ) -> None:
        """Add entries (ids new, vectors L2-normalised float32); IVF ``lists``: their
        list numbers from ``assign``, not computed again."""
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self._faiss is None:
            raise GalleryError("IVF index used before training")
        if lists is not None and self.is_ivf:
            lists = np.ascontiguousarray(lists, dtype=np.int64)
            self._faiss.add_core(
                len(ids), faiss.swig_ptr(vectors), faiss.swig_ptr(ids), faiss.swig_ptr(lists)
            )
        else:
            self._faiss.add_with_ids(vectors, ids)
        if self._gpu is not None:
            self._gpu.add(vectors, ids)
        self.ids = np.concatenate([self.ids, ids])
        self.cameras = np.concatenate([self.cameras, np.asarray(cameras, np.int64)])
        self.times = np.concatenate([self.times, np.asarray(times, np.float64)])
        if len(self.ids) > len(ids) and self.ids[-len(ids) - 1] > ids[0]:
            order = np.argsort(self.ids, kind="stable")
            self.ids, self.cameras, self.times = (
                self.ids[order],
                self.cameras[order],
                self.times[order],
            )

    def remove(self, ids: np.ndarray) -> None:
        """Remove entries (HNSW keeps them as tombstones that searches skip)."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        ids = ids[np.isin(ids, self.ids)]
        if len(ids) == 0:
            return
        if self.kind == "hnsw":
            self.tombstones.update(int(i) for i in ids)
        else:
            ids = np.ascontiguousarray(ids)
            # IVF's hash-table direct map only accepts an IDSelectorArray.
            self._faiss.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids)))
            if self._gpu is not None:
                self._gpu.reset_from(self._faiss)
        keep = ~np.isin(self.ids, ids)
        self.ids, self.cameras, self.times = self.ids[keep], self.cameras[keep], self.times[keep]

    def enable_gpu(self) -> bool:
        """Mirror a flat index on the GPU when FAISS sees one; return whether it did."""
        if self.kind != "flat" or not self.settings.use_gpu or _num_gpus() == 0:
            return False
        self._gpu = _GpuMirror(self.dim)
        self._gpu.reset_from(self._faiss)
        return True

    # -- filters and search ------------------------------------------------------------

    def mask(self, filters: SearchFilters | None) -> np.ndarray | None:
        """Boolean mask over ``self.ids`` of entries passing ``filters`` (None: all pass)."""
        if filters is None or filters.selects_all:
            return None
        keep = np.ones(len(self.ids), dtype=bool)
        if filters.exclude_cameras:
            keep &= ~np.isin(self.cameras, list(filters.exclude_cameras))
        if filters.include_cameras is not None:
            keep &= np.isin(self.cameras, list(filters.include_cameras)) & (self.cameras >= 0)
        if filters.time_from is not None:
            keep &= self.times >= filters.time_from  # NaN compares False
        if filters.time_to is not None:
            keep &= self.times <= filters.time_to
        return keep

    def search(self, queries: np.ndarray, k: int | None, mask: np.ndarray | None) -> list[Ranking]:
        """Top ``k`` (None: all) passing entries per L2-normalised query."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        count = len(self.ids) if mask is None else int(mask.sum())
        if count == 0:
            return [(np.empty(0, np.float32), np.empty(0, np.int64)) for _ in queries]
        want = count if k is None else min(k, count)
        results: list[Ranking] = []
        step = max(1, 2**22 // count) if k is None else 1024  # bounds a full ranking's memory
        for start in range(0, len(queries), step):
            results.extend(self._search(queries[start : start + step], want, k is None, mask))
        return results

    def _search(
        self, queries: np.ndarray, want: int, everything: bool, mask: np.ndarray | None
    ) -> list[Ranking]:
        fetch = min(want + _TIE_MARGIN, len(self.ids))
        if self.kind == "flat":
            if self._gpu is not None and mask is None and fetch <= _GPU_MAX_K:
                scores, labels = self._gpu.search(queries, fetch)
                return [_sorted_top(s, i, want) for s, i in zip(scores, labels, strict=True)]
            return blockwise_top(queries, want, self._flat_blocks(len(queries), mask))
        allowed = self.ids if mask is None else self.ids[mask]
        small_filter = mask is not None and len(allowed) <= _EXACT_BELOW
        if everything or small_filter or fetch > _GPU_MAX_K:  # FAISS is slow for a huge k
            return self._exact(queries, want, allowed)
        needs_selector = mask is not None or bool(self.tombstones)
        params = self._params(allowed if needs_selector else None)
        scores, labels = self._faiss.search(queries, fetch, params=params)
        results: list[Ranking | None] = []
        for row in range(len(queries)):
            valid = labels[row] >= 0
            found = valid.sum() >= want
            results.append(
                _sorted_top(scores[row][valid], labels[row][valid], want) if found else None
            )
        short = [row for row, ranking in enumerate(results) if ranking is None]
        if short:  # the filtered walk ran dry: scan the passing entries exactly
            for row, ranking in zip(short, self._exact(queries[short], want, allowed), strict=True):
                results[row] = ranking
        return results  # type: ignore[return-value]

    def _flat_blocks(self, queries: int, mask: np.ndarray | None) -> Iterator[Block]:
        """Blocks of the flat index's own storage (no copy), in storage order = column order."""
        flat = faiss.downcast_index(self._faiss.index)
        stored = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * self.dim)
        stored = stored.reshape(flat.ntotal, self.dim)
        step = max(4096, _BLOCK_SCORES // max(1, queries))
        for start in range(0, len(stored), step):
            keep = None if mask is None else mask[start : start + step]
            yield self.ids[start : start + step], stored[start : start + step], keep

    def exact_search(
        self, queries: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> list[Ranking]:
        """Exact top ``k`` passing entries, whatever the kind (the reference for recall)."""
        allowed = self.ids if mask is None else self.ids[mask]
        if len(allowed) == 0:
            return [(np.empty(0, np.float32), np.empty(0, np.int64)) for _ in queries]
        if self.kind == "flat":
            return self.search(queries, k, mask)
        return self._exact(np.ascontiguousarray(queries, np.float32), k, allowed)

    def _params(self, allowed: np.ndarray | None) -> faiss.SearchParameters:
        if self.is_ivf:
            params = faiss.SearchParametersIVF()
            params.nprobe = self._nprobe
        elif self.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = self.ef_search
        else:
            params = faiss.SearchParameters()
        if allowed is not None:
            bits = np.zeros(int(allowed.max()) + 1, dtype=bool)
            bits[allowed] = True
            packed = np.packbits(bits, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(packed), faiss.swig_ptr(packed))
            selector.packed_ref = packed  # keep the buffer alive as long as the selector
            params.sel = selector
            params.selector_ref = selector
        return params

    def _exact(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> list[Ranking]:
        """Brute-force top ``k`` over the ``allowed`` ids (vectors reconstructed in blocks)."""
        step = max(4096, _BLOCK_SCORES // max(1, len(queries)))
        blocks = (
            (allowed[s : s + step], self.reconstruct(allowed[s : s + step]), None)
            for s in range(0, len(allowed), step)
        )
        return blockwise_top(queries, min(k, len(allowed)), blocks)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """float32[len(ids), dim] stored vectors of the given ids."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return np.empty((0, self.dim), np.float32)
        return self._faiss.reconstruct_batch(ids)

    # -- persistence -------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the FAISS index atomically (temporary file, fsync, rename, fsync dir)."""
        tmp = path.with_name(f".{path.name}.tmp")
        faiss.write_index(self._faiss, str(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @classmethod
    def load(
        cls, path: Path, dim: int, settings: IndexSettings | None = None
    ) -> tuple[VectorIndex, np.ndarray]:
        """Read a saved index; return it (without columns) and the ids stored in it."""
        raw = faiss.read_index(str(path))
        if raw.d != dim:
            raise GalleryError(f"snapshot {path} has dim {raw.d}, gallery has {dim}")
        if isinstance(raw, faiss.IndexIVFFlat | faiss.IndexIVFScalarQuantizer):
            kind = "ivf" if isinstance(raw, faiss.IndexIVFFlat) else "ivf_sq8"
            if kind == "ivf_sq8" and raw.sq.qtype != faiss.ScalarQuantizer.QT_8bit:
                raise GalleryError(f"snapshot {path}: unsupported scalar quantizer")
            index = cls(dim, kind, settings)
            raw.set_direct_map_type(faiss.DirectMap.Hashtable)
            index._faiss, index._nprobe = raw, index.settings.nprobe_for(raw.nlist)
            index.trained_size = int(raw.ntotal)
            return index, _ivf_ids(raw)
        if isinstance(raw, faiss.IndexIDMap2):
            inner = faiss.downcast_index(raw.index)
            kind = "flat" if isinstance(inner, faiss.IndexFlatIP) else "hnsw"
            if kind == "hnsw" and not isinstance(inner, faiss.IndexHNSWFlat):
                raise GalleryError(f"snapshot {path}: unsupported index {type(inner).__name__}")
            index = cls(dim, kind, settings)
            index._faiss = raw
            if kind == "hnsw":  # the graph's own parameters, not today's settings
                index.hnsw_m = int(inner.hnsw.nb_neighbors(1))
                index.hnsw_ef_construction = int(inner.hnsw.efConstruction)
            return index, faiss.vector_to_array(raw.id_map).astype(np.int64)
        raise GalleryError(f"snapshot {path}: unsupported index {type(raw).__name__}")

    def set_columns(self, ids: np.ndarray, cameras: np.ndarray, times: np.ndarray) -> None:
        """Replace the filter columns after ``load`` (flat: in ``storage_ids`` order)."""
        self.ids, self.cameras, self.times = ids, cameras, times

    def storage_ids(self) -> np.ndarray:
        """Ids in the FAISS index, in storage order (IVF: sorted)."""
        if self.is_ivf:
            return _ivf_ids(self._faiss)
        return faiss.vector_to_array(self._faiss.id_map).astype(np.int64)

    def memory_bytes(self) -> int:
        """Estimated memory of the FAISS index: vectors, ids and graph links or centroids."""
        n, d = int(self._faiss.ntotal), self.dim
        vectors_and_ids = n * (4 * d + 8)
        if self.kind == "flat":
            return vectors_and_ids + 16 * n  # + id -> position map
        if self.kind == "ivf":
            return vectors_and_ids + 16 * n + 4 * d * self._faiss.nlist  # + direct map, centroids
        if self.kind == "ivf_sq8":  # one byte per dimension; + SQ ranges
            return n * (d + 8) + 16 * n + 4 * d * self._faiss.nlist + 8 * d
        hnsw = faiss.downcast_index(self._faiss.index).hnsw
        return vectors_and_ids + 16 * n + 4 * int(hnsw.neighbors.size()) + 13 * n


def rescore(
    queries: np.ndarray,
    rankings: Sequence[Ranking],
    k: int,
    vectors: VectorLookup,
    max_rows: int = 1 << 14,
) -> list[Ranking]:
    """The exact top ``k`` of each query's candidates: their ids re-scored with the exact
    vectors (``vectors(ids)`` for sorted unique ids) and sorted like every ranking. The
    vectors are fetched for a group of queries at a time, about ``max_rows`` at once."""
    results: list[Ranking] = []
    start = 0
    while start < len(rankings):
        stop, rows = start + 1, len(rankings[start][1])
        while stop < len(rankings) and rows + len(rankings[stop][1]) <= max_rows:
            rows += len(rankings[stop][1])
            stop += 1
        group = rankings[start:stop]
        candidates = np.unique(np.concatenate([ids for _, ids in group]).astype(np.int64))
        exact = vectors(candidates) if len(candidates) else None
        for query, (_, ids) in zip(queries[start:stop], group, strict=True):
            if exact is None or len(ids) == 0:
                results.append((np.empty(0, np.float32), np.empty(0, np.int64)))
                continue
            found = exact[np.searchsorted(candidates, ids)] @ query
            results.append(_sorted_top(found, ids.astype(np.int64), k))
        start = stop
    return results


def blockwise_top(queries: np.ndarray, k: int, blocks: Iterable[Block]) -> list[Ranking]:
    """Exact top ``k`` per query over blocks of (ids, vectors, optional keep-mask)."""
    found_scores, found_ids = [], []
    for ids, vectors, keep in blocks:
        scores = queries @ vectors.T
        if keep is not None:
            scores, ids = scores[:, keep], ids[keep]
        keep_count = k + _TIE_MARGIN
        if keep_count < scores.shape[1]:
            best = np.argpartition(-scores, keep_count - 1, axis=1)[:, :keep_count]
            found_scores.append(np.take_along_axis(scores, best, axis=1))
            found_ids.append(ids[best])
        elif scores.shape[1]:
            found_scores.append(scores)
            found_ids.append(np.broadcast_to(ids, scores.shape))
    if not found_scores:
        return [(np.empty(0, np.float32), np.empty(0, np.int64)) for _ in queries]
    scores, ids = np.concatenate(found_scores, axis=1), np.concatenate(found_ids, axis=1)
    return [_sorted_top(s, i, k) for s, i in zip(scores, ids, strict=True)]


def _sorted_top(scores: np.ndarray, ids: np.ndarray, k: int) -> Ranking:
    """The ``k`` best by score descending, ties by id ascending (every tie considered)."""
    if k < len(scores):
        cut = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= cut
        scores, ids = scores[keep], ids[keep]
    order = np.lexsort((ids, -scores))[:k]
    return scores[order].astype(np.float32), ids[order].astype(np.int64)


def _ivf_ids(index: faiss.IndexIVF) -> np.ndarray:
    lists = index.invlists
    parts = []
    for number in range(index.nlist):
        size = lists.list_size(number)
        if size:
            parts.append(faiss.rev_swig_ptr(lists.get_ids(number), size).copy())
    return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)


def _num_gpus() -> int:
    try:
        return faiss.get_num_gpus()
    except AttributeError:  # CPU-only build without the symbol
        return 0


class _GpuMirror:
    """A GPU copy of a flat index's vectors (positions mapped back to ids on the CPU)."""

    def __init__(self, dim: int) -> None:  # pragma: no cover - needs faiss-gpu and a GPU
        self._resources = faiss.StandardGpuResources()
        self._index = faiss.GpuIndexFlatIP(self._resources, dim)
        self._ids = np.empty(0, np.int64)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:  # pragma: no cover
        self._index.add(vectors)
        self._ids = np.concatenate([self._ids, ids])

    def reset_from(self, cpu: faiss.IndexIDMap2) -> None:  # pragma: no cover
        self._index.reset()
        flat = faiss.downcast_index(cpu.index)
        vectors = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(-1, flat.d)
        self._index.add(np.ascontiguousarray(vectors))
        self._ids = faiss.vector_to_array(cpu.id_map).astype(np.int64)

    def search(
        self, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        scores, positions = self._index.search(queries, k)
        labels = np.where(positions >= 0, self._ids[np.maximum(positions, 0)], -1)
        return scores, labels
