"""Gallery library: exact search, filters, validation, persistence, ANN recall, threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import reid.gallery.gallery as gallery_module
from reid.gallery import (
    EntryMetadata,
    Gallery,
    GalleryClosedError,
    GalleryError,
    IndexSettings,
    SearchFilters,
    measure_recall,
)
from reid.gallery.index import VectorIndex

DIM = 32


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int = DIM, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Random vectors around ``clusters`` random centres (like re-ID identities)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    return unit(centres[rng.integers(0, clusters, n)] + 0.4 * rng.normal(size=(n, dim)))


def metadata_for(n: int, start: int = 0) -> list[EntryMetadata]:
    return [
        EntryMetadata(
            camera=i % 4,
            timestamp=float(i),
            track=i // 10,
            box=(1.0, 2.0, 30.0, 60.0),
            source=f"cam{i % 4}.mp4",
            extra={"i": i},
        )
        for i in range(start, start + n)
    ]


def brute_force(gallery_vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, keep=None):
    """Reference ranking: (scores, ids) sorted by score desc, id asc, over kept entries."""
    scores = gallery_vectors @ unit(query[None])[0]
    if keep is not None:
        scores, ids = scores[keep], ids[keep]
    order = np.lexsort((ids, -scores))
    return scores[order], ids[order]


def assert_same_ranking(matches, expected_scores, expected_ids):
    got_ids = np.array([m.id for m in matches], dtype=np.int64)
    got_scores = np.array([m.score for m in matches])
    assert len(got_ids) == len(expected_ids)
    np.testing.assert_allclose(got_scores, expected_scores, atol=1e-5)
    # Ids must agree except where two scores are equal within float noise.
    distinct = np.abs(np.diff(expected_scores, prepend=np.inf, append=-np.inf)) > 1e-5
    clear = distinct[:-1] & distinct[1:]
    np.testing.assert_array_equal(got_ids[clear], expected_ids[clear])
    assert sorted(got_ids) == sorted(expected_ids) or not clear.all()


@pytest.fixture
def filled(tmp_path):
    """A flat gallery of 600 clustered vectors with metadata; yields (gallery, vectors, ids)."""
    vectors = clustered(600)
    gallery = Gallery.open(tmp_path / "g", DIM, index="flat")
    ids = gallery.add(vectors, metadata_for(600))
    yield gallery, vectors, ids
    gallery.close()


# -- exact search ---------------------------------------------------------------------


def test_exact_search_equals_numpy_brute_force(filled):
    gallery, vectors, ids = filled
    queries = clustered(5, seed=7)
    results = gallery.search(queries, k=10)
    for query, matches in zip(queries, results, strict=True):
        scores, expected = brute_force(vectors, ids, query)
        assert_same_ranking(matches, scores[:10], expected[:10])


def test_ids_are_new_and_increasing_across_batches_and_deletes(tmp_path):
    with Gallery.open(tmp_path, DIM) as gallery:
        first = gallery.add(clustered(3), metadata_for(3))
        gallery.delete([int(first[-1])])
        second = gallery.add(clustered(2, seed=1), metadata_for(2))
    assert first.dtype == np.int64 and list(first) == [1, 2, 3]
    assert list(second) == [4, 5]  # a deleted id is never reused


def test_equal_scores_are_ordered_by_id(tmp_path):
    vector = clustered(1)
    with Gallery.open(tmp_path, DIM) as gallery:
        gallery.add(clustered(20, seed=3), metadata_for(20))
        duplicates = gallery.add(np.repeat(vector, 12, axis=0), metadata_for(12))
        matches = gallery.search(vector, k=5)[0]
    assert [m.id for m in matches] == list(duplicates[:5])
    assert all(m.score == pytest.approx(1.0, abs=1e-5) for m in matches)


def test_full_ranking_with_k_none_and_k_larger_than_the_gallery(filled):
    gallery, vectors, ids = filled
    query = clustered(1, seed=9)
    scores, expected = brute_force(vectors, ids, query[0])
    assert_same_ranking(gallery.search(query, k=None)[0], scores, expected)
    assert_same_ranking(gallery.search(query, k=5000)[0], scores, expected)


def test_empty_gallery_returns_one_empty_list_per_query(tmp_path):
    with Gallery.open(tmp_path, DIM) as gallery:
        assert gallery.search(clustered(3), k=10) == [[], [], []]
        assert gallery.search(clustered(2), k=None) == [[], []]
        assert len(gallery) == 0


def test_vectors_are_normalised_so_scores_are_cosines(tmp_path):
    with Gallery.open(tmp_path, DIM) as gallery:
        vectors = clustered(4).astype(np.float64) * np.array([[0.1], [3.0], [7.0], [100.0]])
        ids = gallery.add(np.asfortranarray(vectors), metadata_for(4))
        for vector, entry_id in zip(vectors, ids, strict=True):
            best = gallery.search(vector * 5, k=1)[0][0]
            assert best.id == entry_id and best.score == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(np.linalg.norm(gallery.embeddings(ids), axis=1), 1, atol=1e-6)


# -- filters ----------------------------------------------------------------------------


FILTERS = [
    (SearchFilters(exclude_cameras=frozenset({0})), lambda c, t: c != 0),
    (SearchFilters(include_cameras=frozenset({1, 3})), lambda c, t: np.isin(c, [1, 3])),
    (SearchFilters(time_from=100, time_to=250), lambda c, t: (t >= 100) & (t <= 250)),
    (
        SearchFilters(exclude_cameras=frozenset({2}), include_cameras=frozenset({2, 3}),
                      time_from=300),
        lambda c, t: (c == 3) & (t >= 300),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("filters", "keep"), FILTERS)
@pytest.mark.parametrize("k", [10, None])
def test_filters_equal_numpy_filtering_of_the_full_ranking(filled, filters, keep, k):
    gallery, vectors, ids = filled
    cameras, times = (ids - 1) % 4, (ids - 1).astype(float)
    query = clustered(1, seed=11)
    scores, expected = brute_force(vectors, ids, query[0], keep(cameras, times))
    matches = gallery.search(query, k=k, filters=filters)[0]
    assert_same_ranking(matches, scores[:k], expected[:k])
    assert all(keep(np.array(m.metadata.camera), np.array(m.metadata.timestamp)) for m in matches)


def test_min_score_drops_weaker_matches_only(filled):
    gallery, vectors, ids = filled
    query = clustered(1, seed=12)
    scores, expected = brute_force(vectors, ids, query[0])
    threshold = float(scores[30])
    matches = gallery.search(query, k=None, filters=SearchFilters(min_score=threshold))[0]
    kept = scores >= threshold
    assert_same_ranking(matches, scores[kept], expected[kept])
    assert len(gallery.search(query, k=10, filters=SearchFilters(min_score=threshold))[0]) == 10


def test_entries_without_camera_or_time_pass_exclusions_but_not_inclusions(tmp_path):
    with Gallery.open(tmp_path, DIM) as gallery:
        (entry_id,) = gallery.add(clustered(1), [EntryMetadata()])
        query = clustered(1)
        assert (
            gallery.search(query, filters=SearchFilters(exclude_cameras={0}))[0][0].id == entry_id
        )
        assert gallery.search(query, filters=SearchFilters(include_cameras={0})) == [[]]
        assert gallery.search(query, filters=SearchFilters(time_to=1e12)) == [[]]


# -- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("embeddings", "count", "message"),
    [
        (np.ones((2, DIM + 1)), 2, "dim 32"),
        (np.full((2, DIM), np.nan), 2, "NaN"),
        (np.ones((2, DIM)), 3, r"2 embedding\(s\) but 3 metadata"),
        (np.zeros((1, DIM)), 1, "all-zero"),
        (np.array([["a"] * DIM]), 1, "numeric"),
    ],
)
def test_bad_adds_raise_gallery_error_saying_what(tmp_path, embeddings, count, message):
    with Gallery.open(tmp_path, DIM) as gallery:
        with pytest.raises(GalleryError, match=message):
            gallery.add(embeddings, [EntryMetadata()] * count)
        assert len(gallery) == 0


def test_bad_searches_raise_gallery_error(filled):
    gallery, _, _ = filled
    with pytest.raises(GalleryError, match="dim 32"):
        gallery.search(np.ones((1, 8)))
    with pytest.raises(GalleryError, match="k must be >= 1"):
        gallery.search(np.ones((1, DIM)), k=0)
    with pytest.raises(GalleryError, match="infinity"):
        gallery.search(np.full((1, DIM), np.inf))


def test_metadata_validation_and_dict_round_trip():
    meta = EntryMetadata(camera=2, timestamp=5, box=[1, 2, 3, 4], source="a", extra={"x": [1]})
    assert meta.box == (1.0, 2.0, 3.0, 4.0) and meta.timestamp == 5.0
    assert EntryMetadata.from_dict(meta.to_dict()) == meta
    for bad, field in [
        ({"camera": "1"}, "camera"),
        ({"camera": -1}, "camera"),
        ({"box": [1, 2]}, "box"),
        ({"timestamp": float("nan")}, "timestamp"),
        ({"extra": {"f": object()}}, "extra"),
        ({"colour": "red"}, "unknown metadata field"),
    ]:
        with pytest.raises(ValueError, match=field):
            EntryMetadata.from_dict(bad)


def test_reopening_with_another_dim_names_both_dims(tmp_path):
    Gallery.open(tmp_path, DIM).close()
    with pytest.raises(GalleryError, match=r"dim 32.*dim 64"):
        Gallery.open(tmp_path, 64)
    with pytest.raises(GalleryError, match="needs dim"):
        Gallery.open(tmp_path / "new")
    with pytest.raises(GalleryError, match="no gallery"):
        Gallery.open(tmp_path / "other", DIM, create=False)


def test_a_directory_cannot_be_opened_twice(tmp_path):
    with Gallery.open(tmp_path, DIM), pytest.raises(GalleryError, match="already open"):
        Gallery.open(tmp_path, DIM)
    Gallery.open(tmp_path, DIM).close()


def test_closed_gallery_raises(tmp_path):
    gallery = Gallery.open(tmp_path, DIM)
    gallery.close()
    gallery.close()  # idempotent
    with pytest.raises(GalleryClosedError):
        gallery.search(clustered(1))
    with pytest.raises(GalleryClosedError):
        gallery.add(clustered(1), [EntryMetadata()])


# -- delete, get, thumbnails, stats -----------------------------------------------------


def test_delete_reports_missing_ids_and_removes_entries_everywhere(filled):
    gallery, vectors, ids = filled
    victim = int(ids[0])
    deleted, missing = gallery.delete([victim, 10_000, victim])
    assert (deleted, missing) == ([victim], [10_000])
    assert gallery.get([victim, int(ids[1])])[0] is None
    assert len(gallery) == len(ids) - 1
    assert victim not in [m.id for m in gallery.search(vectors[:1], k=None)[0]]
    assert gallery.delete([victim]) == ([], [victim])


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_filtered_search_after_deletes_equals_numpy(tmp_path, kind):
    vectors = clustered(1500)
    with Gallery.open(tmp_path, DIM, index=kind, background_rebuild=False) as gallery:
        ids = gallery.add(vectors, metadata_for(1500))
        gone = ids[::7]
        gallery.delete(gone.tolist())
        cameras = (ids - 1) % 4
        keep = (cameras != 1) & ~np.isin(ids, gone)
        query = clustered(1, seed=21)
        scores, expected = brute_force(vectors, ids, query[0], keep)
        matches = gallery.search(query, k=None, filters=SearchFilters(exclude_cameras={1}))[0]
        assert_same_ranking(matches, scores, expected)
        if kind == "flat":
            top = gallery.search(query, k=10, filters=SearchFilters(exclude_cameras={1}))[0]
            assert_same_ranking(top, scores[:10], expected[:10])


def test_get_returns_metadata_and_creation_time(filled):
    gallery, _, ids = filled
    entry = gallery.get([int(ids[5])])[0]
    assert entry.metadata == metadata_for(1, start=5)[0]
    assert entry.created > 1e9 and not entry.has_thumbnail


# -- paging ---------------------------------------------------------------------------------


def test_pages_list_every_entry_once_in_id_order_with_the_total(filled):
    gallery, _, ids = filled
    seen = []
    for offset in range(0, 600, 250):
        page = gallery.page(offset, 250)
        assert (page.total, page.offset, page.limit) == (600, offset, 250)
        seen += [entry.id for entry in page.entries]
    assert seen == [int(i) for i in ids]
    first = gallery.page(0, 3).entries[0]
    assert first == gallery.get([int(ids[0])])[0]  # the full entry: metadata, creation time


def test_a_page_past_the_end_is_empty_but_still_counts(filled):
    gallery, _, ids = filled
    assert [e.id for e in gallery.page(598, 50).entries] == [int(ids[598]), int(ids[599])]
    page = gallery.page(10_000, 50)
    assert page.entries == [] and page.total == 600


def test_page_filters_by_camera_and_inclusive_time_window_like_a_search(filled):
    gallery, _, ids = filled  # entry i: camera i % 4, timestamp i
    page = gallery.page(0, 1000, cameras=[1, 3], time_from=10.0, time_to=20.0)
    expected = [int(ids[i]) for i in range(10, 21) if i % 4 in (1, 3)]
    assert [e.id for e in page.entries] == expected and page.total == len(expected)
    second = gallery.page(2, 2, cameras=[1, 3], time_from=10.0, time_to=20.0)
    assert [e.id for e in second.entries] == expected[2:4] and second.total == len(expected)
    assert gallery.page(0, 10, cameras=[]).total == 0
    assert gallery.page(0, 10, cameras=[9]).total == 0


def test_entries_without_camera_or_time_fail_the_page_filters(tmp_path):
    with Gallery.open(tmp_path, DIM) as gallery:
        bare, full = gallery.add(
            clustered(2), [EntryMetadata(), EntryMetadata(camera=0, timestamp=5.0)]
        )
        assert [e.id for e in gallery.page(0, 10).entries] == [bare, full]
        assert [e.id for e in gallery.page(0, 10, cameras=[0]).entries] == [full]
        assert [e.id for e in gallery.page(0, 10, time_to=9.0).entries] == [full]


def test_deleted_entries_leave_the_pages(filled):
    gallery, _, ids = filled
    gallery.delete([int(ids[0]), int(ids[2])])
    page = gallery.page(0, 2)
    assert [e.id for e in page.entries] == [int(ids[1]), int(ids[3])] and page.total == 598


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"offset": -1}, "offset must be an integer >= 0"),
        ({"offset": 1.5}, "offset must be an integer"),
        ({"limit": 0}, "limit must be an integer >= 1"),
        ({"limit": True}, "limit must be an integer"),
        ({"limit": 10_001}, "limit must be at most 10000"),
        ({"cameras": "1,2"}, "cameras must be a sequence"),
        ({"cameras": [1.5]}, "cameras must be integers"),
        ({"time_from": float("nan")}, "time_from must be finite"),
        ({"time_to": "late"}, "time_to must be a number"),
    ],
)
def test_bad_page_requests_raise_gallery_error_saying_what(filled, kwargs, message):
    gallery, _, _ = filled
    with pytest.raises(GalleryError, match=message):
        gallery.page(**{"offset": 0, "limit": 10, **kwargs})


def test_thumbnails_round_trip_and_are_removed_with_their_entry(tmp_path):
    jpeg = b"\xff\xd8\xff" + bytes(range(256)) * 4
    with Gallery.open(tmp_path, DIM) as gallery:
        ids = gallery.add(clustered(2), metadata_for(2), thumbnails=[jpeg, None])
        path = gallery.thumbnail_path(int(ids[0]))
        assert path.read_bytes() == jpeg and path.is_relative_to(tmp_path / "thumbnails")
        assert gallery.thumbnail_path(int(ids[1])) is None
        assert [m.has_thumbnail for m in gallery.search(clustered(2), k=2)[0]].count(True) == 1
        assert gallery.stats()["with_thumbnails"] == 1
        gallery.delete([int(ids[0])])
        assert not path.exists() and gallery.thumbnail_path(int(ids[0])) is None


def test_orphan_thumbnails_from_a_crash_are_removed_on_open(tmp_path):
    Gallery.open(tmp_path, DIM).close()
    orphan = tmp_path / "thumbnails" / "000000" / "7.jpg"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"never committed")
    Gallery.open(tmp_path, DIM).close()
    assert not orphan.exists()


def test_stats_summarise_the_gallery(filled):
    gallery, _, _ = filled
    stats = gallery.stats()
    assert stats["size"] == 600 and stats["dim"] == DIM and stats["index"] == "flat"
    assert stats["cameras"] == {0: 150, 1: 150, 2: 150, 3: 150}
    assert stats["time_range"] == [0.0, 599.0]
    assert stats["directory"] == str(gallery.directory)


# -- persistence ------------------------------------------------------------------------


def snapshot_of(gallery: Gallery, queries: np.ndarray):
    return [[(m.id, round(m.score, 5), m.metadata) for m in r] for r in gallery.search(queries, 20)]


@pytest.mark.parametrize("use_snapshot", [False, True])
def test_reopen_restores_entries_and_rankings(tmp_path, use_snapshot):
    queries = clustered(4, seed=5)
    with Gallery.open(tmp_path, DIM, index="flat") as gallery:
        ids = gallery.add(clustered(300), metadata_for(300))
        gallery.delete([int(ids[3])])
        if use_snapshot:
            gallery.save_snapshot()
            # Changes after the snapshot must be reconciled from SQLite on open.
            gallery.add(clustered(5, seed=2), metadata_for(5))
            gallery.delete([int(ids[4])])
        before, stats = snapshot_of(gallery, queries), gallery.stats()
        stats.pop("index_requested")
    assert (tmp_path / "index.faiss").exists() == use_snapshot
    with Gallery.open(tmp_path) as reopened:
        assert snapshot_of(reopened, queries) == before
        assert {**reopened.stats(), "index_requested": None} == {**stats, "index_requested": None}


@pytest.mark.parametrize("kind", ["ivf", "ivf_sq8", "hnsw"])
def test_approximate_snapshot_reopens_with_later_changes(tmp_path, kind):
    vectors = clustered(2000)
    with Gallery.open(tmp_path, DIM, index=kind, background_rebuild=False) as gallery:
        ids = gallery.add(vectors, metadata_for(2000))
        assert gallery.stats()["index"] == kind
        gallery.save_snapshot()
        gallery.delete([int(ids[0])])
        (late,) = gallery.add(clustered(1, seed=99), metadata_for(1))
    with Gallery.open(tmp_path, index=kind) as reopened:
        assert len(reopened) == 2000 and reopened.stats()["index"] == kind
        assert reopened.search(clustered(1, seed=99), k=1)[0][0].id == late
        assert int(ids[0]) not in [m.id for m in reopened.search(vectors[:1], k=50)[0]]


def test_corrupt_snapshot_is_ignored_and_rebuilt_from_sqlite(tmp_path):
    with Gallery.open(tmp_path, DIM) as gallery:
        ids = gallery.add(clustered(50), metadata_for(50))
    (tmp_path / "index.faiss").write_bytes(b"garbage")
    with Gallery.open(tmp_path) as reopened:
        assert len(reopened) == 50
        assert reopened.search(clustered(50)[:1], k=1)[0][0].id == ids[0]


# -- approximate indexes -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ivf", "ivf_sq8", "hnsw"])
def test_approximate_recall_at_10_is_at_least_0_9_on_clustered_data(tmp_path, kind):
    vectors = clustered(4000, dim=64, clusters=100)
    with Gallery.open(tmp_path, 64, index=kind, background_rebuild=False) as gallery:
        gallery.add(vectors, [EntryMetadata(camera=i % 3) for i in range(4000)])
        assert gallery.stats()["index"] == kind
        queries = clustered(100, dim=64, clusters=100, seed=1)
        assert measure_recall(gallery, queries, k=10) >= 0.9
        assert gallery.stats()["recall"]["recall"] >= 0.9
        # Filtered approximate results pass the filter and fill k.
        filters = SearchFilters(exclude_cameras={0})
        for matches in gallery.search(queries[:5], k=10, filters=filters):
            assert len(matches) == 10 and all(m.metadata.camera != 0 for m in matches)


def test_hnsw_deletes_are_skipped_and_trigger_a_rebuild(tmp_path):
    vectors = clustered(300)
    with Gallery.open(tmp_path, DIM, index="hnsw", background_rebuild=False) as gallery:
        ids = gallery.add(vectors, metadata_for(300))
        gallery.delete(ids[:10].tolist())
        assert gallery.stats()["hnsw_tombstones"] == 10
        assert not set(ids[:10]) & {m.id for m in gallery.search(vectors[:10], k=20)[0]}
        gallery.delete(ids[10:100].tolist())  # > 20% tombstones: rebuilt without them
        assert gallery.stats()["hnsw_tombstones"] == 0 and len(gallery) == 200


def test_auto_switches_from_flat_to_ivf_past_the_threshold(tmp_path):
    settings = IndexSettings(ivf_nlist=8)
    with Gallery.open(
        tmp_path, DIM, settings=settings, auto_threshold=1000, background_rebuild=False
    ) as gallery:
        gallery.add(clustered(900), metadata_for(900))
        assert gallery.stats()["index"] == "flat"
        gallery.add(clustered(200, seed=1), metadata_for(200, start=900))
        assert gallery.stats()["index"] == "ivf" and len(gallery) == 1100
        assert measure_recall(gallery, clustered(50, seed=2)) >= 0.9


# -- threads -----------------------------------------------------------------------------


def test_concurrent_searches_during_adds_see_only_whole_batches(tmp_path):
    batch, batches = 25, 40
    vectors = clustered(batch * batches, seed=4)
    errors: list[BaseException] = []
    done = threading.Event()
    with Gallery.open(tmp_path, DIM, index="flat") as gallery:

        def writer() -> None:
            try:
                for b in range(batches):
                    rows = slice(b * batch, (b + 1) * batch)
                    gallery.add(vectors[rows], metadata_for(batch, start=b * batch))
            except BaseException as error:
                errors.append(error)
            finally:
                done.set()

        def reader() -> None:
            try:
                while not done.is_set():
                    (ranking,) = gallery.search(vectors[:1], k=None)
                    assert len(ranking) % batch == 0  # never half a batch
                    ids = [m.id for m in ranking]
                    assert len(set(ids)) == len(ids)
                    assert all(m.metadata.extra["i"] == m.id - 1 for m in ranking)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=writer)] + [
            threading.Thread(target=reader) for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        assert len(gallery) == batch * batches


def test_background_switch_to_ivf_keeps_writes_made_during_the_rebuild(tmp_path, monkeypatch):
    slow_build_started = threading.Event()
    original_build = gallery_module._build_from_store  # IVF builds stream from SQLite

    def slow_build(*args, **kwargs):
        slow_build_started.set()
        time.sleep(0.5)  # adds and deletes land in the old index meanwhile
        return original_build(*args, **kwargs)

    monkeypatch.setattr(gallery_module, "_build_from_store", slow_build)
    batch, batches = 100, 15
    vectors = clustered(batch * batches, seed=6)
    settings = IndexSettings(ivf_nlist=8, ivf_nprobe=8)  # all lists probed: exact results
    with Gallery.open(tmp_path, DIM, index="ivf", settings=settings) as gallery:
        for b in range(batches):  # crosses 1,000 entries: IVF built in the background
            rows = slice(b * batch, (b + 1) * batch)
            gallery.add(vectors[rows], metadata_for(batch, start=b * batch))
            assert len(gallery.search(vectors[:1], k=5)[0]) == 5
        assert slow_build_started.is_set() and gallery.stats()["index"] == "flat"
        gallery.delete([1, 2])
        assert gallery.wait_for_rebuild(timeout=60)
        assert gallery.stats()["index"] == "ivf" and len(gallery) == batch * batches - 2
        best = [r[0].id for r in gallery.search(vectors[2:], k=1)]
        assert best == list(range(3, batch * batches + 1))
        assert not {1, 2} & {m.id for m in gallery.search(vectors[:2], k=10)[0]}


def test_a_failed_index_update_after_the_commit_leaves_no_entry_unsearchable(filled, monkeypatch):
    gallery, _, _ = filled
    real_add = VectorIndex.add
    failures = iter([MemoryError("simulated: no memory for the index")])

    def add_failing_once(self, *args, **kwargs):
        error = next(failures, None)
        if error is not None:
            raise error
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(VectorIndex, "add", add_failing_once)
    new = clustered(3, seed=9)
    ids = gallery.add(new, metadata_for(3))  # committed; the index is reloaded from the store
    assert len(gallery) == 603
    for vector, id_ in zip(new, ids, strict=True):
        assert gallery.search(vector[None], k=1)[0][0].id == id_


def test_an_index_that_cannot_be_rebuilt_says_the_entries_are_stored(filled, monkeypatch):
    gallery, _, _ = filled

    def always_fails(self, *args, **kwargs):
        raise MemoryError("simulated: no memory for the index")

    monkeypatch.setattr(VectorIndex, "add", always_fails)
    with pytest.raises(GalleryError, match=r"stored durably .* reopen the gallery"):
        gallery.add(clustered(2, seed=5), metadata_for(2))
