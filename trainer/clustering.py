"""Pseudo-labels by clustering: k-reciprocal Jaccard distance + DBSCAN.

The cluster-contrast recipe (Dai et al.; Ge et al. SpCL): the whole unlabeled train
set's features -> ``reid.rerank.jaccard_distance`` (k1, k2; FAISS kNN) -> scikit-learn
``DBSCAN(metric="precomputed", eps, min_samples)``. Outliers keep the label ``-1``
and are left out of the epoch; clusters are renumbered ``0..C-1`` in the order of
their first member (lowest train index), so the labels depend only on the
partition, never on DBSCAN's visiting order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field
from sklearn.cluster import DBSCAN

from reid.rerank import jaccard_distance
from trainer.config import Params

__all__ = ["ClusterResult", "ClusteringParams", "cluster_pseudo_labels", "relabel"]


class ClusteringParams(Params):
    """DBSCAN on the k-reciprocal Jaccard distance (validated once, here).

    ``eps``: in ``(0, 1]`` (Jaccard distances); 0.6 on Market-1501, 0.7 on
    DukeMTMC-reID (the cluster-contrast configs; AFF_SCL uses 0.65 on Market); the
    synthetic configs set their own measured value. ``min_samples``: DBSCAN's
    core-point threshold (the point itself included); ``k1`` / ``k2``: k-reciprocal
    neighbourhood and query-expansion sizes.
    """

    eps: float = Field(0.6, gt=0, le=1)
    min_samples: int = Field(4, ge=1)
    k1: int = Field(30, ge=1)
    k2: int = Field(6, ge=1)


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
        params: ``eps``, ``min_samples``, ``k1``, ``k2`` (already validated).
        n_jobs: DBSCAN's neighbour-search workers (-1: all cores).

    Returns:
        A :class:`ClusterResult`; ``num_clusters == 0`` when every sample is an
        outlier (the caller decides what to do with such an epoch).
    """
    if isinstance(features, torch.Tensor):
        features = features.detach().to("cpu", torch.float32).numpy()
    p = params
    dist = jaccard_distance(np.asarray(features, dtype=np.float32), k1=p.k1, k2=p.k2)
    raw = DBSCAN(eps=p.eps, min_samples=p.min_samples, metric="precomputed", n_jobs=n_jobs)
    labels = relabel(raw.fit_predict(dist))
    del dist
    num_clusters = int(labels.max()) + 1 if labels.size else 0
    outlier_ratio = float((labels < 0).mean()) if labels.size else 0.0
    return ClusterResult(labels=labels, num_clusters=num_clusters, outlier_ratio=outlier_ratio)
