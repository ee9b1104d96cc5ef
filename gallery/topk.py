"""Metrics of a ranking truncated to the top k (what a search API returns with ``k``).

A server asked for its top ``k`` returns only ``k`` gallery entries per query, so the
full-ranking protocol of :mod:`reid.metrics` cannot be computed. The definitions here
are the Market-1501 protocol applied to the returned list, with **matches that were not
returned counted as not retrieved**:

* the returned list is ordered by ascending distance (ties by gallery index); junk items
  and same-identity same-camera items are removed, as in the full protocol;
* AP@k = sum over the matches *in the list* of ``(matches so far) / rank``, divided by
  the query's **total** number of matches in the gallery, so a missed match adds 0;
  it equals the full AP when every match is returned and is a lower bound otherwise;
* CMC rank-r counts a query when its first match is in the list within rank r; exact
  for r up to the number of valid items returned, a lower bound beyond;
* INP = ``matches / rank of the last match`` when every match was returned, else 0.

Entries that were not returned are marked by an infinite distance.
"""

from __future__ import annotations

import numpy as np

from reid.data.base import JUNK_PID
from reid.metrics import RankResult


def truncate_distmat(distmat: np.ndarray, k: int) -> np.ndarray:
    """Keep each row's ``k`` smallest distances (ties by index), set the rest to ``inf``.

    This is what a server returning its top ``k`` reveals, applied to offline distances.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    distmat = np.asarray(distmat, dtype=np.float64)
    out = np.full_like(distmat, np.inf)
    order = np.argsort(distmat, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(distmat))[:, None]
    out[rows, order] = distmat[rows, order]
    return out


def evaluate_returned(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
) -> RankResult:
    """CMC / AP@k / INP@k of rankings where not-returned entries have distance ``inf``.

    With every entry finite this equals :func:`reid.metrics.evaluate_rank`.
    Raises ``ValueError`` when no query has a valid match.
    """
    distmat = np.asarray(distmat, dtype=np.float64)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    cmc_sum = np.zeros(max_rank, dtype=np.float64)
    aps: list[float] = []
    inps: list[float] = []
    for row, q_pid, q_cam in zip(distmat, q_pids, q_camids, strict=True):
        same_id = g_pids == q_pid
        total = int(np.sum(same_id & (g_camids != q_cam))) if q_pid > 0 else 0
        if total == 0:
            continue
        order = np.argsort(row, kind="stable")
        order = order[np.isfinite(row[order])]
        removed = (same_id[order] & (g_camids[order] == q_cam)) | (g_pids[order] == JUNK_PID)
        hits = same_id[order[~removed]]
        positions = np.flatnonzero(hits)
        found = np.arange(1, len(positions) + 1)
        aps.append(float(np.sum(found / (positions + 1))) / total)
        inps.append(total / (positions[-1] + 1) if len(positions) == total else 0.0)
        if len(positions) and positions[0] < max_rank:
            cmc_sum[positions[0] :] += 1
    if not aps:
        raise ValueError("no query has a valid match in the gallery; nothing to evaluate")
    return RankResult(
        cmc=cmc_sum / len(aps),
        mAP=float(np.mean(aps)),
        mINP=float(np.mean(inps)),
        num_valid_queries=len(aps),
        num_skipped_queries=len(q_pids) - len(aps),
    )
