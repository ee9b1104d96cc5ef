"""Pseudo-labels by clustering: k-reciprocal Jaccard distance + DBSCAN.

The cluster-contrast recipe (Dai et al.; Ge et al. SpCL): the whole unlabeled train
set's features -> the k-reciprocal Jaccard distance (Zhong et al., "Re-ranking Person
Re-identification with k-reciprocal Encoding", CVPR 2017; k1, k2) -> scikit-learn
``DBSCAN(metric="precomputed", eps, min_samples)``. Outliers keep the label ``-1``
and are left out of the epoch; clusters are renumbered ``0..C-1`` in the order of
their first member (lowest train index), so the labels depend only on the
partition, never on DBSCAN's visiting order.

Two ways to hand DBSCAN the distance (``ClusteringParams.jaccard``):

* ``sparse`` (default): ``reid.rerank.jaccard_graph``, only the pairs within ``eps``
  (``O(N k)`` memory), as a sparse precomputed matrix, whose stored entries are
  DBSCAN's only candidate neighbours (explicit zeros included). Every pair it leaves
  out is at a distance above ``eps`` or 1, so on exact neighbour lists the labels are
  those of the dense path. Above ``reid.rerank.EXACT_KNN_MAX`` samples the neighbour
  lists come from an approximate search unless ``knn: exact``.
* ``dense``: the full ``N x N`` ``reid.rerank.jaccard_distance`` (0.67 GB at
  Market-1501's 12,936 images, 40 GB at 100,000), exact neighbour lists; the
  reference for the sparse path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from scipy import sparse
from sklearn.cluster import DBSCAN

from reid.rerank import jaccard_distance, jaccard_graph
from trainer.config import Params

__all__ = ["ClusterResult", "ClusteringParams", "cluster_pseudo_labels", "relabel"]


class ClusteringParams(Params):
    """DBSCAN on the k-reciprocal Jaccard distance (validated once, here).

    ``eps``: in ``(0, 1]`` (Jaccard distances); 0.6 on Market-1501, 0.7 on
    DukeMTMC-reID (the cluster-contrast configs; AFF_SCL uses 0.65 on Market); the
    synthetic configs set their own measured value. ``min_samples``: DBSCAN's
    core-point threshold (the point itself included); ``k1`` / ``k2``: k-reciprocal
    neighbourhood and query-expansion sizes. ``jaccard``: ``sparse`` radius graph or
    ``dense`` matrix (same labels on exact neighbour lists; see the module doc);
    ``knn``: the neighbour search of the sparse path, ``auto`` (exact up to
    ``reid.rerank.EXACT_KNN_MAX`` samples, approximate above), ``exact`` or
    ``approximate``; the dense path is always exact.
    """

    eps: float = Field(0.6, gt=0, le=1)
    min_samples: int = Field(4, ge=1)
    k1: int = Field(30, ge=1)
    k2: int = Field(6, ge=1)
    jaccard: Literal["sparse", "dense"] = "sparse"
    knn: Literal["auto", "exact", "approximate"] = "auto"

    @model_validator(mode="after")
    def _dense_is_exact(self) -> ClusteringParams:
        if self.jaccard == "dense" and self.knn == "approximate":
            raise ValueError("jaccard 'dense' uses exact neighbours: knn must be auto or exact")
        return self


@dataclass(frozen=True)
class ClusterResult:
    """Pseudo-labels of one clustering run."""

    labels: np.ndarray
    """int64 ``[N]``: cluster index ``0..num_clusters-1`` or ``-1`` (outlier)."""
    num_clusters: int
    outlier_ratio: float

    def stats(self) -> dict[str, float]:
        """Numbers worth logging each epoch."""
        return {"num_clusters": float(self.num_clusters), "outlier_ratio": self.outlier_ratio}


def relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters ``0..C-1`` by their lowest member index; ``-1`` stays ``-1``."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(labels.shape, -1, dtype=np.int64)
    inliers = labels >= 0
    if not inliers.any():
        return out
    unique, first = np.unique(labels[inliers], return_index=True)
    order = np.argsort(first, kind="stable")  # clusters by first appearance
    rank = np.empty(len(unique), dtype=np.int64)
    rank[order] = np.arange(len(unique))
    out[inliers] = rank[np.searchsorted(unique, labels[inliers])]
    return out


def cluster_pseudo_labels(
    features: np.ndarray | torch.Tensor,
    params: ClusteringParams,
    *,
    n_jobs: int | None = -1,
) -> ClusterResult:
    """Cluster ``[N, D]`` features into pseudo-identities.

    Args:
        features: train-set embeddings (L2-normalised here in any case).
        params: ``eps``, ``min_samples``, ``k1``, ``k2``, ``jaccard``, ``knn`` (already
            validated).
        n_jobs: DBSCAN's neighbour-search workers on the dense matrix (-1: all cores).

    Returns:
        A :class:`ClusterResult`; ``num_clusters == 0`` when every sample is an
        outlier (the caller decides what to do with such an epoch).
    """
    if isinstance(features, torch.Tensor):
        features = features.detach().to("cpu", torch.float32).numpy()
    p = params
    feats = np.asarray(features, dtype=np.float32)
    dist: np.ndarray | sparse.csr_array
    if p.jaccard == "dense":
        dist = jaccard_distance(feats, k1=p.k1, k2=p.k2)
    elif p.eps >= 1.0:
        # no Jaccard distance exceeds 1, so every pair is within eps (the graph would be
        # dense) and DBSCAN's answer is known: one cluster if the points are cores
        return _result(np.full(len(feats), 0 if len(feats) >= p.min_samples else -1))
    else:
        dist = jaccard_graph(feats, k1=p.k1, k2=p.k2, max_distance=p.eps, knn=p.knn)
    raw = DBSCAN(eps=p.eps, min_samples=p.min_samples, metric="precomputed", n_jobs=n_jobs)
    labels = relabel(raw.fit_predict(dist))
    del dist
    return _result(labels)


def _result(labels: np.ndarray) -> ClusterResult:
    labels = np.asarray(labels, dtype=np.int64)
    num_clusters = int(labels.max()) + 1 if labels.size else 0
    outlier_ratio = float((labels < 0).mean()) if labels.size else 0.0
    return ClusterResult(labels=labels, num_clusters=num_clusters, outlier_ratio=outlier_ratio)
