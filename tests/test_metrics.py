"""Tests for reid.metrics: hand-computed cases, a per-query reference loop, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reid.metrics import RankResult, evaluate_features, evaluate_rank, pairwise_distance

# ----------------------------------------------------------------------------- reference


def reference_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, inf_is_missed=False):
    """The specification: a plain per-query loop over a stable argsort.

    ``inf_is_missed``: matches at distance +inf were not retrieved: no AP term (still
    in the denominator), INP 0, no CMC credit.
    Returns (cmc, mAP, mINP, num_valid, num_skipped); cmc/mAP/mINP are None when no
    query is valid.
    """
    cmcs, aps, inps, skipped = [], [], [], 0
    for i in range(len(q_pids)):
        order = np.argsort(distmat[i], kind="stable")
        pids, cams = g_pids[order], g_camids[order]
        same_id = pids == q_pids[i]
        keep = (pids != -1) & ~(same_id & (cams == q_camids[i]))
        # Distractors (pid 0) and junk (pid -1) are never "the same person".
        matches = (same_id & (q_pids[i] > 0))[keep]
        if not matches.any():
            skipped += 1
            continue
        found = matches & ~(inf_is_missed & (distmat[i][order][keep] == np.inf))
        total = int(matches.sum())
        ranks = np.flatnonzero(found) + 1  # 1-based ranks of the found matches after removal
        first = ranks[0] if len(ranks) else np.inf
        cmcs.append((np.arange(1, max_rank + 1) >= first).astype(float))
        aps.append(np.sum(np.arange(1, len(ranks) + 1) / ranks) / total)
        inps.append(total / ranks[-1] if len(ranks) == total else 0.0)
    if not aps:
        return None, None, None, 0, skipped
    return np.mean(cmcs, axis=0), float(np.mean(aps)), float(np.mean(inps)), len(aps), skipped


def assert_matches_reference(result: RankResult, distmat, q_pids, g_pids, q_cams, g_cams, k):
    cmc, m_ap, m_inp, valid, skipped = reference_rank(distmat, q_pids, g_pids, q_cams, g_cams, k)
    assert result.num_valid_queries == valid
    assert result.num_skipped_queries == skipped
    np.testing.assert_allclose(result.cmc, cmc, atol=1e-6, rtol=0)
    assert result.mAP == pytest.approx(m_ap, abs=1e-6)
    assert result.mINP == pytest.approx(m_inp, abs=1e-6)


def ids(*values):
    return np.array(values, dtype=np.int64)


# ----------------------------------------------------------------------------- hand-computed


def test_removal_junk_and_distractors():
    # One query: pid 1, camera 0. Gallery, already in distance order:
    #   g0 pid 1 cam 0 d=.1 -> same pid + same camera: removed
    #   g1 pid 0 cam 1 d=.2 -> distractor: a negative           -> rank 1
    #   g2 pid -1 cam 1 d=.3 -> junk: removed
    #   g3 pid 1 cam 1 d=.4 -> match                            -> rank 2
    #   g4 pid 2 cam 1 d=.5 -> other identity: a negative       -> rank 3
    #   g5 pid 1 cam 2 d=.6 -> match                            -> rank 4
    # CMC: first match at rank 2 -> rank-1 = 0, rank-k = 1 for k >= 2.
    # AP  = (1/2 + 2/4) / 2 = 0.5;  INP = 2 matches / rank 4 of the last = 0.5.
    distmat = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    res = evaluate_rank(distmat, ids(1), ids(1, 0, -1, 1, 2, 1), ids(0), ids(0, 1, 1, 1, 1, 2), 5)
    np.testing.assert_array_equal(res.cmc, [0, 1, 1, 1, 1])
    assert res.mAP == pytest.approx(0.5)
    assert res.mINP == pytest.approx(0.5)
    assert (res.num_valid_queries, res.num_skipped_queries) == (1, 0)


def test_ties_are_broken_by_gallery_index():
    # All distances equal -> gallery order g0 g1 g2 g3. Query pid 1, camera 0:
    #   g0 pid 2 cam 1 -> negative, rank 1
    #   g1 pid 1 cam 1 -> match,    rank 2
    #   g2 pid 1 cam 0 -> removed (same camera)
    #   g3 pid 1 cam 2 -> match,    rank 3
    # AP = (1/2 + 2/3) / 2 = 7/12; INP = 2/3; rank-1 = 0, rank-2 = 1.
    g_pids, g_cams = ids(2, 1, 1, 1), ids(1, 1, 0, 2)
    res = evaluate_rank(np.ones((1, 4)), ids(1), g_pids, ids(0), g_cams, 3)
    np.testing.assert_array_equal(res.cmc, [0, 1, 1])
    assert res.mAP == pytest.approx(7 / 12)
    assert res.mINP == pytest.approx(2 / 3)
    # Moving the negative's tie partner: g0 and g1 tie at 0 -> g0 (lower index) first.
    res = evaluate_rank(np.array([[0.0, 0.0, 5, 5]]), ids(1), g_pids, ids(0), g_cams, 3)
    assert res.mAP == pytest.approx(7 / 12)
    # Reversing the indices of the tie puts the match first: ranks 1 and 3.
    # AP = (1/1 + 2/3) / 2 = 5/6.
    res = evaluate_rank(np.array([[0.0, 0.0, 5, 5]]), ids(1), ids(1, 2, 1, 1), ids(0), g_cams, 3)
    assert res.mAP == pytest.approx(5 / 6)
    np.testing.assert_array_equal(res.cmc, [1, 1, 1])


def test_skipped_queries_are_counted_and_excluded():
    # q0 pid 1 cam 0: the valid one. Gallery order g0 (pid 1, cam 1, d=1) first -> AP 1.
    # q1 pid 2 cam 0: its only gallery image is camera 0 -> skipped.
    # q2 pid 7: not in the gallery -> skipped.
    # q3 pid 0 (distractor) and q4 pid -1 (junk): never have a match -> skipped.
    g_pids, g_cams = ids(1, 2, 0, -1), ids(1, 0, 1, 0)
    distmat = np.tile([1.0, 2.0, 3.0, 4.0], (5, 1))
    res = evaluate_rank(distmat, ids(1, 2, 7, 0, -1), g_pids, ids(0, 0, 0, 1, 1), g_cams, 2)
    assert (res.num_valid_queries, res.num_skipped_queries) == (1, 4)
    assert res.mAP == 1.0
    assert res.mINP == 1.0
    np.testing.assert_array_equal(res.cmc, [1, 1])


def test_two_queries_average_and_minp():
    # q0 as in test_removal_junk_and_distractors: AP 0.5, INP 0.5, first match rank 2.
    # q1 pid 2 cam 0 against the same gallery: its only image g4 (cam 1) comes after
    #   g0 (pid 1), g1 (pid 0), g3 (pid 1) with g2 junk removed -> rank 4.
    #   AP = 1/4, INP = 1/4.
    # mAP = (0.5 + 0.25) / 2 = 0.375; mINP = 0.375; CMC: rank-1 0, rank-2..3 1/2, rank-4 1.
    row = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    res = evaluate_rank(
        np.array([row, row]), ids(1, 2), ids(1, 0, -1, 1, 2, 1), ids(0, 0), ids(0, 1, 1, 1, 1, 2), 4
    )
    np.testing.assert_allclose(res.cmc, [0, 0.5, 0.5, 1])
    assert res.mAP == pytest.approx(0.375)
    assert res.mINP == pytest.approx(0.375)


def test_minp_differs_from_map():
    # Query pid 1 cam 0; gallery order: match, negative, negative, match.
    # AP = (1/1 + 2/4) / 2 = 0.75, INP = 2/4 = 0.5.
    res = evaluate_rank(
        np.array([[1.0, 2, 3, 4]]), ids(1), ids(1, 2, 3, 1), ids(0), ids(1, 1, 1, 2)
    )
    assert res.mAP == pytest.approx(0.75)
    assert res.mINP == pytest.approx(0.5)


def test_max_rank_beyond_gallery_keeps_length_and_last_value():
    res = evaluate_rank(np.array([[2.0, 1.0]]), ids(1), ids(1, 3), ids(0), ids(1, 1), max_rank=10)
    assert res.cmc.shape == (10,)
    np.testing.assert_array_equal(res.cmc, [0] + [1] * 9)  # the match is 2nd of 2
    assert res.rank(10) == 1.0


def test_result_helpers():
    res = evaluate_rank(
        np.array([[1.0, 2, 3, 4]]), ids(1), ids(1, 2, 3, 1), ids(0), ids(1, 1, 1, 2)
    )
    assert len(res.cmc) == 50
    d = res.as_dict()
    assert {"mAP", "mINP", "rank1", "rank5", "rank10", "rank20"} <= set(d)
    assert d["num_valid_queries"] == 1 and d["num_skipped_queries"] == 0
    assert all(0.0 <= d[k] <= 1.0 for k in ("mAP", "mINP", "rank1", "rank5"))
    assert "mAP" in res.format_table() and "75.00" in res.format_table()
    with pytest.raises(ValueError, match="rank k"):
        res.rank(0)
    with pytest.raises(ValueError):
        res.cmc[0] = 0.5  # read-only


# ----------------------------------------------------------------------------- properties


SMALL_INTS = st.integers(0, 3)


PIDS = st.sampled_from([-1, 0, 1, 1, 2, 2, 3])  # few identities, mostly real ones
CAMS = st.integers(0, 2)


def vector(draw, length, elements):
    # fill=nothing(): draw every element (the default fills most cells with one value).
    return draw(hnp.arrays(np.int64, length, elements=elements, fill=st.nothing()))


@st.composite
def rank_problems(draw, values=SMALL_INTS):
    num_q = draw(st.integers(1, 8))
    num_g = draw(st.integers(1, 25))
    distmat = draw(hnp.arrays(np.float64, (num_q, num_g), elements=values, fill=st.nothing()))
    q_pids, g_pids = vector(draw, num_q, PIDS), vector(draw, num_g, PIDS)
    q_cams, g_cams = vector(draw, num_q, CAMS), vector(draw, num_g, CAMS)
    max_rank = draw(st.integers(1, 30))
    chunk = draw(st.integers(1, 9))
    return distmat, q_pids, g_pids, q_cams, g_cams, max_rank, chunk


def check_against_reference(problem):
    distmat, q_pids, g_pids, q_cams, g_cams, max_rank, chunk = problem
    ref = reference_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank)
    if ref[3] == 0:
        with pytest.raises(ValueError, match="no query has a valid match"):
            evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank, chunk_size=chunk)
        return
    res = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank, chunk_size=chunk)
    assert_matches_reference(res, distmat, q_pids, g_pids, q_cams, g_cams, max_rank)


@settings(max_examples=300, deadline=None)
@given(rank_problems())
def test_equals_reference_loop_with_many_ties(problem):
    check_against_reference(problem)


SPECIAL = st.sampled_from([0.0, -0.0, 0.5, 1e-30, 2.0, np.inf, -np.inf])


@settings(max_examples=100, deadline=None)
@given(rank_problems(values=SPECIAL))
def test_equals_reference_loop_signed_zero_and_inf(problem):
    check_against_reference(problem)


@settings(max_examples=50, deadline=None)
@given(rank_problems(values=st.floats(0, 1, width=32)))
def test_equals_reference_loop_float32(problem):
    distmat, *rest = problem
    check_against_reference((distmat.astype(np.float32), *rest))


@settings(max_examples=200, deadline=None)
@given(rank_problems(values=SPECIAL))
def test_truncated_rankings_count_unretrieved_matches_as_missed(problem):
    distmat, q_pids, g_pids, q_cams, g_cams, max_rank, chunk = problem
    cmc, m_ap, m_inp, valid, _ = reference_rank(
        distmat, q_pids, g_pids, q_cams, g_cams, max_rank, inf_is_missed=True
    )
    if valid == 0:
        return
    res = evaluate_rank(
        distmat, q_pids, g_pids, q_cams, g_cams, max_rank, chunk_size=chunk, inf_is_missed=True
    )
    np.testing.assert_allclose(res.cmc, cmc, atol=1e-6, rtol=0)
    assert res.mAP == pytest.approx(m_ap, abs=1e-6)
    assert res.mINP == pytest.approx(m_inp, abs=1e-6)


def test_equals_reference_loop_larger_random():
    rng = np.random.default_rng(0)
    num_q, num_g = 60, 400
    g_pids = rng.integers(-1, 40, num_g)
    q_pids = rng.integers(1, 45, num_q)
    distmat = rng.random((num_q, num_g)).astype(np.float32)
    distmat[:, ::7] = distmat[:, 3:4]  # plenty of exact ties
    q_cams, g_cams = rng.integers(0, 6, num_q), rng.integers(0, 6, num_g)
    res = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, 50, chunk_size=16)
    assert_matches_reference(res, distmat, q_pids, g_pids, q_cams, g_cams, 50)


# ----------------------------------------------------------------------------- features


def feature_problem(seed=0, num_q=23, num_g=71, dim=12):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, dim))
    q_pids, g_pids = rng.integers(1, 11, num_q), rng.integers(-1, 11, num_g)
    q_feats = centres[q_pids - 1] + rng.normal(scale=0.8, size=(num_q, dim))
    g_feats = centres[np.maximum(g_pids, 1) - 1] + rng.normal(scale=0.8, size=(num_g, dim))
    g_feats[0] = 0.0  # a zero vector must not produce NaN
    return q_feats, g_feats, q_pids, g_pids, rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "sqeuclidean"])
def test_evaluate_features_chunked_equals_full_matrix(metric):
    q_feats, g_feats, q_pids, g_pids, q_cams, g_cams = feature_problem()
    full = pairwise_distance(q_feats, g_feats, metric)
    expected = evaluate_rank(full, q_pids, g_pids, q_cams, g_cams, 20)
    got = evaluate_features(
        q_feats, g_feats, q_pids, g_pids, q_cams, g_cams, metric=metric, max_rank=20, chunk_size=5
    )
    np.testing.assert_allclose(got.cmc, expected.cmc, atol=1e-6)
    assert got.mAP == pytest.approx(expected.mAP, abs=1e-6)
    assert got.mINP == pytest.approx(expected.mINP, abs=1e-6)
    assert got.num_skipped_queries == expected.num_skipped_queries
    assert_matches_reference(got, full, q_pids, g_pids, q_cams, g_cams, 20)


def test_pairwise_distance_values():
    a = np.array([[3.0, 4.0], [0.0, 0.0]])
    b = np.array([[3.0, 4.0], [-4.0, 3.0], [0.0, 0.0]])
    cos = pairwise_distance(a, b, "cosine")
    assert cos.dtype == np.float32 and cos.shape == (2, 3)
    np.testing.assert_allclose(cos, [[0, 1, 1], [1, 1, 1]], atol=1e-6)  # zero vector: 1
    euc = pairwise_distance(a, b, "euclidean")
    np.testing.assert_allclose(euc, [[0, np.sqrt(50), 5], [5, 5, 0]], atol=1e-5)
    sq = pairwise_distance(a, b, "sqeuclidean")
    np.testing.assert_allclose(sq, [[0, 50, 25], [25, 25, 0]], atol=1e-4)
    with pytest.raises(ValueError, match="unknown metric"):
        pairwise_distance(a, b, "manhattan")
    with pytest.raises(ValueError, match="feature dimensions differ"):
        pairwise_distance(a, np.ones((2, 3)))


# ----------------------------------------------------------------------------- bad input


def test_shape_mismatches_are_rejected():
    d = np.ones((2, 3))
    q, g = ids(1, 2), ids(1, 2, 3)
    with pytest.raises(ValueError, match="distmat must be 2-D"):
        evaluate_rank(np.ones(3), q, g, q, g)
    with pytest.raises(ValueError, match=r"q_pids .* 2 entries"):
        evaluate_rank(d, ids(1), g, q, g)
    with pytest.raises(ValueError, match=r"g_camids .* 3 entries"):
        evaluate_rank(d, q, g, q, ids(1, 2))
    with pytest.raises(ValueError, match="q_camids"):
        evaluate_rank(d, q, g, np.ones((2, 1)), g)
    with pytest.raises(ValueError, match="no queries"):
        evaluate_rank(np.ones((0, 3)), ids(), g, ids(), g)
    with pytest.raises(ValueError, match="max_rank"):
        evaluate_rank(d, q, g, q, g, max_rank=0)
    with pytest.raises(ValueError, match="real numbers"):
        evaluate_rank(d.astype(complex), q, g, q, g)
    with pytest.raises(ValueError, match="g_pids"):
        evaluate_features(np.ones((2, 4)), np.ones((5, 4)), q, g, q, ids(1, 2, 3, 4, 5))


def test_nan_distances_are_rejected():
    d = np.array([[0.1, np.nan, 0.3]])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(d, ids(1), ids(1, 2, 1), ids(0), ids(1, 1, 1))


def test_no_valid_query_raises():
    # The only same-identity image is in the query's own camera.
    with pytest.raises(ValueError, match="no query has a valid match"):
        evaluate_rank(np.ones((1, 2)), ids(1), ids(1, 2), ids(0), ids(0, 0))
    with pytest.raises(ValueError, match="no query has a valid match"):
        evaluate_rank(np.ones((1, 0)), ids(1), ids(), ids(0), ids())
