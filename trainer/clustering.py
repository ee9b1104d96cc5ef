"""Pseudo-labels by clustering: k-reciprocal Jaccard distance + DBSCAN.

The cluster-contrast recipe (Dai et al.; Ge et al. SpCL): the whole unlabeled train
set's features -> the k-reciprocal Jaccard distance (Zhong et al., "Re-ranking Person
Re-identification with k-reciprocal Encoding", CVPR 2017; k1, k2) -> scikit-learn
``DBSCAN(metric="precomputed", eps, min_samples)``. Outliers keep the label ``-1``
and are left out of the epoch; clusters are renumbered ``0..C-1`` in the order of
their first member (lowest train index), so the labels depend only on the
partition, never on DBSCAN's visiting order.

``eps: auto`` chooses the radius from the data, at every clustering: DBSCAN runs at each
radius of ``eps_grid`` on the same distances and the labelling with the highest
label-free quality is kept (:func:`label_free_quality`: mean cosine silhouette of the
clustered samples x their share, as ``trainer.selection`` scores checkpoints; a
labelling whose largest cluster holds more than half the samples is rejected, since no
identity does). This is the silhouette criterion for choosing a clustering (Rousseeuw,
"Silhouettes: a graphical aid to the interpretation and validation of cluster
analysis", 1987) applied to DBSCAN's one free radius; the chosen radius and every
candidate's score are logged.

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
from pydantic import Field, field_validator, model_validator
from scipy import sparse
from sklearn.cluster import DBSCAN

from reid.rerank import jaccard_distance, jaccard_graph
from trainer.config import Params

__all__ = [
    "ClusterResult",
    "ClusteringParams",
    "Quality",
    "cluster_pseudo_labels",
    "label_free_quality",
    "relabel",
]


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
    ``approximate``; the dense path is always exact. ``eps: auto`` (the default):
    the radius of ``eps_grid`` with the best label-free quality, chosen at every
    clustering (see the module doc); ``silhouette_sample``: samples the silhouette is
    computed on (a seeded subset above it; the cost is quadratic in it).
    """

    eps: float | Literal["auto"] = Field("auto", union_mode="left_to_right")
    eps_grid: list[float] = Field(
        default_factory=lambda: [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7]
    )
    silhouette_sample: int = Field(4000, ge=10)
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

    @field_validator("eps")
    @classmethod
    def _radius(cls, value: float | str) -> float | str:
        if value != "auto" and not 0 < value <= 1:
            raise ValueError(f"must be 'auto' or a Jaccard radius in (0, 1], got {value}")
        return value

    @field_validator("eps_grid")
    @classmethod
    def _radii(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < eps < 1 for eps in value):
            # at radius 1 every pair would be a neighbour: no clustering to compare
            raise ValueError(f"must list one or more Jaccard radii in (0, 1), got {value}")
        return value


@dataclass(frozen=True)
class ClusterResult:
    """Pseudo-labels of one clustering run."""

    labels: np.ndarray
    """int64 ``[N]``: cluster index ``0..num_clusters-1`` or ``-1`` (outlier)."""
    num_clusters: int
    outlier_ratio: float
    eps: float
    """The radius used (the chosen one with ``eps: auto``)."""
    eps_scores: dict[float, float] | None = None
    """``eps: auto``: every candidate radius's label-free quality (``-1``: rejected)."""

    def stats(self) -> dict[str, float]:
        """Numbers worth logging each epoch."""
        return {
            "num_clusters": float(self.num_clusters),
            "outlier_ratio": self.outlier_ratio,
            "eps": self.eps,
        }


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
    radii = list(p.eps_grid) if p.eps == "auto" else [float(p.eps)]
    if p.jaccard == "sparse" and max(radii) >= 1.0 and len(radii) == 1:
        # no Jaccard distance exceeds 1, so every pair is within eps (the graph would be
        # dense) and DBSCAN's answer is known: one cluster if the points are cores
        labels = np.full(len(feats), 0 if len(feats) >= p.min_samples else -1)
        return _result(labels, radii[0])
    dist: np.ndarray | sparse.csr_array
    if p.jaccard == "dense":
        dist = jaccard_distance(feats, k1=p.k1, k2=p.k2)
    else:
        dist = jaccard_graph(feats, k1=p.k1, k2=p.k2, max_distance=max(radii), knn=p.knn)

    def dbscan(eps: float) -> np.ndarray:
        raw = DBSCAN(eps=eps, min_samples=p.min_samples, metric="precomputed", n_jobs=n_jobs)
        return relabel(raw.fit_predict(dist))

    if p.eps != "auto":
        return _result(dbscan(radii[0]), radii[0])
    scores: dict[float, float] = {}
    best: tuple[float, float, np.ndarray] | None = None
    for eps in sorted(radii):
        labels = dbscan(eps)
        score = label_free_quality(feats, labels, p.silhouette_sample).score
        scores[eps] = score
        if best is None or score > best[0]:
            best = (score, eps, labels)
    assert best is not None
    return _result(best[2], best[1], scores)


@dataclass(frozen=True)
class Quality:
    """``score`` = ``silhouette`` x ``clustered`` (outliers count 0); ``-1`` when the
    labelling is rejected (a cluster holds more than half the samples)."""

    score: float
    silhouette: float
    clustered: float
    clusters: int


def label_free_quality(
    features: np.ndarray, labels: np.ndarray, sample: int = 4000, seed: int = 0
) -> Quality:
    """How well ``labels`` group L2-normalised ``features``, without identity labels.

    Mean cosine silhouette of the clustered samples (on a seeded subset of ``sample``
    of them when there are more) times the clustered share; 0 with fewer than two
    clusters; ``-1`` when the largest cluster holds more than half of all samples.
    """
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    kept = labels >= 0
    share = float(kept.mean()) if labels.size else 0.0
    sizes = np.bincount(labels[kept]) if kept.any() else np.zeros(0, np.int64)
    clusters = int((sizes > 0).sum())
    if clusters and sizes.max() > 0.5 * labels.size:
        return Quality(-1.0, 0.0, share, clusters)
    if clusters < 2 or kept.sum() <= clusters:
        return Quality(0.0, 0.0, share, clusters)
    size = min(sample, int(kept.sum()))
    try:
        silhouette = float(
            silhouette_score(
                features[kept], labels[kept], metric="cosine", sample_size=size, random_state=seed
            )
        )
    except ValueError:  # the sampled subset holds a single cluster
        return Quality(0.0, 0.0, share, clusters)
    return Quality(silhouette * share, silhouette, share, clusters)


def _result(
    labels: np.ndarray, eps: float, scores: dict[float, float] | None = None
) -> ClusterResult:
    labels = np.asarray(labels, dtype=np.int64)
    num_clusters = int(labels.max()) + 1 if labels.size else 0
    outlier_ratio = float((labels < 0).mean()) if labels.size else 0.0
    return ClusterResult(labels, num_clusters, outlier_ratio, float(eps), scores)
