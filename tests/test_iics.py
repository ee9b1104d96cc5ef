"""IICS (intra-inter camera similarity): its two stages, its similarity, its schedule.

A tiny well-separated train set (6 identities x 8 images over 3 cameras) stands in
for the features the loop extracts; every number checked is the reference's rule
(SY-Xuan/IICS) as ``trainer/methods/iics.py`` documents it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reid.models import build_model
from reid.rerank import re_rank_distance
from trainer.methods import build_method
from trainer.methods.base import EpochContext, TrainInfo
from trainer.methods.iics import (
    Iics,
    IicsParams,
    cluster_counts,
    cluster_distance,
    distribution_jaccard,
    intra_inter_distance,
)

NUM_IDS, PER_ID, NUM_CAMS = 6, 8, 3
N = NUM_IDS * PER_ID
INPUT = (64, 32)
CAMIDS = np.arange(N) % NUM_CAMS
IDENTITY = np.repeat(np.arange(NUM_IDS), PER_ID)
SMALL = {"intra_clusters": NUM_IDS, "inter_clusters": NUM_IDS, "k1": 5, "k2": 2}


def _make(params: dict | None = None, epochs: int = 6) -> Iics:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no pretrained weights"
        encoder = build_model("resnet18", pretrained=None, input_size=INPUT)
    info = TrainInfo(N, NUM_CAMS, None, encoder.embedding_dim, torch.device("cpu"), epochs)
    method = build_method("iics", encoder, {**SMALL, **(params or {})}, info)
    assert isinstance(method, Iics)
    return method


def _features(dim: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(NUM_IDS, dim, generator=gen), dim=1)
    return F.normalize(centres[IDENTITY] + 0.01 * torch.randn(N, dim, generator=gen), dim=1)


def _context(features: torch.Tensor, epoch: int) -> EpochContext:
    return EpochContext(epoch, [], CAMIDS, None, features)


def _batch(labels: np.ndarray) -> dict[str, dict[str, torch.Tensor]]:
    index = np.concatenate([np.flatnonzero(labels == c)[:4] for c in np.unique(labels)[:4]])
    gen = torch.Generator().manual_seed(1)
    return {
        "target": {
            "image": torch.randn(len(index), 3, *INPUT, generator=gen),
            "index": torch.from_numpy(index),
            "label": torch.from_numpy(labels[index]),
            "camid": torch.from_numpy(CAMIDS[index]),
        }
    }


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = {(int(x), int(y)) for x, y in zip(a, b, strict=True)}
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_epochs_alternate_stages_and_cluster_at_each_stage_start() -> None:
    m = _make({"intra_epochs": 2, "inter_epochs": 1})
    assert [m.stage_of(e) for e in range(4)] == [
        ("intra", True), ("intra", False), ("inter", True), ("intra", True),
    ]  # fmt: skip


def test_intra_stage_clusters_each_camera_on_its_own() -> None:
    m = _make()
    plan = m.prepare_epoch(_context(_features(m.info.embedding_dim), epoch=0))
    k = m.params.intra_clusters
    assert plan.stats["stage"] == 0.0
    np.testing.assert_array_equal(plan.labels // k, CAMIDS)  # a camera's own label block
    for cam in range(NUM_CAMS):  # each camera: its identities, exactly
        members = cam == CAMIDS
        assert _same_partition(plan.labels[members], IDENTITY[members])
    assert m.intra_sizes.tolist() == [NUM_IDS] * NUM_CAMS
    assert {id(p) for p in plan.fresh_parameters} == {id(m.intra_weight), id(m.intra_bn.weight)}


def test_a_camera_with_fewer_images_than_clusters_gets_half_its_count() -> None:
    m = _make({"intra_clusters": 12})  # 16 images per camera < 2 x 12
    plan = m.prepare_epoch(_context(_features(m.info.embedding_dim), epoch=0))
    assert m.intra_sizes.tolist() == [12] * NUM_CAMS  # 16 >= 12: as asked
    m = _make({"intra_clusters": 20})  # 16 < 20: half the images, as the reference
    plan = m.prepare_epoch(_context(_features(m.info.embedding_dim), epoch=0))
    assert m.intra_sizes.tolist() == [8] * NUM_CAMS
    assert (plan.labels % 20 < 8).all()


def test_intra_loss_is_half_the_sum_over_cameras_of_each_cameras_mean_ce() -> None:
    m = _make()
    plan = m.prepare_epoch(_context(_features(m.info.embedding_dim), epoch=0))
    batch = _batch(plan.labels)
    m.train()
    torch.manual_seed(5)
    out = m.training_step(batch)
    assert set(out.losses) == {"intra"}
    # recompute from the same forward pass in eval-free form
    stream = batch["target"]
    torch.manual_seed(5)
    feats = m.encoder.forward_train(stream["image"]).embedding
    k = m.params.intra_clusters
    logits = (m.intra_bn(feats) @ m.intra_weight.t()).view(len(feats), NUM_CAMS, k)
    expected = 0.0
    for cam in stream["camid"].unique().tolist():
        rows = stream["camid"] == cam
        own = logits[rows, cam]
        expected = expected + F.cross_entropy(own, stream["label"][rows] - cam * k)
    torch.testing.assert_close(out.losses["intra"], 0.5 * expected, rtol=1e-4, atol=1e-5)


def test_inter_stage_finds_identities_across_cameras_with_ce_and_triplet() -> None:
    m = _make()
    feats = _features(m.info.embedding_dim)
    m.prepare_epoch(_context(feats, epoch=0))
    plan = m.prepare_epoch(_context(feats, epoch=1))
    assert plan.stats["stage"] == 1.0 and plan.stats["num_clusters"] == NUM_IDS
    assert _same_partition(plan.labels, IDENTITY)  # one cluster spans all cameras
    assert {id(p) for p in plan.fresh_parameters} == {id(m.inter_weight), id(m.inter_bn.weight)}
    out = m.training_step(_batch(plan.labels))
    assert set(out.losses) == {"inter", "triplet"}
    sum(out.losses.values()).backward()
    assert m.inter_weight.grad is not None and m.intra_weight.grad is None


def test_each_stage_starts_a_fresh_classifier() -> None:
    m = _make()
    feats = _features(m.info.embedding_dim)
    m.prepare_epoch(_context(feats, epoch=0))
    with torch.no_grad():
        m.intra_weight.fill_(1.0)
        m.intra_bn.weight.fill_(3.0)
    m.prepare_epoch(_context(feats, epoch=2))  # the next round's intra stage
    assert float(m.intra_weight.detach().std()) == pytest.approx(0.001, rel=0.2)
    torch.testing.assert_close(m.intra_bn.weight, torch.ones_like(m.intra_bn.weight))
    assert not m.intra_bn.bias.requires_grad and not m.inter_bn.bias.requires_grad


def test_mix_rate_decays_over_the_rounds_as_eq5() -> None:
    m = _make({"mix_rate": 0.02, "mix_decay": 0.6}, epochs=8)  # 4 rounds of 2 epochs
    rates = [m.mix_rate_at(e) for e in range(8)]
    expected = [0.02 * (1 - r / 4) ** 0.6 for r in (0, 0, 1, 1, 2, 2, 3, 3)]
    assert rates == pytest.approx(expected)


def test_distribution_jaccard_is_sum_of_minima_over_sum_of_maxima() -> None:
    p = torch.softmax(torch.randn(7, 5, generator=torch.Generator().manual_seed(2)), dim=1)
    got = distribution_jaccard(p)
    for i in range(7):
        for j in range(7):
            expected = torch.minimum(p[i], p[j]).sum() / torch.maximum(p[i], p[j]).sum()
            torch.testing.assert_close(got[i, j], expected)
    torch.testing.assert_close(got.diagonal(), torch.ones(7))


def test_intra_inter_distance_lowers_only_cross_camera_pairs() -> None:
    feats = F.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(3)), dim=1)
    cams = torch.tensor([0, 0, 1, 1, 2, 2])
    p = torch.softmax(torch.randn(6, 5, generator=torch.Generator().manual_seed(4)), dim=1)
    plain = intra_inter_distance(feats, cams, None, 0.0)
    mixed = intra_inter_distance(feats, cams, p, 0.1)
    torch.testing.assert_close(plain, 1 - feats @ feats.t())
    cross = cams[:, None] != cams[None, :]
    torch.testing.assert_close(mixed[~cross], plain[~cross])
    torch.testing.assert_close(mixed[cross], (plain - 0.1 * distribution_jaccard(p))[cross])


def test_clustering_a_distance_recovers_separated_groups() -> None:
    feats = _features(16).numpy()
    labels = cluster_distance(1 - feats @ feats.T, NUM_IDS, _make().params)
    assert _same_partition(labels, IDENTITY)
    assert labels[0] == 0  # renumbered by first member


def test_re_rank_distance_agrees_with_feature_re_ranking_structure() -> None:
    feats = _features(16).numpy()
    dist = 1 - feats @ feats.T
    reranked = re_rank_distance(dist, k1=5, k2=2, lambda_value=0.3)
    assert reranked.shape == (N, N) and np.isfinite(reranked).all()
    np.testing.assert_allclose(np.diag(reranked), 0.0, atol=1e-6)
    same = IDENTITY[:, None] == IDENTITY[None, :]
    assert reranked[same].max() < reranked[~same].min()  # identities stay apart
    with pytest.raises(ValueError, match="square"):
        re_rank_distance(dist[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        re_rank_distance(np.full((3, 3), np.nan))


def test_resume_restores_labels_cluster_counts_and_classifiers() -> None:
    m = _make()
    feats = _features(m.info.embedding_dim)
    m.prepare_epoch(_context(feats, epoch=0))
    fresh = _make()
    fresh.load_state_dict(m.state_dict())
    torch.testing.assert_close(fresh.pseudo_labels, m.pseudo_labels, rtol=0, atol=0)
    torch.testing.assert_close(fresh.intra_sizes, m.intra_sizes, rtol=0, atol=0)
    torch.testing.assert_close(fresh.intra_weight, m.intra_weight, rtol=0, atol=0)
    # a resumed run at an inter epoch scores the cameras with the restored classifiers
    torch.testing.assert_close(fresh.camera_distributions(feats), m.camera_distributions(feats))


def test_cluster_counts_follow_the_train_set_size_by_default() -> None:
    auto = IicsParams()
    assert (auto.intra_clusters, auto.inter_clusters) == ("auto", "auto")
    # the reference's images per cluster on Market-1501 give back its counts there
    assert cluster_counts(auto, 12936, 6) == (599, 808)
    assert cluster_counts(auto, 2243, 6) == (104, 140)  # the synthetic set (data seed 0)
    assert cluster_counts(auto, 5, 4) == (1, 2)  # never below one per camera / two global
    assert cluster_counts(IicsParams(intra_clusters=600, inter_clusters=800), 215, 4) == (600, 800)


def test_auto_counts_size_the_classifiers() -> None:
    method = _make({"intra_clusters": "auto", "inter_clusters": "auto"})
    intra, inter = cluster_counts(method.params, N, NUM_CAMS)
    assert (
        method.intra_weight.shape[0] == NUM_CAMS * intra and method.inter_weight.shape[0] == inter
    )
