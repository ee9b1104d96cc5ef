"""Approximate self-kNN (reid.knn): PCA + HNSW candidates re-ranked exactly."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from reid.knn import HnswParams, hnsw_k_nearest


def clustered(seed: int = 0, num: int = 40, size: int = 25, dim: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num, dim))
    feats = np.repeat(centres, size, axis=0) + 0.6 * rng.standard_normal((num * size, dim))
    return np.ascontiguousarray(feats, dtype=np.float32)


def squared_distances(feats: np.ndarray) -> np.ndarray:
    return ((feats[:, None, :] - feats[None, :, :]) ** 2).sum(-1)


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    found = [len(np.intersect1d(a, b)) for a, b in zip(got, truth, strict=True)]
    return float(np.mean(found)) / truth.shape[1]


@pytest.mark.parametrize("pca_dim", [16, 64])  # 64 >= the dimension: no projection
def test_neighbours_are_nearly_exact_and_distances_exact(pca_dim: int) -> None:
    feats = clustered()
    full = squared_distances(feats)
    dists, idx = hnsw_k_nearest(feats, 10, HnswParams(pca_dim=pca_dim))
    assert dists.shape == idx.shape == (len(feats), 10)
    assert dists.dtype == np.float32 and idx.dtype == np.int64
    assert recall(idx, np.argsort(full, axis=1, kind="stable")[:, :10]) > 0.95
    # every returned distance is the exact one of its pair, in ascending order
    np.testing.assert_allclose(dists, np.take_along_axis(full, idx, 1), rtol=1e-4, atol=1e-3)
    assert (np.diff(dists, axis=1) >= 0).all()
    assert all(len(set(row)) == 10 for row in idx)


def test_two_runs_give_the_same_neighbours() -> None:
    feats = clustered(seed=1)
    threads = faiss.omp_get_max_threads()
    first = hnsw_k_nearest(feats, 8, HnswParams(pca_dim=16))
    second = hnsw_k_nearest(feats, 8, HnswParams(pca_dim=16))
    np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_array_equal(first[0], second[0])
    assert faiss.omp_get_max_threads() == threads  # the one-thread build is undone


def test_k_is_clipped_to_the_set() -> None:
    feats = clustered(num=2, size=3)
    dists, idx = hnsw_k_nearest(feats, 20)
    assert dists.shape == idx.shape == (6, 6)
    assert sorted(idx[0]) == list(range(6))


@pytest.mark.parametrize("field", ["pca_dim", "m", "ef_search", "candidates"])
def test_params_are_validated(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        HnswParams(**{field: 0})
