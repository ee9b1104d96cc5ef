"""Cluster memories (trainer.memory) and losses (trainer.losses) on tiny exact examples."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainer.losses import (
    GradientReversal,
    balance_loss,
    balanced_l1,
    batch_hard_triplet,
    cross_entropy_label_smooth,
    grad_reverse,
    info_nce_over_memory,
    jsd_mutual_information,
)
from trainer.memory import ClusterMemory, HardSampleMemory, cluster_means


def _unit(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float64), dim=1)


# ----------------------------------------------------------------------------- memory


def test_init_is_normalised_cluster_means() -> None:
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0], [9.0, 9.0]])
    labels = torch.tensor([0, 0, 1, -1])
    memory = ClusterMemory(2, momentum=0.2)
    memory.init_from(feats, labels, 2)
    expected = torch.tensor([[0.5, 0.5], [3.0, 4.0]])
    torch.testing.assert_close(memory.features, F.normalize(expected, dim=1))
    torch.testing.assert_close(cluster_means(feats, labels, 2), memory.features)
    assert memory.num_slots == 2


def test_per_instance_update_moves_a_slot_once_per_instance_in_turn() -> None:
    """The default rule (cluster-contrast's reference code)."""
    memory = ClusterMemory(2, momentum=0.25).double()
    memory.reset(_unit([1.0, 0.0], [0.0, 1.0], [1.0, 1.0]))
    before = memory.features.clone()
    batch = torch.tensor([[0.0, 1.0], [0.6, 0.8], [1.0, 0.0]], dtype=torch.float64)
    memory.update(batch, torch.tensor([0, 0, 1]))
    slot0 = F.normalize(0.25 * before[0] + 0.75 * batch[0], dim=0)
    slot0 = F.normalize(0.25 * slot0 + 0.75 * batch[1], dim=0)  # then the second instance
    slot1 = F.normalize(0.25 * before[1] + 0.75 * batch[2], dim=0)
    torch.testing.assert_close(memory.features[0], slot0)
    torch.testing.assert_close(memory.features[1], slot1)
    torch.testing.assert_close(memory.features[2], before[2])  # not in the batch
    with pytest.raises(ValueError, match="update must be one of"):
        ClusterMemory(2, momentum=0.25, update="mean")


def test_batch_mean_update_formula_is_exact() -> None:
    memory = ClusterMemory(2, momentum=0.25, update="batch_mean").double()
    memory.reset(_unit([1.0, 0.0], [0.0, 1.0], [1.0, 1.0]))
    before = memory.features.clone()
    batch = torch.tensor([[0.0, 1.0], [0.6, 0.8], [1.0, 0.0]], dtype=torch.float64)
    memory.update(batch, torch.tensor([0, 0, 1]))
    mean0 = batch[:2].mean(0)
    slot0 = F.normalize(0.25 * before[0] + 0.75 * mean0, dim=0)
    slot1 = F.normalize(0.25 * before[1] + 0.75 * batch[2], dim=0)
    torch.testing.assert_close(memory.features[0], slot0)
    torch.testing.assert_close(memory.features[1], slot1)
    torch.testing.assert_close(memory.features[2], before[2])  # not in the batch
    torch.testing.assert_close(memory.features.norm(dim=1), torch.ones(3, dtype=torch.float64))


def test_update_ignores_outliers_and_rejects_bad_labels() -> None:
    memory = ClusterMemory(2, momentum=0.5)
    memory.reset(torch.eye(2))
    memory.update(torch.ones(2, 2), torch.tensor([-1, -1]))
    torch.testing.assert_close(memory.features, torch.eye(2))
    with pytest.raises(ValueError, match="memory size"):
        memory.update(torch.ones(1, 2), torch.tensor([2]))
    with pytest.raises(ValueError):
        memory.update(torch.ones(1, 3), torch.tensor([0]))


def test_hard_sample_is_the_least_similar_to_the_centre() -> None:
    centres = _unit([1.0, 0.0], [0.0, 1.0])
    batch = _unit([1.0, 0.1], [1.0, 0.9], [1.0, 0.5], [0.2, 1.0], [0.1, 1.0])
    labels = torch.tensor([0, 0, 0, 1, 1])
    clusters, rows = HardSampleMemory.hardest(batch, labels, centres)
    assert clusters.tolist() == [0, 1] and rows.tolist() == [1, 3]
    memory = HardSampleMemory(2, momentum=0.1).double()
    memory.reset(centres)
    memory.update(batch, labels, centres)
    torch.testing.assert_close(
        memory.features[0], F.normalize(0.1 * centres[0] + 0.9 * batch[1], dim=0)
    )
    torch.testing.assert_close(
        memory.features[1], F.normalize(0.1 * centres[1] + 0.9 * batch[3], dim=0)
    )


def test_hard_sample_ties_and_outliers() -> None:
    centres = _unit([1.0, 0.0])
    batch = _unit([0.0, 1.0], [0.0, 1.0], [-1.0, 0.0])  # last one is an outlier
    clusters, rows = HardSampleMemory.hardest(batch, torch.tensor([0, 0, -1]), centres)
    assert clusters.tolist() == [0] and rows.tolist() == [0]  # first on ties; -1 ignored


def test_resize_and_state_dict_round_trip() -> None:
    holder = nn.Module()
    holder.mean = ClusterMemory(4, momentum=0.2)
    holder.hard = HardSampleMemory(4, momentum=0.2)
    holder.mean.reset(torch.randn(7, 4))
    holder.hard.reset(torch.randn(7, 4))
    holder.mean.update(F.normalize(torch.randn(5, 4), dim=1), torch.tensor([0, 1, 1, 6, 3]))
    state = {k: v.clone() for k, v in holder.state_dict().items()}
    assert state["mean.features"].shape == (7, 4)

    fresh = nn.Module()  # a new run: memories start empty, as on --resume
    fresh.mean = ClusterMemory(4, momentum=0.2)
    fresh.hard = HardSampleMemory(4, momentum=0.2)
    assert fresh.mean.num_slots == 0
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.mean.features, state["mean.features"], rtol=0, atol=0)
    torch.testing.assert_close(fresh.hard.features, state["hard.features"], rtol=0, atol=0)

    fresh.mean.reset(torch.randn(3, 4))  # next epoch: fewer clusters, then load again
    fresh.load_state_dict(state)
    assert fresh.mean.num_slots == 7
    with pytest.raises(RuntimeError):  # a memory of another dimension does not fit
        bad = nn.Module()
        bad.mean = ClusterMemory(5, momentum=0.2)
        bad.hard = HardSampleMemory(5, momentum=0.2)
        bad.load_state_dict(state)


# ----------------------------------------------------------------------------- losses


def test_info_nce_equals_hand_computation() -> None:
    feats = _unit([1.0, 0.0], [0.6, 0.8])
    memory = _unit([1.0, 0.0], [0.0, 1.0], [-1.0, 0.0])
    labels = torch.tensor([0, 1])
    t = 0.5
    expected = 0.0
    for f, y in zip(feats, labels, strict=True):
        logits = [float(f @ m) / t for m in memory]
        expected += -logits[y] + math.log(sum(math.exp(v) for v in logits))
    got = info_nce_over_memory(feats, labels, memory, temperature=t)
    assert float(got) == pytest.approx(expected / 2, rel=1e-12)
    with pytest.raises(ValueError):
        info_nce_over_memory(feats, labels, memory, temperature=0.0)


def test_balanced_l1_values() -> None:
    alpha, gamma = 0.9, 1.5
    b = math.exp(gamma / alpha) - 1.0
    x = torch.tensor([0.0, 0.3, -0.3, 1.0, 2.0], dtype=torch.float64)
    inner = lambda v: alpha / b * (b * v + 1) * math.log(b * v + 1) - alpha * v  # noqa: E731
    outer = lambda v: gamma * v + gamma / b - alpha  # noqa: E731
    expected = [0.0, inner(0.3), inner(0.3), outer(1.0), outer(2.0)]
    torch.testing.assert_close(balanced_l1(x, alpha, gamma), torch.tensor(expected).double())
    assert inner(1.0) == pytest.approx(outer(1.0))  # continuous at |x| = 1


def test_balance_loss_on_a_tiny_example() -> None:
    feats = _unit([1.0, 0.0], [0.0, 1.0])
    mean = _unit([1.0, 0.0], [0.0, 1.0])
    hard = _unit([0.0, 1.0], [0.0, 1.0])
    labels = torch.tensor([0, 1])
    # x_0 = f0.c0 - f0.h0 = 1 - 0 = 1 (outer piece); x_1 = 1 - 1 = 0
    b = math.exp(1.5 / 0.9) - 1.0
    expected = 0.25 * ((1.5 + 1.5 / b - 0.9) + 0.0) / 2
    got = balance_loss(feats, labels, mean, hard, alpha=0.9, gamma=1.5)
    assert float(got) == pytest.approx(expected, rel=1e-9)
    # equal memories: nothing to balance
    assert float(balance_loss(feats, labels, mean, mean)) == 0.0


def test_js_mi_bound_is_higher_for_dependent_pairs() -> None:
    torch.manual_seed(0)
    a = torch.randn(256, 1)
    dependent = torch.cat([a, a + 0.1 * torch.randn_like(a)], dim=1)
    independent = torch.cat([a, torch.randn_like(a)], dim=1)
    critic = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 1))
    optimiser = torch.optim.Adam(critic.parameters(), lr=1e-2)

    def bound(pairs: torch.Tensor) -> torch.Tensor:
        marginal = torch.cat([pairs[:, :1], pairs[torch.randperm(len(pairs)), 1:]], dim=1)
        return jsd_mutual_information(critic(pairs).squeeze(1), critic(marginal).squeeze(1))

    estimates = {}
    for name, pairs in (("dependent", dependent), ("independent", independent)):
        for layer in critic:
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
        for _ in range(100):
            optimiser.zero_grad()
            (-bound(pairs)).backward()
            optimiser.step()
        with torch.no_grad():
            estimates[name] = float(bound(pairs))
    assert estimates["dependent"] > estimates["independent"] + 0.3
    assert estimates["independent"] < -2 * math.log(2) + 0.2  # ~ the bound's floor
    # the formula itself, at fixed scores
    got = jsd_mutual_information(torch.tensor([0.0, 2.0]), torch.tensor([-1.0]))
    expected = -(math.log(2) + math.log1p(math.exp(-2.0))) / 2 - math.log1p(math.exp(-1.0))
    assert float(got) == pytest.approx(expected)


@pytest.mark.parametrize("coeff", [1.0, 0.3])
def test_gradient_reversal_flips_and_scales(coeff: float) -> None:
    x = torch.randn(4, 3, requires_grad=True)
    weight = torch.randn(4, 3)
    y = grad_reverse(x, coeff)
    torch.testing.assert_close(y, x)
    (y * weight).sum().backward()
    torch.testing.assert_close(x.grad, -coeff * weight)
    assert GradientReversal.apply(x, 1.0).shape == x.shape


def test_label_smooth_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    targets = torch.tensor([0])
    log_p = F.log_softmax(logits, dim=1)[0]
    eps = 0.1
    expected = -((1 - eps) * log_p[0] + eps * log_p.mean())
    got = cross_entropy_label_smooth(logits, targets, eps)
    assert float(got) == pytest.approx(float(expected))
    assert float(cross_entropy_label_smooth(logits, targets, 0.0)) == pytest.approx(
        float(F.cross_entropy(logits, targets))
    )


def test_batch_hard_triplet() -> None:
    feats = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 5.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    # hardest positive / negative per anchor: (1, 3), (1, sqrt 10), (2, 3), (2, 5)
    assert float(batch_hard_triplet(feats.detach(), labels, margin=0.3)) == pytest.approx(0.0)
    # with a large margin every anchor is active: mean(d_ap - d_an + m)
    d_ap = torch.tensor([1.0, 1.0, 2.0, 2.0])
    d_an = torch.tensor([3.0, math.sqrt(10), 3.0, 5.0])
    expected = float((d_ap - d_an + 10.0).mean())
    loss = batch_hard_triplet(feats, labels, margin=10.0)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.isfinite(feats.grad).all()
    # soft margin and a batch with no valid anchor
    assert float(batch_hard_triplet(feats.detach(), labels, margin=None)) > 0
    zero = batch_hard_triplet(feats, torch.tensor([0, 1, 2, 3]))
    assert float(zero.detach()) == 0.0 and zero.requires_grad
