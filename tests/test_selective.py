"""Selective contrast (``trainer/methods/selective.py``): its selection, its loss, its banks.

Pang et al., "Fully Unsupervised Person Re-Identification via Selective Contrastive
Learning" (ACM TOMM 2022), as its reference code (pangbo1997/Unsup_ReID) specifies it.
The pieces are checked on hand-built banks; the method end to end on the tiny
synthetic dataset (a 2-epoch ``main(argv)`` run, its resume, its export, its evaluation
with the camera prior).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_runs import export_with_parity_gate, read_csv, straight_and_resumed, write_config

from reid.checkpoint import read_checkpoint
from reid.metrics import add_camera_prior, evaluate_features, evaluate_rank, pairwise_distance
from reid.models import build_model
from trainer.cli import main
from trainer.memory import InstanceMemory, MixtureMemory
from trainer.methods import build_method
from trainer.methods.base import EpochContext, TrainInfo
from trainer.methods.selective import (
    Selective,
    multi_positive_loss,
    positive_weights,
    random_negatives,
    select_entries,
    selection_distance,
)

INPUT = (64, 32)
STRIPES, PART_DIM = 4, 32
GLOBAL_DIM = STRIPES * PART_DIM  # one mixture bank for both branches
N, NUM_CAMS = 48, 3
TINY_MODEL = {
    "pretrained": None,
    "input_size": list(INPUT),
    "embedding_dim": GLOBAL_DIM,
    "num_stripes": STRIPES,
    "part_dim": PART_DIM,
}


def unit(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


# ----------------------------------------------------------------------------- selection


def test_the_nearest_slots_are_the_positives_and_the_next_ones_the_negatives() -> None:
    """Slots on a circle at angles 0, 10, 20, ... degrees from the anchor's own slot 0."""
    angles = torch.deg2rad(torch.tensor([0.0, 50.0, 10.0, 40.0, 20.0, 30.0, 90.0]))
    bank = torch.stack([angles.cos(), angles.sin()], dim=1)
    anchor = bank[:1].clone()
    dist = selection_distance(anchor, bank, global_weight=1.0)
    torch.testing.assert_close(dist[0], 2 - 2 * angles.cos())  # |a - b|^2 of unit vectors
    positives, negatives = select_entries(dist, torch.tensor([0]), 2, 3)
    assert positives.tolist() == [[0, 2, 4]]  # self, then 10 and 20 degrees
    assert negatives.tolist() == [[5, 3, 1]]  # 30, 40, 50 degrees; 90 is past the negatives


def test_the_same_camera_penalty_changes_the_order() -> None:
    bank = unit([1.0, 0.0], [1.0, 0.05], [1.0, 0.06], [0.0, 1.0])
    cams = torch.tensor([0, 0, 1, 1])
    plain = selection_distance(bank[:1], bank, global_weight=1.0)
    penalised = selection_distance(
        bank[:1], bank, camids=cams[:1], bank_camids=cams, global_weight=1.0, camera_weight=0.05
    )
    torch.testing.assert_close(penalised - plain, 0.05 * (cams == 0).float()[None])
    index = torch.tensor([0])
    assert select_entries(plain, index, 1, 2)[0].tolist() == [[0, 1]]  # slot 1 is nearer
    assert select_entries(penalised, index, 1, 2)[0].tolist() == [[0, 2]]  # but same camera


def test_the_local_term_is_the_mean_over_stripes_of_the_squared_distances() -> None:
    gen = torch.Generator().manual_seed(0)
    g, bank = (F.normalize(torch.randn(n, 6, generator=gen), dim=1) for n in (2, 5))
    parts = F.normalize(torch.randn(2, 3, 4, generator=gen), dim=2)
    local_bank = F.normalize(torch.randn(5, 3, 4, generator=gen), dim=2)
    dist = selection_distance(g, bank, parts=parts, local_bank=local_bank, global_weight=0.5)
    for i in range(2):
        for j in range(5):
            local = sum(float((parts[i, p] - local_bank[j, p]).pow(2).sum()) for p in range(3))
            expected = 0.5 * float((g[i] - bank[j]).pow(2).sum()) + 0.5 * local / 3
            assert float(dist[i, j]) == pytest.approx(expected, abs=1e-5)


def test_counts_are_clamped_to_a_small_train_set() -> None:
    dist = torch.rand(2, 5)
    positives, negatives = select_entries(dist, torch.tensor([3, 0]), 7, 500)
    assert positives.shape == (2, 5) and negatives.shape == (2, 0)  # self + the 4 others
    assert positives[:, 0].tolist() == [3, 0]
    for row, own in zip(positives.tolist(), (3, 0), strict=True):
        assert sorted(row) == list(range(5)) and own not in row[1:]
    positives, negatives = select_entries(dist, torch.tensor([3, 0]), 2, 500)
    assert positives.shape == (2, 3) and negatives.shape == (2, 2)


def test_warm_up_negatives_are_random_others_from_one_permutation() -> None:
    torch.manual_seed(0)
    index = torch.tensor([0, 5, 9])
    negatives = random_negatives(index, 10, 507)
    assert negatives.shape == (3, 9)  # clamped to the 9 other slots
    for row, own in zip(negatives.tolist(), index.tolist(), strict=True):
        assert sorted(row) == [i for i in range(10) if i != own]
    few = random_negatives(torch.arange(20), 1000, 5)
    assert few.shape == (20, 5) and not (few == torch.arange(20)[:, None]).any()
    shared = (few[:, None, :] == few[0][None, :, None]).any(dim=2).float().mean()
    assert shared > 0.5  # one permutation per step: the anchors share their negatives


# ----------------------------------------------------------------------------- loss


def test_the_neighbours_share_0875_and_self_weighs_05() -> None:
    weights = positive_weights(7, self_weight=0.5, neighbour_factor=1.75)
    torch.testing.assert_close(weights, torch.tensor([0.5] + [0.125] * 7))
    assert positive_weights(0, 0.5, 1.75).tolist() == [0.5]  # warm-up: self only


def test_weighted_multi_positive_ce_equals_a_hand_computation() -> None:
    gen = torch.Generator().manual_seed(1)
    memory = F.normalize(torch.randn(12, 8, generator=gen), dim=1)
    x = F.normalize(torch.randn(3, 8, generator=gen), dim=1)
    entries = torch.stack([torch.randperm(12, generator=gen)[:6] for _ in range(3)])
    weights = positive_weights(2, 0.5, 1.75)  # 0.5, 0.4375, 0.4375
    loss, logits = multi_positive_loss(x, memory, entries, weights, scale=10.0)
    expected = 0.0
    for i in range(3):
        row = torch.stack([10.0 * x[i] @ memory[e] for e in entries[i]])
        torch.testing.assert_close(logits[i], row)
        log_z = math.log(sum(math.exp(float(v)) for v in row))
        ce = [log_z - float(row[j]) for j in range(3)]  # CE(logits, j) for j = 0, 1, 2
        expected += (0.5 * ce[0] + 0.4375 * ce[1] + 0.4375 * ce[2]) / 3  # batch mean
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(
        loss,
        sum(w * F.cross_entropy(logits, torch.full((3,), j)) for j, w in enumerate(weights)),
    )


# ----------------------------------------------------------------------------- banks


def test_the_mixture_bank_moves_each_positive_halfway_to_its_anchor() -> None:
    bank = MixtureMemory(4, 2)
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    bank.write(torch.tensor([[0, 2], [1, 2]]), x)  # both anchors have slot 2 as a positive
    first = F.normalize((torch.zeros(2) + x[0]) / 2, dim=0)  # a zero slot takes the anchor
    expected = torch.stack(
        [
            F.normalize(x[0], dim=0),
            F.normalize(x[1], dim=0),
            F.normalize((first + x[1]) / 2, dim=0),  # anchor 0 wrote first, then anchor 1
            torch.zeros(2),  # never a positive
        ]
    )
    torch.testing.assert_close(bank.features, expected)


def test_the_banks_move_halfway_and_stay_unit_per_stripe() -> None:
    gen = torch.Generator().manual_seed(2)
    local = InstanceMemory(5, (3, 4), momentum=0.5)
    start = torch.randn(5, 3, 4, generator=gen)
    local.reset(start)
    assert bool(local.ready)
    before = local.features.clone()
    torch.testing.assert_close(before, F.normalize(start, dim=2))
    x = F.normalize(torch.randn(2, 3, 4, generator=gen), dim=2)
    local.update(torch.tensor([4, 1]), x)
    torch.testing.assert_close(
        local.features[[4, 1]], F.normalize(0.5 * before[[4, 1]] + 0.5 * x, dim=2)
    )
    torch.testing.assert_close(local.features[[0, 2, 3]], before[[0, 2, 3]], rtol=0, atol=0)
    torch.testing.assert_close(local.features.norm(dim=2), torch.ones(5, 3))
    again = InstanceMemory(5, 4, momentum=0.25)
    again.reset(torch.eye(5, 4))
    g = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    again.update(torch.tensor([0, 0]), g)  # the same image twice: two moves, in order
    once = F.normalize(0.25 * torch.eye(4)[0] + 0.75 * g[0], dim=0)
    torch.testing.assert_close(again.features[0], F.normalize(0.25 * once + 0.75 * g[1], dim=0))


# ----------------------------------------------------------------------------- the method


def test_the_encoder_embedding_splits_back_into_its_global_and_stripe_features() -> None:
    """What the banks are filled from: the loop's features are the encoder's embedding."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = build_model("part_resnet18", **TINY_MODEL).eval()
    with torch.no_grad():
        out = encoder.forward_train(torch.randn(3, 3, *INPUT))
    g, parts = encoder.split_embedding(out.embedding)
    torch.testing.assert_close(g, out.aux["global_embedding"], atol=1e-5, rtol=0)
    torch.testing.assert_close(parts, out.part_feats, atol=1e-5, rtol=0)
    cos = 0.5 * (g[0] @ g[1]) + 0.5 * (parts[0] * parts[1]).sum(1).mean()
    assert float(out.embedding[0] @ out.embedding[1]) == pytest.approx(float(cos), abs=1e-5)


def _method(**params: object) -> Selective:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no pretrained weights"
        encoder = build_model("part_resnet18", **TINY_MODEL)
    info = TrainInfo(N, NUM_CAMS, None, encoder.embedding_dim, torch.device("cpu"), epochs=6)
    method = build_method("selective", encoder, {"warmup_epochs": 3, **params}, info)
    assert isinstance(method, Selective)
    return method


def _features(method: Selective) -> torch.Tensor:
    """Train-set embeddings in the encoder's own layout (unit global + unit stripes)."""
    gen = torch.Generator().manual_seed(3)
    g = F.normalize(torch.randn(N, GLOBAL_DIM, generator=gen), dim=1)
    parts = F.normalize(torch.randn(N, STRIPES, PART_DIM, generator=gen), dim=2)
    enc = method.encoder
    return torch.cat([enc.global_scale * g, enc.part_scale * parts.flatten(1)], dim=1)


def _batch(index: list[int]) -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(4)
    ids = torch.tensor(index)
    return {
        "target": {
            "image": torch.randn(len(index), 3, *INPUT, generator=gen),
            "index": ids,
            "label": ids,
            "camid": ids % NUM_CAMS,
        }
    }


def _context(method: Selective, epoch: int, features: torch.Tensor | None) -> EpochContext:
    return EpochContext(epoch, [], np.arange(N) % NUM_CAMS, None, features)


def test_the_banks_are_filled_once_from_the_loops_features() -> None:
    m = _method()
    feats = _features(m)
    assert m.wants_features(0)
    plan = m.prepare_epoch(_context(m, 0, feats))
    np.testing.assert_array_equal(plan.labels, np.arange(N))  # every image its own class
    assert plan.stats == {"banks_filled": 1.0, "selection": 0.0}
    g, parts = m.encoder.split_embedding(feats)
    torch.testing.assert_close(m.global_bank.features, g)
    torch.testing.assert_close(m.local_bank.features, parts)
    # mixture_init "banks": each image wrote itself once, global branch then local
    own = F.normalize((g + parts.flatten(1)) / 2, dim=1)
    torch.testing.assert_close(m.mixture.features, own)
    assert not m.wants_features(1)  # filled: the loop extracts nothing more
    filled = m.global_bank.features.clone()
    m.prepare_epoch(_context(m, 1, None))
    torch.testing.assert_close(m.global_bank.features, filled, rtol=0, atol=0)
    zero = _method(mixture_init="zero")
    zero.prepare_epoch(_context(zero, 0, feats))
    assert not zero.mixture.features.any()  # the reference's start


def test_warm_up_contrasts_self_against_random_negatives_then_selection_starts() -> None:
    m = _method()
    m.prepare_epoch(_context(m, 0, _features(m)))
    batch = _batch([0, 7, 13, 20])
    m.train()
    out = m.training_step(batch)
    assert set(out.losses) == {"global", "local"}
    positives = m._last_positives
    assert positives.tolist() == [[0], [7], [13], [20]]  # warm-up: self only
    sum(out.losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoder.parameters())

    before = m.mixture.features.clone()
    m.after_step(batch, out)
    moved = (m.mixture.features != before).any(dim=1)
    assert torch.nonzero(moved).flatten().tolist() == [0, 7, 13, 20]  # only the anchors' own slots

    plan = m.prepare_epoch(_context(m, 3, None))  # epoch 3: the warm-up (0, 1, 2) is over
    assert plan.stats == {"selection": 1.0}
    out = m.training_step(batch)
    enc = m.encoder.forward_train(batch["target"]["image"])  # the same forward (train mode)
    dist = selection_distance(
        enc.aux["global_embedding"],
        m.global_bank.features,
        parts=enc.part_feats,
        local_bank=m.local_bank.features,
        camids=batch["target"]["camid"],
        bank_camids=m.camids,
        global_weight=0.5,
        camera_weight=0.05,
    )
    expected, _ = select_entries(dist, batch["target"]["index"], 7, 500)
    assert m._last_positives.shape == (4, 8)
    torch.testing.assert_close(m._last_positives, expected, rtol=0, atol=0)
    m.after_step(batch, out)
    assert m._last_positives is None


def test_the_total_is_local_weight_times_local_plus_the_rest_times_global() -> None:
    batch = _batch([1, 2, 3])
    memory = F.normalize(torch.randn(N, GLOBAL_DIM, generator=torch.Generator().manual_seed(6)))
    losses = {}
    for weight in (0.3, 0.0, 1.0):
        m = _method(local_weight=weight, global_weight=0.5)
        m.prepare_epoch(_context(m, 0, _features(m)))
        m.mixture.features.copy_(memory)  # the same mixture bank for the three
        torch.manual_seed(5)  # the same random negatives
        losses[weight] = m.training_step(batch).losses
    assert set(losses[0.0]) == {"global"} and set(losses[1.0]) == {"local"}
    torch.testing.assert_close(losses[0.3]["global"], 0.7 * losses[0.0]["global"])
    torch.testing.assert_close(losses[0.3]["local"], 0.3 * losses[1.0]["local"])


def test_one_mixture_bank_needs_the_global_dimension_of_the_stripes() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = build_model("part_resnet18", **{**TINY_MODEL, "embedding_dim": 100})
    info = TrainInfo(N, NUM_CAMS, None, encoder.embedding_dim, torch.device("cpu"))
    with pytest.raises(ValueError, match="embedding_dim=128"):
        build_method("selective", encoder, {}, info)


# ----------------------------------------------------------------------------- camera prior


def test_the_camera_prior_adds_its_weight_to_same_camera_pairs() -> None:
    q = unit([1.0, 0.0])
    g = unit([1.0, 0.1], [1.0, 0.2], [0.0, 1.0])
    q_pids, g_pids = np.array([1]), np.array([2, 1, 3])
    q_cams, g_cams = np.array([0]), np.array([0, 1, 0])
    plain = pairwise_distance(q.numpy(), g.numpy())
    shifted = add_camera_prior(plain.copy(), q_cams, g_cams, 0.05)
    np.testing.assert_allclose(shifted - plain, [[0.05, 0.0, 0.05]], atol=1e-7)
    args = (q.numpy(), g.numpy(), q_pids, g_pids, q_cams, g_cams)
    without = evaluate_features(*args)
    with_prior = evaluate_features(*args, camera_prior=0.05)
    assert without.rank(1) == 0.0 and with_prior.rank(1) == 1.0  # the same-camera impostor
    expected = evaluate_rank(shifted, q_pids, g_pids, q_cams, g_cams)
    assert with_prior.mAP == pytest.approx(expected.mAP)
    with pytest.raises(ValueError, match="camera_prior"):
        evaluate_features(*args, camera_prior=-1.0)


# ----------------------------------------------------------------------------- end to end


def _config(path: Path) -> Path:
    return write_config(
        path,
        {"name": "part_resnet18", "kwargs": TINY_MODEL},
        {"name": "selective", "warmup_epochs": 1},  # epoch 2 selects
        train={"sampler": "pk", "threads": "auto"},
        optim={"name": "sgd", "lr": 1.0e-3, "momentum": 0.9, "nesterov": True},
        eval={"every": 1, "batch_size": 64, "camera_prior": 0.05},
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path) -> tuple[Path, Path]:
    """``(straight, split)``: 2 epochs in one run, and 1 epoch then ``--resume`` to 2."""
    root = tmp_path_factory.mktemp("selective")
    base = ["train", "--config", str(_config(root / "c.yaml")), "--data"]
    base += [f"synthetic:{tiny_synthetic}"]
    return straight_and_resumed(base, root)


def test_a_tiny_run_warms_up_then_selects_and_logs_both_branches(runs) -> None:
    straight, _ = runs
    rows = read_csv(straight / "metrics.csv")
    assert [float(r["selection"]) for r in rows] == [0.0, 1.0]
    assert float(rows[0]["banks_filled"]) == 1.0 and rows[1]["banks_filled"] == ""
    for key in ("global", "local", "acc_global", "acc_local", "mAP"):
        assert rows[-1][key] != "", key
    state = read_checkpoint(straight / "checkpoint_last.pt")["training"]["method"]
    assert bool(state["global_bank.ready"]) and state["mixture.features"].abs().sum() > 0


def test_resume_continues_exactly(runs) -> None:
    straight, split = runs
    a = read_checkpoint(straight / "checkpoint_last.pt")
    b = read_checkpoint(split / "checkpoint_last.pt")
    for key, value in a["encoder"].items():
        assert torch.allclose(value.float(), b["encoder"][key].float(), atol=1e-6), key
    for key, value in a["training"]["method"].items():
        assert torch.allclose(value.float(), b["training"]["method"][key].float(), atol=1e-6), key
    steps_a, steps_b = read_csv(straight / "steps.csv"), read_csv(split / "steps.csv")
    assert len(steps_a) == len(steps_b) == 4
    for ra, rb in zip(steps_a, steps_b, strict=True):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=1e-5)
    assert "features of" not in (split / "train.log").read_text().split("resumed from")[-1]


def test_eval_camera_prior_matches_the_training_evaluation(
    runs, tiny_synthetic: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    straight, _ = runs
    argv = ["eval", "--checkpoint", str(straight / "checkpoint_last.pt")]
    argv += ["--data", f"synthetic:{tiny_synthetic}", "--json", "--device", "cpu"]
    argv += ["--num-workers", "0"]
    capsys.readouterr()
    assert main([*argv, "--camera-prior", "0.05"]) == 0
    prior = json.loads(capsys.readouterr().out)
    assert prior["mAP"] == pytest.approx(float(read_csv(straight / "metrics.csv")[-1]["mAP"]))
    assert main(argv) == 0
    plain = json.loads(capsys.readouterr().out)
    assert set(plain) == set(prior)
    assert main([*argv, "--camera-prior", "-1"]) == 2
    assert "--camera-prior" in capsys.readouterr().err


def test_the_trained_checkpoint_passes_the_export_parity_gate(
    runs, tiny_synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog
) -> None:
    caplog.set_level(logging.ERROR, logger="reid.models.backbones.weights")
    straight, _ = runs
    export_with_parity_gate(
        straight / "checkpoint_last.pt", tmp_path / "export", tiny_synthetic, capsys
    )
