"""VectorIndex: the compressed IVF-SQ8 kind and the size-based choice of HNSW settings."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

import reid.gallery.gallery as gallery_module
import reid.gallery.index as index_module
from reid.gallery import EntryMetadata, Gallery, IndexSettings, SearchFilters
from reid.gallery.gallery import AUTO_THRESHOLD, _target_kind
from reid.gallery.index import HNSW_HUGE, HNSW_LARGE, VectorIndex

DIM = 64


def clustered(n: int, dim: int = DIM, clusters: int = 100, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    rows = centres[rng.integers(0, clusters, n)] + 0.4 * rng.normal(size=(n, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def columns(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.arange(1, n + 1, dtype=np.int64)
    return ids, ids % 4, ids.astype(np.float64)


def exact_top(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int, keep=None):
    scores = vectors @ query
    if keep is not None:
        scores, ids = scores[keep], ids[keep]
    order = np.lexsort((ids, -scores))[:k]
    return scores[order], ids[order]


@pytest.fixture(scope="module")
def sq8() -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    vectors = clustered(4000)
    ids, cameras, times = columns(4000)
    index = VectorIndex.build(DIM, "ivf_sq8", ids, vectors, cameras, times)
    return index, vectors, ids


# -- IVF-SQ8 ----------------------------------------------------------------------------


def test_ivf_sq8_recall_at_10_against_float32_exact_is_at_least_0_9(sq8):
    index, vectors, ids = sq8
    assert index.kind == "ivf_sq8" and index.is_ivf and index.lossy
    queries = clustered(100, seed=1)
    found = index.search(queries, 10, None)
    recall = np.mean(
        [
            len(np.intersect1d(got, exact_top(vectors, ids, q, 10)[1])) / 10
            for (_, got), q in zip(found, queries, strict=True)
        ]
    )
    assert recall >= 0.9
    # Scores are the decoded codes' cosines: close to, not equal to, the float32 ones.
    scores, got = found[0]
    assert np.abs(scores - vectors[got - 1] @ queries[0]).max() < 5e-3


def test_ivf_sq8_stores_a_byte_per_dimension(sq8):
    index, _, _ = sq8
    flat_bytes = 4000 * (4 * DIM + 8)
    assert index.memory_bytes() < 0.45 * flat_bytes
    assert faiss.downcast_index(index._faiss).code_size == DIM


@pytest.mark.parametrize(
    "filters",
    [
        SearchFilters(include_cameras=frozenset({1, 2})),
        SearchFilters(exclude_cameras=frozenset({0})),
        SearchFilters(time_from=100.0, time_to=3500.0),
        SearchFilters(include_cameras=frozenset({3}), time_to=500.0),  # few pass: exact scan
    ],
)
def test_ivf_sq8_filters_keep_only_passing_entries_and_fill_k(sq8, filters):
    index, vectors, ids = sq8
    mask = index.mask(filters)
    queries = clustered(20, seed=2)
    for (_, got), query in zip(index.search(queries, 10, mask), queries, strict=True):
        assert len(got) == 10
        assert np.isin(got, index.ids[mask]).all()
        truth = exact_top(vectors, ids, query, 10, keep=np.isin(ids, index.ids[mask]))[1]
        assert len(np.intersect1d(got, truth)) >= 7


def test_ivf_sq8_full_ranking_holds_every_passing_entry(sq8):
    index, _, ids = sq8
    mask = index.mask(SearchFilters(exclude_cameras=frozenset({1})))
    ((scores, got),) = index.search(clustered(1, seed=3), None, mask)
    assert sorted(got.tolist()) == ids[ids % 4 != 1].tolist()
    assert (np.diff(scores) <= 0).all()


def test_ivf_sq8_removes_and_reopens_from_its_snapshot(tmp_path):
    vectors = clustered(3000, seed=4)
    ids, cameras, times = columns(3000)
    index = VectorIndex.build(DIM, "ivf_sq8", ids, vectors, cameras, times)
    index.remove(ids[:50])
    queries = clustered(10, seed=5)
    before = index.search(queries, 10, None)
    index.save(tmp_path / "index.faiss")
    loaded, stored = VectorIndex.load(tmp_path / "index.faiss", DIM)
    assert loaded.kind == "ivf_sq8" and loaded.nlist == index.nlist
    assert stored.tolist() == ids[50:].tolist()
    loaded.set_columns(stored, cameras[50:], times[50:])
    after = loaded.search(queries, 10, None)
    for (s1, i1), (s2, i2) in zip(before, after, strict=True):
        assert i1.tolist() == i2.tolist() and np.allclose(s1, s2)


def test_gallery_ivf_sq8_streams_from_sqlite_and_rebuilds_from_exact_vectors(tmp_path):
    vectors = clustered(2500, seed=6)
    metas = [EntryMetadata(camera=i % 3, timestamp=float(i)) for i in range(2500)]
    with Gallery.open(tmp_path, DIM, index="ivf_sq8", background_rebuild=False) as gallery:
        gallery.add(vectors[:1500], metas[:1500])
        assert gallery.stats()["index"] == "ivf_sq8"
        gallery.add(vectors[1500:], metas[1500:])
        # A rebuild to flat reads SQLite's float32 vectors, not the decoded codes.
        assert gallery.rebuild_index("flat") == "flat"
        (top,) = gallery.search(vectors[7:8], k=1)
        assert top[0].id == 8 and top[0].score == pytest.approx(1.0, abs=1e-6)
        assert gallery.rebuild_index("ivf_sq8") == "ivf_sq8"
    with Gallery.open(tmp_path, index="ivf_sq8") as reopened:  # from the snapshot
        assert reopened.stats()["index"] == "ivf_sq8" and len(reopened) == 2500
        filters = SearchFilters(include_cameras={2})
        for matches in reopened.search(vectors[:5], k=10, filters=filters):
            assert len(matches) == 10 and all(m.metadata.camera == 2 for m in matches)


@pytest.fixture(scope="module")
def sq8_gallery_data() -> tuple[np.ndarray, list[EntryMetadata], np.ndarray]:
    vectors = clustered(3000, clusters=60, seed=8)  # near-ties inside each cluster
    metas = [EntryMetadata(camera=i % 3, timestamp=float(i)) for i in range(3000)]
    rng = np.random.default_rng(9)
    queries = vectors[::75] + 0.05 * rng.normal(size=(40, DIM)).astype(np.float32)
    return vectors, metas, queries / np.linalg.norm(queries, axis=1, keepdims=True)


def _sq8_gallery(path, vectors, metas, rerank_factor: int, nprobe: int | None = None) -> Gallery:
    settings = IndexSettings(rerank_factor=rerank_factor, ivf_nprobe=nprobe)
    gallery = Gallery.open(path, DIM, index="ivf_sq8", settings=settings, background_rebuild=False)
    gallery.add(vectors, metas)
    assert gallery.stats()["index"] == "ivf_sq8"
    return gallery


def test_ivf_sq8_gallery_rescores_candidates_with_the_exact_embeddings(tmp_path, sq8_gallery_data):
    vectors, metas, queries = sq8_gallery_data
    ids = np.arange(1, 3001)
    with _sq8_gallery(tmp_path / "rerank", vectors, metas, rerank_factor=4) as gallery:
        assert gallery.stats()["rerank_factor"] == 4
        reranked = gallery.search_arrays(queries, k=10)
    with _sq8_gallery(tmp_path / "codes", vectors, metas, rerank_factor=0) as gallery:
        assert gallery.stats()["rerank_factor"] == 0
        coded = gallery.search_arrays(queries, k=10)
    truths = [exact_top(vectors, ids, q, 10) for q in queries]
    for (scores, got), query in zip(reranked, queries, strict=True):
        assert np.allclose(scores, vectors[got - 1] @ query, atol=1e-6)  # float32 scores
        assert (np.diff(scores) <= 0).all()
    code_errors = [
        np.abs(scores - vectors[got - 1] @ q).max()
        for (scores, got), q in zip(coded, queries, strict=True)
    ]
    assert max(code_errors) > 1e-5  # without re-ranking the scores are the codes'

    def recall(found):
        hits = [len(np.intersect1d(g, t)) for (_, g), (_, t) in zip(found, truths, strict=True)]
        return np.mean(hits) / 10

    assert recall(reranked) >= 0.99 and recall(reranked) >= recall(coded)


def test_ivf_sq8_gallery_full_ranking_and_min_score_use_exact_scores(tmp_path, sq8_gallery_data):
    vectors, metas, queries = sq8_gallery_data
    ids = np.arange(1, 3001)
    with _sq8_gallery(tmp_path, vectors, metas, rerank_factor=4) as gallery:
        filters = SearchFilters(exclude_cameras=frozenset({0}))
        ((scores, got),) = gallery.search_arrays(queries[:1], k=None, filters=filters)
        keep = ids % 3 != 1  # entry i + 1 has camera i % 3
        truth_scores, truth_ids = exact_top(vectors, ids, queries[0], len(ids), keep=keep)
        assert got.tolist() == truth_ids.tolist()
        assert np.allclose(scores, truth_scores, atol=1e-6)
        best_scores, best_ids = exact_top(vectors, ids, queries[0], 6)
        ((scores, got),) = gallery.search_arrays(
            queries[:1], k=50, filters=SearchFilters(min_score=float(best_scores[-1]))
        )
        assert got.tolist() == best_ids.tolist()  # the sixth's exact score still passes


def test_ivf_sq8_gallery_recall_is_measured_against_the_float32_embeddings(
    tmp_path, sq8_gallery_data
):
    vectors, metas, queries = sq8_gallery_data
    with _sq8_gallery(tmp_path, vectors, metas, rerank_factor=0) as gallery:
        coded = gallery_module.measure_recall(gallery, queries, k=10)
    with _sq8_gallery(tmp_path / "rerank", vectors, metas, rerank_factor=4) as gallery:
        reranked = gallery_module.measure_recall(gallery, queries, k=10)
        assert gallery.stats()["recall"]["recall"] == reranked
    assert coded < 1.0 and reranked >= 0.99  # the codes' own exact scan would score 1.0


def test_ivf_sq8_gallery_keeps_large_k_on_the_index_not_an_exhaustive_scan(
    tmp_path, sq8_gallery_data, monkeypatch
):
    vectors, metas, queries = sq8_gallery_data
    # every list probed, so the probed lists never run dry (which falls back to a scan)
    with _sq8_gallery(tmp_path, vectors, metas, rerank_factor=4, nprobe=4096) as gallery:
        scans = []
        real = VectorIndex._exact
        monkeypatch.setattr(
            VectorIndex, "_exact", lambda self, *a, **kw: scans.append(1) or real(self, *a, **kw)
        )
        for k in (10, 511, 1000):  # 4 x 1000 candidates would pass FAISS's 2048 cap
            found = gallery.search_arrays(queries[:2], k=k)
            assert all(len(ids) == k for _, ids in found)
        assert scans == []


def test_rescore_fetches_vectors_a_group_of_queries_at_a_time():
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(500, 8)).astype(np.float32)
    queries = rng.normal(size=(6, 8)).astype(np.float32)
    rankings = [(np.zeros(40, np.float32), rng.choice(500, 40, replace=False)) for _ in queries]
    fetched = []

    def lookup(ids):
        fetched.append(len(ids))
        return vectors[ids]

    grouped = index_module.rescore(queries, rankings, 10, lookup, max_rows=100)
    assert len(fetched) == 3 and max(fetched) <= 100  # two queries (80 ids) per fetch
    whole = index_module.rescore(queries, rankings, 10, lambda ids: vectors[ids])
    for (s1, i1), (s2, i2) in zip(grouped, whole, strict=True):
        assert i1.tolist() == i2.tolist() and np.allclose(s1, s2)


def test_rescore_sorts_candidates_by_exact_score_then_id():
    vectors = np.eye(4, dtype=np.float32)[[0, 1, 1, 2]]  # ids 10, 11, 12, 13
    lookup = {10: 0, 11: 1, 12: 2, 13: 3}
    query = np.array([[0.0, 1.0, 0.5, 0.0]], np.float32)
    candidates = [(np.zeros(4, np.float32), np.array([13, 12, 10, 11]))]
    ((scores, got),) = index_module.rescore(
        query, candidates, 3, lambda ids: vectors[[lookup[int(i)] for i in ids]]
    )
    assert got.tolist() == [11, 12, 13] and scores.tolist() == [1.0, 1.0, 0.5]


# -- index choice by size -----------------------------------------------------------------


def test_hnsw_settings_grow_with_the_gallery_size():
    settings = IndexSettings()
    assert settings.hnsw_build_for(100_000) == (16, 40)
    assert settings.hnsw_build_for(HNSW_LARGE) == (32, 200)
    assert settings.hnsw_build_for(10_000_000) == (32, 200)
    assert settings.hnsw_build_for(HNSW_LARGE - 1) == (16, 40)
    assert settings.hnsw_ef_search_for(HNSW_LARGE) == 128
    assert settings.hnsw_ef_search_for(HNSW_HUGE - 1) == 128
    assert settings.hnsw_ef_search_for(HNSW_HUGE) == 256
    fixed = IndexSettings(hnsw_m=24, hnsw_ef_construction=80, hnsw_ef_search=100)
    assert fixed.hnsw_build_for(5_000_000) == (24, 80)
    assert fixed.hnsw_ef_search_for(5_000_000) == 100


def test_hnsw_graph_is_built_for_its_expected_size_and_keeps_it_when_loaded(tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "HNSW_TIERS", ((0, 8, 20, 32), (500, 12, 48, 64)))
    small = VectorIndex(DIM, "hnsw", expected_size=100)
    large = VectorIndex(DIM, "hnsw", expected_size=600)
    assert (small.hnsw_m, small.hnsw_ef_construction) == (8, 20)
    assert (large.hnsw_m, large.hnsw_ef_construction) == (12, 48)
    inner = faiss.downcast_index(large._faiss.index)
    assert inner.hnsw.nb_neighbors(1) == 12 and inner.hnsw.efConstruction == 48
    ids, cameras, times = columns(600)
    large.add(ids, clustered(600, seed=7), cameras, times)
    assert large.ef_search == 64
    large.tune(ef_search=40)
    assert large.ef_search == 40
    large.save(tmp_path / "index.faiss")
    loaded, _ = VectorIndex.load(tmp_path / "index.faiss", DIM)  # today's tiers say M 8
    assert (loaded.hnsw_m, loaded.hnsw_ef_construction) == (12, 48)


def test_gallery_rebuilds_hnsw_when_it_grows_into_a_larger_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "HNSW_TIERS", ((0, 8, 20, 32), (650, 12, 48, 64)))
    vectors = clustered(700, seed=8)
    metas = [EntryMetadata(camera=i % 3) for i in range(700)]
    with Gallery.open(tmp_path, DIM, index="hnsw", background_rebuild=False) as gallery:
        gallery.add(vectors[:400], metas[:400])
        assert gallery._index.hnsw_m == 8
        gallery.add(vectors[400:], metas[400:])
        assert (gallery._index.hnsw_m, gallery._index.hnsw_ef_construction) == (12, 48)
        assert len(gallery) == 700 and gallery.stats()["hnsw_ef_search"] == 64
        gallery.delete(list(range(1, 101)))  # shrinking back below 650 keeps the graph
        assert gallery._index.hnsw_m == 12 and len(gallery) == 600


def test_auto_chooses_flat_then_ivf_then_ivf_sq8_by_size():
    assert _target_kind("auto", AUTO_THRESHOLD - 1, 1280, AUTO_THRESHOLD) == "flat"
    assert _target_kind("auto", 1_000_000, 1280, AUTO_THRESHOLD) == "ivf"
    assert _target_kind("auto", 1_000_000, 2048, AUTO_THRESHOLD) == "ivf"
    assert _target_kind("auto", 1_700_000, 1280, AUTO_THRESHOLD) == "ivf_sq8"
    assert _target_kind("auto", 10_000_000, 1280, AUTO_THRESHOLD) == "ivf_sq8"
    assert _target_kind("ivf_sq8", 999, 1280, AUTO_THRESHOLD) == "flat"  # too few to train
    assert _target_kind("hnsw", 10_000_000, 1280, AUTO_THRESHOLD) == "hnsw"


def test_auto_gallery_switches_to_ivf_sq8_past_the_memory_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(gallery_module, "AUTO_COMPRESS_BYTES", 1500 * DIM * 4)
    vectors = clustered(1800, seed=9)
    metas = [EntryMetadata(camera=i % 3) for i in range(1800)]
    settings = IndexSettings(ivf_nlist=8)
    with Gallery.open(
        tmp_path, DIM, settings=settings, auto_threshold=1000, background_rebuild=False
    ) as gallery:
        gallery.add(vectors[:1200], metas[:1200])
        assert gallery.stats()["index"] == "ivf"
        gallery.add(vectors[1200:], metas[1200:])
        assert gallery.stats()["index"] == "ivf_sq8" and len(gallery) == 1800
        (top,) = gallery.search(vectors[1700:1701], k=1)
        assert top[0].id == 1701


def test_reserved_ivf_lists_with_precomputed_assignment_equal_plain_adds():
    vectors = clustered(3000, seed=10)
    ids, cameras, times = columns(3000)
    plain = VectorIndex.build(DIM, "ivf_sq8", ids, vectors, cameras, times)
    sized = VectorIndex(DIM, "ivf_sq8")
    sized.train(vectors)
    lists = [sized.assign(vectors[s : s + 1000]) for s in range(0, 3000, 1000)]
    sized.reserve(np.bincount(np.concatenate(lists), minlength=sized.nlist))
    for number, start in enumerate(range(0, 3000, 1000)):
        rows = slice(start, start + 1000)
        sized.add(ids[rows], vectors[rows], cameras[rows], times[rows], lists[number])
    queries = clustered(10, seed=11)
    for (s1, i1), (s2, i2) in zip(
        plain.search(queries, 10, None), sized.search(queries, 10, None), strict=True
    ):
        assert i1.tolist() == i2.tolist() and np.allclose(s1, s2)
    inverted = faiss.downcast_InvertedLists(sized._faiss.invlists)
    assert sum(inverted.list_size(n) for n in range(sized.nlist)) == 3000
