"""Pseudo-label clustering: Jaccard distance + DBSCAN (trainer.clustering)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse
from sklearn.cluster import DBSCAN

import reid.rerank
from trainer.clustering import (
    ClusteringParams,
    ClusterResult,
    cluster_pseudo_labels,
    label_free_quality,
    relabel,
)


def _blobs(num: int, size: int, dim: int = 32, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return np.repeat(centres, size, axis=0) + noise * rng.standard_normal((num * size, dim))


def test_separated_blobs_give_their_clusters() -> None:
    feats = _blobs(num=6, size=20)
    result = cluster_pseudo_labels(feats, ClusteringParams(eps=0.6, min_samples=4, k1=20, k2=6))
    assert isinstance(result, ClusterResult)
    assert result.num_clusters == 6
    assert result.outlier_ratio == 0.0
    assert result.labels.dtype == np.int64
    # members are in blob order and relabelling follows first appearance: exact labels
    np.testing.assert_array_equal(result.labels, np.repeat(np.arange(6), 20))
    assert result.stats() == {"num_clusters": 6.0, "outlier_ratio": 0.0, "eps": 0.6}


def test_isolated_points_are_outliers() -> None:
    # k2=1: no query expansion (which would pull a lone point towards its neighbours' blob)
    feats = np.concatenate([_blobs(num=3, size=30), _blobs(num=4, size=1, seed=5)])
    result = cluster_pseudo_labels(feats, ClusteringParams(eps=0.6, min_samples=4, k1=20, k2=1))
    assert result.num_clusters == 3
    np.testing.assert_array_equal(result.labels[-4:], -1)
    assert result.outlier_ratio >= 4 / 94


def test_torch_input_and_shuffled_order_give_the_same_partition() -> None:
    feats = _blobs(num=5, size=12, seed=1)
    params = ClusteringParams(eps=0.6, k1=10, k2=3)
    base = cluster_pseudo_labels(torch.from_numpy(feats).float(), params)
    perm = np.random.default_rng(3).permutation(len(feats))
    shuffled = cluster_pseudo_labels(feats[perm], params)
    assert base.num_clusters == shuffled.num_clusters == 5
    # same partition: identical co-membership matrices
    same_base = base.labels[perm][:, None] == base.labels[perm][None, :]
    same_shuffled = shuffled.labels[:, None] == shuffled.labels[None, :]
    np.testing.assert_array_equal(same_base, same_shuffled)
    # and labels numbered by first appearance in the (shuffled) order
    firsts = [np.flatnonzero(shuffled.labels == c)[0] for c in range(5)]
    assert firsts == sorted(firsts)


def test_all_outliers_gives_zero_clusters() -> None:
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((40, 64))
    result = cluster_pseudo_labels(feats, ClusteringParams(eps=1e-4, min_samples=4, k1=10, k2=3))
    assert result.num_clusters == 0
    assert result.outlier_ratio == 1.0
    np.testing.assert_array_equal(result.labels, -1)


def _noisy_blobs(seed: int, noise: float) -> np.ndarray:
    """Overlapping blobs plus scattered points: clusters, border points and outliers."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [_blobs(num=12, size=15, noise=noise, seed=seed), 0.3 * rng.standard_normal((20, 32))]
    )


@pytest.mark.parametrize(
    ("seed", "noise", "kwargs"),
    [
        (0, 0.35, {"eps": 0.6, "min_samples": 4, "k1": 20, "k2": 6}),
        (1, 0.5, {"eps": 0.5, "min_samples": 3, "k1": 15, "k2": 3}),
        (2, 0.3, {"eps": 0.5, "min_samples": 8, "k1": 30, "k2": 6}),
        (3, 0.45, {"eps": 0.75, "min_samples": 3, "k1": 10, "k2": 1}),
        (4, 0.4, {"eps": 1.0, "min_samples": 4, "k1": 10, "k2": 3}),  # every pair within eps
        (5, 0.4, {"eps": 1.0, "min_samples": 500, "k1": 10, "k2": 3}),  # ... but no core
    ],
)
def test_sparse_graph_gives_the_labels_of_the_dense_matrix(
    seed: int, noise: float, kwargs: dict
) -> None:
    feats = _noisy_blobs(seed, noise)
    dense = cluster_pseudo_labels(feats, ClusteringParams(jaccard="dense", **kwargs))
    sparse_ = cluster_pseudo_labels(feats, ClusteringParams(**kwargs))  # the default
    np.testing.assert_array_equal(sparse_.labels, dense.labels)
    assert (sparse_.num_clusters, sparse_.outlier_ratio) == (
        dense.num_clusters,
        dense.outlier_ratio,
    )
    if kwargs["eps"] < 1:  # the cases are not trivial: several clusters and some outliers
        assert dense.num_clusters > 1 and 0 < dense.outlier_ratio < 1


def test_approximate_neighbours_find_the_same_separated_clusters(monkeypatch) -> None:
    monkeypatch.setattr(reid.rerank, "EXACT_KNN_MAX", 50)  # "auto" goes approximate here
    feats = _blobs(num=6, size=20)
    for knn in ("auto", "approximate"):
        params = ClusteringParams(eps=0.6, min_samples=4, k1=20, k2=6, knn=knn)
        result = cluster_pseudo_labels(feats, params)
        np.testing.assert_array_equal(result.labels, np.repeat(np.arange(6), 20))


def test_dbscan_takes_stored_zeros_as_neighbours() -> None:
    # what the sparse path relies on: on a sparse precomputed matrix, scikit-learn's DBSCAN
    # takes every *stored* entry within eps as a neighbour, explicit zeros included, and
    # nothing else (an absent pair is not at distance 0 but no neighbour at all)
    zeros = sparse.csr_array(
        (np.zeros(4, np.float32), np.array([1, 0, 3, 2]), np.array([0, 1, 2, 3, 4])), shape=(4, 4)
    )
    assert zeros.nnz == 4
    labels = DBSCAN(eps=0.1, min_samples=2, metric="precomputed").fit_predict(zeros)
    np.testing.assert_array_equal(labels, [0, 0, 1, 1])
    empty = sparse.csr_array((4, 4), dtype=np.float32)
    labels = DBSCAN(eps=0.1, min_samples=2, metric="precomputed").fit_predict(empty)
    np.testing.assert_array_equal(labels, -1)


def test_duplicates_at_distance_zero_are_clustered_together() -> None:
    feats = _blobs(num=4, size=10, noise=0.5, seed=2)
    feats = np.concatenate([feats, feats[[0, 15]]])
    kwargs = {"eps": 1e-6, "min_samples": 2, "k1": 10, "k2": 3}
    result = cluster_pseudo_labels(feats, ClusteringParams(**kwargs))
    dense = cluster_pseudo_labels(feats, ClusteringParams(jaccard="dense", **kwargs))
    np.testing.assert_array_equal(result.labels, dense.labels)
    assert result.labels[0] == result.labels[40] >= 0
    assert result.labels[15] == result.labels[41] >= 0


def test_relabel_is_deterministic_and_by_first_member() -> None:
    np.testing.assert_array_equal(relabel(np.array([5, 5, -1, 2, 2, 7, 2])), [0, 0, -1, 1, 1, 2, 1])
    # the raw ids do not matter, only the partition
    np.testing.assert_array_equal(relabel(np.array([9, 9, -1, 0, 0, 3, 0])), [0, 0, -1, 1, 1, 2, 1])
    np.testing.assert_array_equal(relabel(np.array([-1, -1])), [-1, -1])
    assert relabel(np.array([], dtype=np.int64)).shape == (0,)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"eps": 0.0},
        {"eps": 1.5},
        {"min_samples": 0},
        {"k1": 0},
        {"k2": 0},
        {"k1": "30"},
        {"e": 1},
        {"jaccard": "full"},
        {"knn": "hnsw"},
        {"jaccard": "dense", "knn": "approximate"},  # the dense path is the exact reference
        {"eps": 0.0},
        {"eps": 1.5},
        {"eps": "median"},
        {"eps_grid": []},
        {"eps_grid": [0.3, 1.2]},
    ],
)
def test_params_are_validated(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ClusteringParams(**kwargs)


def test_sparse_graph_and_automatic_neighbour_search_are_the_defaults() -> None:
    params = ClusteringParams()
    assert (params.jaccard, params.knn) == ("sparse", "auto")
    assert ClusteringParams(jaccard="dense", knn="exact").jaccard == "dense"


def test_params_are_immutable_once_validated() -> None:
    params = ClusteringParams(eps=0.5)
    with pytest.raises(ValueError, match="frozen"):
        params.eps = 0.0


# ----------------------------------------------------------------------------- eps: auto


def test_the_radius_is_chosen_from_the_data_by_default() -> None:
    assert ClusteringParams().eps == "auto"
    feats = _blobs(num=6, size=20, noise=0.08)
    result = cluster_pseudo_labels(feats, ClusteringParams(min_samples=4, k1=20, k2=6))
    assert set(result.eps_scores) == set(ClusteringParams().eps_grid)
    assert result.eps in result.eps_scores
    assert result.eps_scores[result.eps] == max(result.eps_scores.values())
    assert result.stats()["eps"] == result.eps
    np.testing.assert_array_equal(result.labels, np.repeat(np.arange(6), 20))


def test_the_chosen_radius_gives_the_labels_of_that_fixed_radius() -> None:
    feats = _blobs(num=5, size=12, noise=0.3, seed=3)
    auto = cluster_pseudo_labels(feats, ClusteringParams(k1=12, k2=4))
    fixed = cluster_pseudo_labels(feats, ClusteringParams(eps=auto.eps, k1=12, k2=4))
    np.testing.assert_array_equal(auto.labels, fixed.labels)
    assert fixed.eps_scores is None


def test_a_labelling_with_one_cluster_holding_half_the_samples_is_rejected() -> None:
    feats = _blobs(num=4, size=10, noise=0.05)
    giant = np.r_[np.zeros(25, np.int64), np.arange(15) % 3 + 1]
    assert label_free_quality(feats, giant).score == -1.0
    # three of four groups close together: the radii that merge them (30 of 40 samples in
    # one cluster) are rejected, the one that separates them is chosen
    rng = np.random.default_rng(0)
    near = feats[0] + 0.1 * rng.standard_normal((2, 32)) / np.sqrt(32)
    centres = np.r_[feats[[0]], near, feats[[10]]]
    close = np.repeat(centres, 10, axis=0) + 0.03 * rng.standard_normal((40, 32))
    result = cluster_pseudo_labels(close, ClusteringParams(k1=12, k2=3, eps_grid=[0.3, 0.5, 0.7]))
    assert result.eps_scores[0.5] == result.eps_scores[0.7] == -1.0
    assert result.eps == 0.3 and result.num_clusters >= 3


def test_quality_is_silhouette_of_the_clustered_times_their_share() -> None:
    from sklearn.metrics import silhouette_score

    feats = _blobs(num=3, size=10, noise=0.1)
    labels = np.repeat(np.arange(3), 10)
    labels[[0, 10]] = -1  # two outliers
    quality = label_free_quality(feats, labels)
    kept = labels >= 0
    expected = silhouette_score(feats[kept], labels[kept], metric="cosine")
    assert quality.clustered == pytest.approx(28 / 30)
    assert quality.score == pytest.approx(expected * 28 / 30)
    assert label_free_quality(feats, np.full(30, -1)).score == 0.0  # no cluster
