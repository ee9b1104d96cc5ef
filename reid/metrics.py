"""Ranking metrics for person re-ID: CMC, mAP and mINP under the Market-1501 protocol.

Protocol (the one every re-ID paper reports), for each query:

* gallery images of the **same identity seen by the same camera** are removed (finding a
  person again in the camera that just saw them is trivial);
* **junk** gallery images (pid ``-1``) are removed for every query;
* **distractors** (pid ``0``) stay in the ranking as negatives for every query. A
  distractor is never "the same person" as anything, so a query with pid ``0`` (or
  ``-1``) has no valid match;
* the gallery is ranked by ascending distance, ties broken by gallery index (a stable
  sort), and a query left without any valid match is **skipped** and counted in
  ``num_skipped_queries``.

On the remaining ranking (1-based ranks after removal):

* CMC rank-k = fraction of valid queries whose first match is within the top k;
* AP = mean over the query's matches of ``(matches so far) / rank``; mAP = mean AP;
* INP = ``(number of matches) / (rank of the last match)``; mINP = mean INP
  (Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook").

``cmc`` always has ``max_rank`` entries, even when ``max_rank`` exceeds the gallery:
rank-k for such k is simply defined like any other (every valid query has its first
match within the gallery, so those entries equal the last reachable value, 1.0).

Implementation. A full per-query ``argsort`` is not needed: only the positions of the
query's own-identity gallery items matter (its matches and its removed same-camera
items). Each chunk of rows is sorted by value (``np.sort``, SIMD-accelerated), each
such item's position is found by a vectorised binary search in its sorted row (plus an
exact count of equal values with a smaller gallery index when there are ties), and
CMC/AP/INP follow from these few positions. The result is identical to the stable
per-query loop (see ``tests/test_metrics.py``) and over 10x faster on Market-size data
(see ``docs/BENCHMARKS.md``).

:func:`evaluate_features` computes the distances itself, one chunk of queries at a
time, so a Market-size evaluation (3,368 x 15,913, dim 2,048) needs a few hundred MB
beyond the features instead of a full distance matrix; optional k-reciprocal
re-ranking comes from :mod:`reid.rerank`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from reid.data.base import DISTRACTOR_PID, JUNK_PID
from reid.rerank import RerankParams, l2_normalize, re_rank

Metric = Literal["cosine", "euclidean", "sqeuclidean"]
METRICS: tuple[str, ...] = ("cosine", "euclidean", "sqeuclidean")

DEFAULT_RANK_CHUNK = 512
DEFAULT_FEATURE_CHUNK = 1024
_TIE_BATCH_CELLS = 1 << 22  # elements compared at once when resolving ties

__all__ = [
    "METRICS",
    "QueryScores",
    "RankResult",
    "add_camera_prior",
    "evaluate_features",
    "evaluate_rank",
    "pairwise_distance",
    "per_query_scores",
]


# ----------------------------------------------------------------------------- result


@dataclass(frozen=True, eq=False)
class RankResult:
    """CMC / mAP / mINP of one evaluation; all scores are fractions in [0, 1]."""

    cmc: np.ndarray
    mAP: float  # noqa: N815 - the name every re-ID paper uses
    mINP: float  # noqa: N815
    num_valid_queries: int
    num_skipped_queries: int

    def rank(self, k: int) -> float:
        """Rank-k accuracy (``cmc[k - 1]``), for ``1 <= k <= len(cmc)``."""
        if not 1 <= k <= len(self.cmc):
            raise ValueError(f"rank k must be in [1, {len(self.cmc)}], got {k}")
        return float(self.cmc[k - 1])

    def as_dict(self) -> dict[str, float | int]:
        """``mAP``, ``mINP``, ``rank1/5/10/20`` (those within ``max_rank``) and the counts."""
        out: dict[str, float | int] = {"mAP": self.mAP, "mINP": self.mINP}
        for k in (1, 5, 10, 20):
            if k <= len(self.cmc):
                out[f"rank{k}"] = self.rank(k)
        out["num_valid_queries"] = self.num_valid_queries
        out["num_skipped_queries"] = self.num_skipped_queries
        return out

    def format_table(self, ranks: tuple[int, ...] = (1, 5, 10, 20)) -> str:
        """A small plain-text table in percent, as printed by re-ID papers."""
        from reid.tables import render_table

        ranks = tuple(k for k in ranks if k <= len(self.cmc))
        header = ["mAP", "mINP", *(f"R{k}" for k in ranks)]
        values = [self.mAP, self.mINP, *(self.rank(k) for k in ranks)]
        table = render_table(header, [[f"{100 * v:.2f}" for v in values]])
        counts = f"({self.num_valid_queries} valid queries, {self.num_skipped_queries} skipped)"
        return f"{table}\n{counts}"


# ----------------------------------------------------------------------------- public API


def evaluate_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    *,
    chunk_size: int = DEFAULT_RANK_CHUNK,
    inf_is_missed: bool = False,
) -> RankResult:
    """CMC, mAP and mINP of a ``[Q, G]`` distance matrix (Market-1501 protocol, see module doc).

    ``inf_is_missed``: a ``+inf`` distance marks an entry that was **not retrieved**
    (a ranking truncated to its top k, as a search API returns): a match there adds
    nothing to AP (still counted in its denominator, so AP@k is a lower bound of AP),
    INP is 0 unless every match was retrieved, and the query counts in CMC only from
    its first retrieved match. With every distance finite it changes nothing.

    Raises ``ValueError`` on shape mismatches, NaN distances, a bad ``max_rank`` and when
    no query has a valid match (instead of returning NaN).
    """
    distmat = _check_distmat(distmat)
    q_pids, q_camids, g_pids, g_camids = _check_ids(
        distmat.shape, q_pids, q_camids, g_pids, g_camids
    )
    _check_positive("max_rank", max_rank)
    _check_positive("chunk_size", chunk_size)
    gallery = _Gallery.build(g_pids, g_camids)
    acc = _Accumulator(max_rank)
    for rows in _chunks(len(q_pids), chunk_size):
        acc.add(
            _evaluate_block(distmat[rows], q_pids[rows], q_camids[rows], gallery, inf_is_missed)
        )
    return acc.result()


@dataclass(frozen=True, eq=False)
class QueryScores:
    """Per-query results of :func:`per_query_scores`; ``NaN`` for a skipped query.

    ``first_rank`` is the 1-based rank of the first match after the protocol's removals
    (``inf`` when it was not retrieved); ``ap`` and ``inp`` are the query's AP and INP,
    whose means over the valid queries are the mAP and mINP of :func:`evaluate_rank`.
    """

    ap: np.ndarray
    inp: np.ndarray
    first_rank: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """Bool per query: it had a valid match (it counts in the metrics)."""
        return ~np.isnan(self.ap)


def per_query_scores(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    *,
    chunk_size: int = DEFAULT_RANK_CHUNK,
    inf_is_missed: bool = False,
) -> QueryScores:
    """AP, INP and first-match rank of every query (same protocol as :func:`evaluate_rank`)."""
    distmat = _check_distmat(distmat)
    q_pids, q_camids, g_pids, g_camids = _check_ids(
        distmat.shape, q_pids, q_camids, g_pids, g_camids
    )
    _check_positive("chunk_size", chunk_size)
    gallery = _Gallery.build(g_pids, g_camids)
    out = np.full((3, len(q_pids)), np.nan)
    for rows in _chunks(len(q_pids), chunk_size):
        stats = _evaluate_block(distmat[rows], q_pids[rows], q_camids[rows], gallery, inf_is_missed)
        index = np.arange(rows.start, rows.stop)[stats.valid]
        out[0, index], out[1, index], out[2, index] = stats.ap, stats.inp, stats.first_rank
    return QueryScores(ap=out[0], inp=out[1], first_rank=out[2])


def evaluate_features(
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    metric: Metric = "cosine",
    max_rank: int = 50,
    chunk_size: int = DEFAULT_FEATURE_CHUNK,
    rerank: RerankParams | None = None,
    camera_prior: float = 0.0,
) -> RankResult:
    """Evaluate query/gallery features directly (distances per :func:`pairwise_distance`).

    ``camera_prior``: a weight ``w >= 0`` added to the distance of every query-gallery
    pair seen by the same camera (:func:`add_camera_prior`; after re-ranking, when
    asked), as the selective-contrast reference evaluates (``w`` = 0.05); 0 leaves the
    distances alone.

    Without re-ranking, distances are computed for ``chunk_size`` queries at a time and
    evaluated right away, so memory beyond the inputs is about
    ``G * D * 4`` bytes (a float32 copy of the gallery) plus ``4 * chunk_size * G * 4``
    bytes (distance block and its sorted copy): ~0.4 GB for Market-1501 with dim 2,048
    and the default chunk of 1,024 queries.

    With ``rerank``, the ``[Q, G]`` re-ranked distance matrix of :func:`reid.rerank.re_rank`
    is built first (``Q * G * 4`` bytes, plus that function's own working memory) and
    then evaluated. Re-ranking uses the same ``metric`` family ("cosine" re-ranks on
    L2-normalised features, the other two on the raw ones).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    q_feats, g_feats = _check_features(q_feats, g_feats)
    q_pids, q_camids, g_pids, g_camids = _check_ids(
        (len(q_feats), len(g_feats)), q_pids, q_camids, g_pids, g_camids
    )
    _check_positive("max_rank", max_rank)
    _check_positive("chunk_size", chunk_size)
    _check_camera_prior(camera_prior)
    if rerank is not None:
        distmat = re_rank(
            q_feats,
            g_feats,
            k1=rerank.k1,
            k2=rerank.k2,
            lambda_value=rerank.lambda_value,
            normalize=metric == "cosine",
        )
        distmat = add_camera_prior(distmat, q_camids, g_camids, camera_prior)
        return evaluate_rank(
            distmat, q_pids, g_pids, q_camids, g_camids, max_rank, chunk_size=chunk_size
        )
    gallery = _Gallery.build(g_pids, g_camids)
    g_side = _FeatureSide.of(g_feats, metric)
    acc = _Accumulator(max_rank)
    for rows in _chunks(len(q_feats), chunk_size):
        block = _FeatureSide.of(q_feats[rows], metric).distance_to(g_side, metric)
        block = add_camera_prior(block, q_camids[rows], g_camids, camera_prior)
        acc.add(_evaluate_block(block, q_pids[rows], q_camids[rows], gallery))
    return acc.result()


def add_camera_prior(
    distmat: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray, weight: float
) -> np.ndarray:
    """``distmat + weight * [q_camid == g_camid]`` (in place for a float array; returned).

    The camera prior of the selective-contrast reference evaluation (Pang et al.,
    "Fully Unsupervised Person Re-Identification via Selective Contrastive Learning"):
    same-camera gallery items are pushed down the ranking. It depends on the cameras,
    not on the embeddings, so it lives here and not in an encoder. ``weight`` 0
    returns ``distmat`` unchanged.
    """
    _check_camera_prior(weight)
    if not weight:
        return distmat
    if not np.issubdtype(np.asarray(distmat).dtype, np.floating):
        distmat = np.asarray(distmat, dtype=np.float32)
    same = np.asarray(q_camids)[:, None] == np.asarray(g_camids)[None, :]
    distmat += np.asarray(weight, dtype=distmat.dtype) * same
    return distmat


def pairwise_distance(a: np.ndarray, b: np.ndarray, metric: Metric = "cosine") -> np.ndarray:
    """``[len(a), len(b)]`` float32 distances between two feature sets.

    * ``"cosine"``: ``1 - cos`` of the L2-normalised features, in [0, 2]; a zero vector
      has cosine 0 to everything (distance 1), never NaN.
    * ``"euclidean"``: plain (not squared) Euclidean distance of the raw features.
    * ``"sqeuclidean"``: squared Euclidean distance (same ranking as ``"euclidean"``).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    a, b = _check_features(a, b)
    return _FeatureSide.of(a, metric).distance_to(_FeatureSide.of(b, metric), metric)


# ----------------------------------------------------------------------------- validation


def truncate_distmat(distmat: np.ndarray, k: int) -> np.ndarray:
    """Keep each row's ``k`` smallest distances (ties by index), set the rest to ``+inf``.

    What a search API answering its top ``k`` reveals, applied to offline distances;
    evaluate the result with ``evaluate_rank(..., inf_is_missed=True)`` to compare a
    served top-k ranking with the offline one under the same truncation.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    distmat = np.asarray(distmat, dtype=np.float64)
    out = np.full_like(distmat, np.inf)
    order = np.argsort(distmat, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(distmat))[:, None]
    out[rows, order] = distmat[rows, order]
    return out


def _check_distmat(distmat: np.ndarray) -> np.ndarray:
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D [num_query, num_gallery], got shape {distmat.shape}")
    if distmat.dtype != np.bool_ and (
        not np.issubdtype(distmat.dtype, np.number)
        or np.issubdtype(distmat.dtype, np.complexfloating)
    ):
        raise ValueError(f"distmat must hold real numbers, got dtype {distmat.dtype}")
    return distmat


def _check_ids(
    shape: tuple[int, int],
    q_pids: np.ndarray,
    q_camids: np.ndarray,
    g_pids: np.ndarray,
    g_camids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Turn the four id arrays into 1-D arrays and check them against ``[Q, G]``."""
    num_q, num_g = shape
    arrays = []
    for name, values, expected, side in (
        ("q_pids", q_pids, num_q, "query"),
        ("q_camids", q_camids, num_q, "query"),
        ("g_pids", g_pids, num_g, "gallery item"),
        ("g_camids", g_camids, num_g, "gallery item"),
    ):
        values = np.asarray(values)
        if values.ndim != 1 or len(values) != expected:
            raise ValueError(
                f"{name} must be 1-D with {expected} entries (one per {side}), "
                f"got shape {values.shape}"
            )
        arrays.append(values)
    if num_q == 0:
        raise ValueError("there are no queries to evaluate")
    return arrays[0], arrays[1], arrays[2], arrays[3]


def _check_features(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    for name, x in (("query features", a), ("gallery features", b)):
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D [num, dim], got shape {x.shape}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    return a, b


def _check_camera_prior(weight: float) -> None:
    if not np.isfinite(weight) or weight < 0:
        raise ValueError(f"camera_prior must be a finite weight >= 0, got {weight!r}")


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


# ----------------------------------------------------------------------------- distances


@dataclass(frozen=True)
class _FeatureSide:
    """Features prepared once for a metric: float32, normalised or with squared norms."""

    feats: np.ndarray
    sq_norms: np.ndarray | None

    @classmethod
    def of(cls, feats: np.ndarray, metric: str) -> _FeatureSide:
        feats = np.asarray(feats, dtype=np.float32)
        if metric == "cosine":
            return cls(l2_normalize(feats), None)
        feats = np.ascontiguousarray(feats)
        return cls(feats, np.einsum("ij,ij->i", feats, feats))

    def distance_to(self, other: _FeatureSide, metric: str) -> np.ndarray:
        dots = self.feats @ other.feats.T
        if metric == "cosine":
            np.subtract(np.float32(1.0), dots, out=dots)
            return np.clip(dots, 0.0, 2.0, out=dots)
        assert self.sq_norms is not None and other.sq_norms is not None
        dots *= np.float32(-2.0)
        dots += self.sq_norms[:, None]
        dots += other.sq_norms[None, :]
        np.maximum(dots, 0.0, out=dots)
        return np.sqrt(dots, out=dots) if metric == "euclidean" else dots


# ----------------------------------------------------------------------------- ranking core


@dataclass(frozen=True)
class _Gallery:
    """The gallery with junk columns dropped and item indices grouped by identity.

    ``keep`` holds the original indices of the kept (non-junk) columns, or ``None``
    when nothing is dropped; all other arrays use the compact (kept) column numbering,
    whose order is the original one, so ties are still broken by gallery index.
    """

    keep: np.ndarray | None
    camids: np.ndarray
    pids: np.ndarray  # identities that can be matched (no junk, no distractors), sorted
    starts: np.ndarray
    counts: np.ndarray
    members: np.ndarray  # compact column indices grouped by identity, ascending in a group

    @classmethod
    def build(cls, g_pids: np.ndarray, g_camids: np.ndarray) -> _Gallery:
        not_junk = g_pids != JUNK_PID
        keep = None if not_junk.all() else np.flatnonzero(not_junk)
        pids = g_pids if keep is None else g_pids[keep]
        camids = g_camids if keep is None else g_camids[keep]
        matchable = np.flatnonzero(pids != DISTRACTOR_PID)
        members = matchable[np.argsort(pids[matchable], kind="stable")]
        uniq, starts, counts = np.unique(pids[members], return_index=True, return_counts=True)
        return cls(keep, camids, uniq, starts, counts, members)

    def columns(self, block: np.ndarray) -> np.ndarray:
        """The kept columns of a distance block, as a float array."""
        if block.dtype.kind != "f":
            block = block.astype(np.float64)
        elif block.dtype.itemsize < 4:
            block = block.astype(np.float32)
        if np.isnan(block).any():
            raise ValueError("distmat contains NaN; distances must be numbers (inf is allowed)")
        if self.keep is not None:
            block = np.take(block, self.keep, axis=1)
        return np.ascontiguousarray(block)

    def same_identity(self, q_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(row, column)`` of every gallery item sharing the identity of row's query."""
        if len(self.pids) == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        slot = np.minimum(np.searchsorted(self.pids, q_pids), len(self.pids) - 1)
        counts = np.where(self.pids[slot] == q_pids, self.counts[slot], 0)
        rows = np.repeat(np.arange(len(q_pids)), counts)
        offsets = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, self.members[np.repeat(self.starts[slot], counts) + offsets]


@dataclass
class _BlockStats:
    """Per valid query of a block: first-match rank (1-based), AP and INP."""

    first_rank: np.ndarray
    ap: np.ndarray
    inp: np.ndarray
    num_skipped: int
    valid: np.ndarray  # bool per row of the block: the query has a valid match


def _evaluate_block(
    block: np.ndarray,
    q_pids: np.ndarray,
    q_camids: np.ndarray,
    gallery: _Gallery,
    inf_is_missed: bool = False,
) -> _BlockStats:
    values = gallery.columns(block)
    rows, cols = gallery.same_identity(q_pids)
    removed = gallery.camids[cols] == q_camids[rows]
    positions = _stable_positions(values, rows, cols)
    missed = values[rows, cols] == np.inf if inf_is_missed else None
    return _summarise(len(q_pids), rows, positions, removed, missed)


def _stable_positions(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """0-based position of ``values[rows, cols]`` in its row's stable ascending order.

    Equals ``argsort(values[row], kind="stable").tolist().index(col)``: the number of
    smaller values in the row plus the number of equal values at smaller column indices.
    """
    if rows.size == 0:
        return np.zeros(0, dtype=np.int64)
    targets = values[rows, cols]
    ordered = np.sort(values, axis=1)
    less = _count_less(ordered, rows, targets)
    width = values.shape[1]
    following = ordered.ravel()[rows * width + np.minimum(less + 1, width - 1)]
    tied = np.flatnonzero((less + 1 < width) & (following == targets))
    if tied.size:
        less[tied] += _count_equal_before(values, rows[tied], cols[tied], targets[tied])
    return less


def _count_less(ordered: np.ndarray, rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Vectorised binary search: per target, how many entries of its sorted row are smaller."""
    width = ordered.shape[1]
    flat = ordered.ravel()
    base = rows.astype(np.int64) * width
    lo = np.zeros(len(rows), dtype=np.int64)
    hi = np.full(len(rows), width, dtype=np.int64)
    for _ in range(width.bit_length()):
        mid = (lo + hi) >> 1
        active = lo < hi
        smaller = flat[base + np.minimum(mid, width - 1)] < targets
        lo = np.where(active & smaller, mid + 1, lo)
        hi = np.where(active & ~smaller, mid, hi)
    return lo


def _count_equal_before(
    values: np.ndarray, rows: np.ndarray, cols: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """Per target, how many entries of its row equal it at a smaller column index."""
    width = values.shape[1]
    column = np.arange(width)
    out = np.empty(len(rows), dtype=np.int64)
    step = max(1, _TIE_BATCH_CELLS // max(width, 1))
    for part in _chunks(len(rows), step):
        equal = values[rows[part]] == targets[part, None]
        equal &= column[None, :] < cols[part, None]
        out[part] = np.count_nonzero(equal, axis=1)
    return out


def _summarise(
    num_rows: int,
    rows: np.ndarray,
    positions: np.ndarray,
    removed: np.ndarray,
    missed: np.ndarray | None = None,
) -> _BlockStats:
    """CMC/AP/INP inputs from the positions of each query's own-identity items.

    ``missed`` flags items that were not retrieved (they rank after every retrieved
    one): no AP term, INP 0 for their query, no CMC credit.
    """
    if missed is None:
        missed = np.zeros(len(rows), dtype=bool)
    order = np.lexsort((positions, rows))
    rows, positions, removed, missed = rows[order], positions[order], removed[order], missed[order]
    # Ranks after removal: subtract the removed items ranked before, within the row.
    removed_before = np.cumsum(removed) - removed
    removed_before -= removed_before[np.searchsorted(rows, rows)]
    ranks = positions - removed_before + 1
    good_rows, good_ranks, good_missed = rows[~removed], ranks[~removed], missed[~removed]
    # A missed match never counts as found: an infinite rank (no AP term, INP 0, no CMC).
    good_ranks = np.where(good_missed, np.inf, good_ranks)
    num_good = np.bincount(good_rows, minlength=num_rows)
    starts = np.cumsum(num_good) - num_good
    hit_number = np.arange(len(good_rows)) - starts[good_rows] + 1
    ap_sum = np.bincount(good_rows, weights=hit_number / good_ranks, minlength=num_rows)
    valid = num_good > 0
    num_valid = num_good[valid]
    return _BlockStats(
        first_rank=good_ranks[starts[valid]],
        ap=ap_sum[valid] / num_valid,
        inp=num_valid / good_ranks[starts[valid] + num_valid - 1],
        num_skipped=int(num_rows - valid.sum()),
        valid=valid,
    )


@dataclass
class _Accumulator:
    """Collects block statistics and turns them into a :class:`RankResult`."""

    max_rank: int
    blocks: list[_BlockStats] = field(default_factory=list)

    def add(self, stats: _BlockStats) -> None:
        self.blocks.append(stats)

    def result(self) -> RankResult:
        first = np.concatenate([b.first_rank for b in self.blocks])
        skipped = sum(b.num_skipped for b in self.blocks)
        if len(first) == 0:
            raise ValueError(
                f"no query has a valid match: all {skipped} queries were skipped (their "
                "identity appears in the gallery only under the same camera, as junk, "
                "or not at all); CMC and mAP are undefined"
            )
        capped = np.minimum(first, self.max_rank + 1).astype(np.int64)  # inf: never found
        hist = np.bincount(capped - 1, minlength=self.max_rank + 1)
        cmc = np.cumsum(hist[: self.max_rank]) / len(first)
        cmc.setflags(write=False)
        return RankResult(
            cmc=cmc,
            mAP=float(np.concatenate([b.ap for b in self.blocks]).mean()),
            mINP=float(np.concatenate([b.inp for b in self.blocks]).mean()),
            num_valid_queries=len(first),
            num_skipped_queries=skipped,
        )
