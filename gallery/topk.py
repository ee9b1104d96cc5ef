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

Entries that were not returned are marked by an infinite distance; the metrics are
:func:`reid.metrics.evaluate_rank` with ``inf_is_missed=True`` (one protocol
implementation for the full and the truncated rankings).
"""

from __future__ import annotations

import numpy as np

from reid.metrics import RankResult, evaluate_rank


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

    :func:`reid.metrics.evaluate_rank` with ``inf_is_missed``; with every entry finite
    it equals the full protocol. Raises ``ValueError`` when no query has a valid match.
    """
    return evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, inf_is_missed=True)
