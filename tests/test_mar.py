"""MAR: its losses on hand-computed tensors, its state, its stages, a tiny real run.

The numbers are the rules of ``trainer/methods/mar.py`` ("Unsupervised Person
Re-identification by Soft Multilabel Learning", Yu et al., CVPR 2019, as the seed paper
and the KovenYu/MAR code use it): MDL over the mined pairs with the agreement
threshold, CML against global statistics, AL over the agents, RJ with margin 1 on
squared distances. The end-to-end part trains a tiny fusion ResNet-18 through
``python -m trainer``: a reference pre-training, the joint stage started from it with
``--init``, the same joint stage split by ``--resume``, and the export parity gate.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_runs import (
    export_with_parity_gate,
    labelled_reference,
    read_csv,
    straight_and_resumed,
    write_config,
)

from reid.checkpoint import read_checkpoint
from reid.models import build_model
from trainer.cli import main
from trainer.config import ConfigError, load_config
from trainer.methods import build_method
from trainer.methods.base import EpochContext, TrainInfo
from trainer.methods.mar import (
    Mar,
    agent_loss,
    agreement,
    agreement_threshold,
    cml_loss,
    mdl_loss,
    rj_loss,
    soft_multilabels,
)

INPUT = (64, 32)
N, NUM_CAMS, NUM_REF = 24, 3, 5
CONFIGS = Path(__file__).resolve().parents[1] / "trainer" / "configs"


def _unit(*angles: float) -> torch.Tensor:
    """Unit vectors in the plane at the given angles (radians)."""
    a = torch.tensor(angles, dtype=torch.float64)
    return torch.stack([a.cos(), a.sin()], dim=1)


# ----------------------------------------------------------------------------- pieces


def test_the_soft_multilabel_is_a_softmax_of_30_times_the_agent_cosines() -> None:
    f, a = _unit(0.0), _unit(0.0, math.pi / 2)
    y = soft_multilabels(f, a, 30.0)
    expected = torch.tensor([[1.0, math.exp(-30.0)]]) / (1.0 + math.exp(-30.0))
    torch.testing.assert_close(y, expected.float())


def test_agreement_is_one_minus_half_the_l1_distance_which_is_the_sum_of_minima() -> None:
    y = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.5, 0.3], [0.0, 0.0, 1.0]])
    a = agreement(y, y)
    minima = torch.minimum(y[:, None, :], y[None, :, :]).sum(-1)
    torch.testing.assert_close(a, minima)
    assert a[0, 1] == pytest.approx(0.7) and a[0, 2] == pytest.approx(0.0)


def test_the_threshold_is_the_agreement_at_the_top_ratio_of_all_pairs() -> None:
    y = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5], [0.0, 1.0]])
    pairs = sorted((float(agreement(y[i : i + 1], y[j : j + 1])) for i in range(4)
                    for j in range(i + 1, 4)), reverse=True)  # fmt: skip
    assert agreement_threshold(y, 1 / 6) == pytest.approx(pairs[0])  # 6 pairs: k = 1
    assert agreement_threshold(y, 0.5) == pytest.approx(pairs[2])  # k = 3
    assert agreement_threshold(y, 0.001) == pytest.approx(pairs[0])  # at least one pair


# Four target features: 0 and 1 nearly equal, 2 at a right angle, 3 opposite.
FEATS = _unit(0.0, 0.1, math.pi / 2, math.pi).float()
D01 = 2 - 2 * math.cos(0.1)
D12 = 2 - 2 * math.sin(0.1)  # the second-closest pair
LABELS = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def test_mdl_with_one_known_positive_pair_and_no_negative_uses_n_half() -> None:
    feats = FEATS.clone().requires_grad_(True)
    loss, facts = mdl_loss(feats, LABELS, threshold=0.5, ratio=1 / 6)  # mines pair (0, 1)
    p = math.exp(-D01)
    assert float(loss.detach()) == pytest.approx(-math.log(p / (p + 0.5)), rel=1e-5)
    assert float(facts["positives"]) == 1 and float(facts["negatives"]) == 0
    loss.backward()
    assert feats.grad[0].abs().sum() > 0 and feats.grad[2].abs().sum() == 0  # only the pair


def test_mdl_mines_the_closest_pairs_and_splits_them_by_agreement() -> None:
    loss, facts = mdl_loss(FEATS, LABELS, threshold=0.5, ratio=2 / 6)  # (0, 1) and (1, 2)
    p, n = math.exp(-D01), math.exp(-D12)  # A(1, 2) = 0: a hard negative
    assert float(loss) == pytest.approx(-math.log(p / (p + n)), rel=1e-5)
    assert (float(facts["positives"]), float(facts["negatives"])) == (1, 1)
    # the batch threshold is the agreement at the top 2/6 of the batch's pairs: 1 and 0.5
    assert float(facts["batch_threshold"]) == pytest.approx(0.5)


def test_mdl_without_a_positive_uses_p_one() -> None:
    loss, facts = mdl_loss(FEATS, LABELS, threshold=1.0, ratio=1 / 6)  # A = 1 is not > 1
    n = math.exp(-D01)
    assert float(loss) == pytest.approx(-math.log(1 / (1 + n)), rel=1e-5)
    assert float(facts["positives"]) == 0


def test_cml_is_zero_when_each_camera_has_the_global_mean_and_std() -> None:
    logs = torch.tensor([[1.0, 2.0], [3.0, 4.0], [3.0, 2.0], [1.0, 4.0], [-9.0, 9.0]])
    cams = torch.tensor([0, 0, 1, 1, 2])  # camera 2 has one image: no term
    mean, std = torch.tensor([2.0, 3.0]), torch.full((2,), math.sqrt(2.0))
    assert float(cml_loss(logs, cams, mean, std)) == pytest.approx(0.0, abs=1e-6)
    # against zero statistics each camera adds |(2, 3)|^2 + |(sqrt 2, sqrt 2)|^2 = 17
    zero = torch.zeros(2)
    assert float(cml_loss(logs, cams, zero, zero)) == pytest.approx(17.0, rel=1e-5)
    single = cml_loss(logs[4:], cams[4:], zero, zero)
    assert float(single) == 0.0  # no camera with two images


def test_al_is_the_cross_entropy_of_30_times_the_agent_cosines() -> None:
    f, agents = _unit(0.0, 1.0).float(), _unit(0.0, 1.0, 2.5).float()
    labels = torch.tensor([0, 2])
    logits = 30 * f @ agents.t()
    expected = -(logits.log_softmax(1)[0, 0] + logits.log_softmax(1)[1, 2]) / 2
    assert float(agent_loss(f, agents, labels, 30.0)) == pytest.approx(float(expected))


def test_rj_pulls_to_the_own_agent_and_pushes_agents_closer_than_the_margin() -> None:
    agents = _unit(0.0, 0.5, math.pi).float()  # a0 and a1: cosine 0.88 > 0.5
    reference, labels = _unit(0.0).float(), torch.tensor([0])  # on a0: pull 0
    target = _unit(math.pi / 2, 0.5).float()  # x0 is near no agent, x1 sits on a1
    close = 2 - 2 * math.cos(0.5)  # |a0 - a1|^2
    ref_hinge = 1 - close  # z against a1 (a2 is far)
    tgt_hinge = (1 + (1 - close)) / 2  # x1 against a1 (distance 0) and a0
    expected = (0.0 + ref_hinge + tgt_hinge) / 3
    assert float(rj_loss(reference, labels, target, agents)) == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- method


def _make(params: dict | None = None) -> Mar:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no pretrained weights"
        encoder = build_model(
            "fusion_resnet18", pretrained=None, input_size=INPUT, fusion_layers=[1, 3, 4],
            neck="none",
        )  # fmt: skip
    info = TrainInfo(
        N, NUM_CAMS, None, encoder.embedding_dim, torch.device("cpu"),
        num_reference=20, num_reference_classes=NUM_REF,
    )  # fmt: skip
    method = build_method("mar", encoder, params or {}, info)
    assert isinstance(method, Mar)
    return method


def _features(dim: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return F.normalize(torch.randn(N, dim, generator=gen), dim=1)


def _context(features: torch.Tensor | None, epoch: int) -> EpochContext:
    return EpochContext(epoch, [], np.arange(N) % NUM_CAMS, None, features)


def _batch(index: list[int], seed: int = 1) -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    idx = torch.tensor(index)
    ref = torch.arange(6)
    return {
        "target": {
            "image": torch.randn(len(idx), 3, *INPUT, generator=gen),
            "index": idx,
            "label": idx,
            "camid": idx % NUM_CAMS,
        },
        "reference": {
            "image": torch.randn(6, 3, *INPUT, generator=gen),
            "index": ref,
            "label": ref % NUM_REF,
            "camid": ref % 2,
        },
    }


def test_the_first_joint_epoch_initialises_t_and_the_statistics_from_the_target_set() -> None:
    m = _make()
    assert m.streams() == ("target", "reference") and m.wants_features(0)
    feats = _features(m.info.embedding_dim)
    plan = m.prepare_epoch(_context(feats, 0))
    np.testing.assert_array_equal(plan.labels, np.arange(N))  # the sampler draws images
    y = soft_multilabels(feats, m.agent_vectors().detach(), 30.0)
    assert float(m.threshold) == pytest.approx(agreement_threshold(y, 0.005))
    torch.testing.assert_close(m.log_mean, y.log().mean(0))
    torch.testing.assert_close(m.log_std, y.log().std(0))
    assert plan.stats["initialised"] == 1.0 and plan.stats["mdl_on"] == 0.0
    assert not m.wants_features(1)  # once per run (the flag is state: resumes keep it)
    assert m.prepare_epoch(_context(None, 1)).stats["mdl_on"] == 1.0


def test_mdl_is_off_in_epoch_0_and_the_total_carries_the_paper_weights() -> None:
    m = _make()
    m.prepare_epoch(_context(_features(m.info.embedding_dim), 0))
    batch = _batch(list(range(8)))
    torch.manual_seed(5)
    out = m.training_step(batch)
    assert set(out.losses) == {"mdl", "cml", "al", "rj"}
    assert float(out.losses["mdl"].detach()) == 0.0
    # recompute each term from the step's own features (train-mode forward, one batch)
    torch.manual_seed(5)
    images = torch.cat([batch["target"]["image"], batch["reference"]["image"]])
    feats = m.encoder.forward_train(images).embedding
    f_t, f_r = feats[:8], feats[8:]
    agents = m.agent_vectors()
    labels = batch["reference"]["label"]
    log_y = F.log_softmax(30 * f_t @ agents.detach().t(), dim=1)
    cml = cml_loss(log_y, batch["target"]["camid"], m.log_mean, m.log_std)
    torch.testing.assert_close(out.losses["cml"], 2e-4 * cml)
    torch.testing.assert_close(out.losses["al"], 50 * agent_loss(f_r, agents, labels, 30.0))
    rj = rj_loss(f_r, labels, f_t, agents)
    torch.testing.assert_close(out.losses["rj"], 50 * 0.2 * rj)
    m.after_step(batch, out)
    m.prepare_epoch(_context(None, 1))
    out = m.training_step(batch)
    assert float(out.losses["mdl"].detach()) > 0 and out.losses["mdl"].requires_grad


def test_the_memory_keeps_an_images_first_multilabel_then_moves_a_tenth_per_visit() -> None:
    m = _make()
    m.prepare_epoch(_context(_features(m.info.embedding_dim), 1))
    agents = m.agent_vectors().detach()
    batch = _batch([0, 1, 2, 3, 4, 5])
    out = m.training_step(batch)
    first = soft_multilabels(out.features, agents, 30.0)
    m.after_step(batch, out)
    torch.testing.assert_close(m.multilabels[:6], first)
    assert m.seen[:6].all() and not m.seen[6:].any() and (m.multilabels[6:] == 0).all()
    out = m.training_step(_batch([0, 1, 2, 3, 4, 5], seed=2))
    second = soft_multilabels(out.features, agents, 30.0)
    m.after_step(batch, out)
    torch.testing.assert_close(m.multilabels[:6], 0.9 * first + 0.1 * second)


def test_t_and_the_cml_statistics_follow_each_batch() -> None:
    m = _make()
    m.prepare_epoch(_context(_features(m.info.embedding_dim), 1))
    t0, mean0, std0 = float(m.threshold), m.log_mean.clone(), m.log_std.clone()
    batch = _batch(list(range(12)))
    out = m.training_step(batch)
    y = soft_multilabels(out.features, m.agent_vectors().detach(), 30.0)  # first visits
    m.after_step(batch, out)
    assert float(m.threshold) == pytest.approx(0.9 * t0 + 0.1 * agreement_threshold(y, 0.005))
    rate = 12 / 10000
    torch.testing.assert_close(m.log_mean, (1 - rate) * mean0 + rate * y.log().mean(0))
    torch.testing.assert_close(m.log_std, (1 - rate) * std0 + rate * y.log().std(0))


def test_the_ablation_switches_drop_their_terms() -> None:
    m = _make({"cml": False})
    m.prepare_epoch(_context(_features(m.info.embedding_dim), 1))
    assert set(m.training_step(_batch(list(range(8)))).losses) == {"mdl", "al", "rj"}
    m = _make({"ral": False})  # no AL, no RJ: frozen agents, no reference batch
    assert m.streams() == ("target",) and not m.agents.weight.requires_grad
    assert m.extra_parameters() == [m.agents.weight] and m.agents.weight.grad is None
    m.prepare_epoch(_context(_features(m.info.embedding_dim), 1))
    batch = _batch(list(range(8)))
    del batch["reference"]
    assert set(m.training_step(batch).losses) == {"mdl", "cml"}
    m = _make({"mdl": False, "cml": False})  # the reference supervision alone (RAL)
    assert m.prepare_epoch(_context(_features(m.info.embedding_dim), 1)).stats["mdl_on"] == 0.0
    losses = m.training_step(_batch(list(range(8)))).losses
    assert set(losses) == {"mdl", "al", "rj"} and float(losses["mdl"].detach()) == 0.0


def test_the_pretrain_stage_is_agent_learning_on_the_reference_batches_alone() -> None:
    m = _make({"stage": "pretrain"})
    assert m.streams() == ("reference",) and not m.wants_features(0)
    assert m.multilabels.shape == (0, NUM_REF)  # no target state in this stage
    m.prepare_epoch(_context(None, 0))
    batch = {"reference": _batch([0])["reference"]}
    out = m.training_step(batch)
    assert set(out.losses) == {"al"}
    out.losses["al"].backward()
    assert m.agents.weight.grad is not None and m.agents.weight.grad.abs().sum() > 0


def test_init_takes_the_agents_of_a_pretrain_state_and_checks_their_shape() -> None:
    pre = _make({"stage": "pretrain"})
    with torch.no_grad():
        pre.agents.weight.mul_(3.0)
    joint = _make()
    state = {k: v for k, v in pre.state_dict().items() if not k.startswith("encoder.")}
    assert joint.init_from_state(state) == ["agents.weight"]
    torch.testing.assert_close(joint.agents.weight, pre.agents.weight)
    assert not bool(joint.initialised) and joint.multilabels.shape == (N, NUM_REF)
    with pytest.raises(ValueError, match=r"agents\.weight has shape"):
        joint.init_from_state({"agents.weight": torch.zeros(NUM_REF + 1, 8)})
    with pytest.warns(UserWarning, match="no agents"):
        assert joint.init_from_state({}) == []


def test_mar_needs_a_reference_set() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = build_model("resnet18", pretrained=None, input_size=INPUT)
    info = TrainInfo(N, NUM_CAMS, None, encoder.embedding_dim, torch.device("cpu"))
    with pytest.raises(ValueError, match="--reference"):
        build_method("mar", encoder, {}, info)


@pytest.mark.parametrize(
    "name", ["mar_synthetic", "mar_market1501", "mar_pretrain_synthetic", "mar_pretrain_msmt17"]
)
def test_the_configs_hold_the_papers_schedule_and_the_ablation_switches(name: str) -> None:
    path = CONFIGS / f"{name}.yaml"
    config = load_config(path)
    p = config.method.params
    assert (p.scale, p.mining_ratio, p.cml_weight, p.ral_weight, p.rj_weight) == (
        30.0, 0.005, 2e-4, 50.0, 0.2,
    )  # fmt: skip
    assert config.model.kwargs["fusion_layers"] == [1, 3, 4]
    assert config.model.kwargs["neck"] == "none" and config.reference.sampler == "random"
    assert p.stage == ("pretrain" if "pretrain" in name else "joint")
    if name == "mar_market1501":
        t, o = config.train, config.optim
        assert (t.epochs, t.batch_size, config.reference.batch_size) == (20, 184, 184)
        assert (o.name, o.lr, o.momentum, o.weight_decay) == ("sgd", 2e-4, 0.9, 0.025)
        assert config.schedule.milestones == [12, 17]
        assert config.model.kwargs["input_size"] == [384, 128]
        assert config.reference.splits == ["train", "query", "gallery"]
    ablated = load_config(path, ["method.cml=false", "method.ral=false"]).method.params
    assert ablated.cml is False and ablated.ral is False
    with pytest.raises(ConfigError, match="stage"):
        load_config(path, ["method.stage=warmup"])


# ----------------------------------------------------------------------------- a tiny run


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny labelled synthetic reference set: 10 identities numbered from 5001."""
    return labelled_reference(tmp_path_factory, "tiny_reference", ids=10, seed=11, pid_offset=5000)


def _config(path: Path) -> Path:
    model = {
        "name": "fusion_resnet18",
        "kwargs": {
            "pretrained": None,
            "input_size": list(INPUT),
            "fusion_layers": [1, 3, 4],
            "neck": "none",
            "last_stride": 2,
        },
    }
    return write_config(
        path,
        model,
        {"name": "mar"},
        reference={"batch_size": 8, "sampler": "random"},
        optim={"name": "sgd", "lr": 1.0e-3, "momentum": 0.9, "weight_decay": 0.025},
    )


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path, tiny_reference: Path
) -> tuple[Path, Path, Path]:
    """``(pretrain, straight, split)``: the reference pre-training (1 epoch), the joint stage
    from it over 2 epochs, and the same joint stage as 1 epoch then ``--resume`` to 2."""
    root = tmp_path_factory.mktemp("mar")
    config = str(_config(root / "c.yaml"))
    streams = [
        "--data",
        f"synthetic:{tiny_synthetic}",
        "--reference",
        f"synthetic:{tiny_reference}",
    ]
    pretrain = root / "pretrain"
    base = ["train", "--config", config, *streams]
    assert main([*base, "--out", str(pretrain), "method.stage=pretrain", "epochs=1"]) == 0
    init = ["--init", str(pretrain / "checkpoint_last.pt")]
    return pretrain, *straight_and_resumed(base, root, init)


def test_the_pretrain_stage_learns_agents_from_reference_batches_only(runs) -> None:
    pretrain, _, _ = runs
    (row,) = read_csv(pretrain / "metrics.csv")
    assert float(row["al"]) > 0 and row["mAP"] != "" and row["reference_batch_size"] == "8"
    assert "mdl" not in row and "features of" not in (pretrain / "train.log").read_text()
    state = read_checkpoint(pretrain / "checkpoint_last.pt")["training"]["method"]
    assert state["agents.weight"].shape[0] == 10  # one agent per reference identity


def test_the_joint_stage_starts_from_the_pretrain_agents_and_runs_every_loss(runs) -> None:
    _, straight, _ = runs
    log = (straight / "train.log").read_text()
    assert "initialised the encoder and method parameters agents.weight from" in log
    assert "reference set synthetic" in log and "10 identities" in log
    rows = read_csv(straight / "metrics.csv")
    assert [float(r["mdl_on"]) for r in rows] == [0.0, 1.0]
    assert float(rows[0]["mdl"]) == 0.0 and float(rows[1]["mdl"]) > 0
    for key in ("cml", "al", "rj", "threshold", "mAP"):
        assert rows[-1][key] != "", key
    state = read_checkpoint(straight / "checkpoint_last.pt")["training"]["method"]
    assert bool(state["initialised"]) and state["seen"].sum() > 0
    assert state["multilabels"].shape[1] == 10


def test_resume_restores_agents_memory_threshold_and_statistics_exactly(runs) -> None:
    _, straight, split = runs
    a = read_checkpoint(straight / "checkpoint_last.pt")
    b = read_checkpoint(split / "checkpoint_last.pt")
    for key in ("agents.weight", "multilabels", "seen", "threshold", "log_mean", "log_std"):
        va, vb = a["training"]["method"][key], b["training"]["method"][key]
        assert torch.allclose(va.float(), vb.float(), atol=1e-6), key
    for key, value in a["encoder"].items():
        assert torch.allclose(value.float(), b["encoder"][key].float(), atol=1e-6), key
    steps_a, steps_b = read_csv(straight / "steps.csv"), read_csv(split / "steps.csv")
    assert len(steps_a) == len(steps_b) == 4
    for ra, rb in zip(steps_a, steps_b, strict=True):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=1e-5)
    # the statistics came back with the state: no second pass over the target set
    assert "features of" not in (split / "train.log").read_text().split("resumed from")[-1]


def test_the_trained_encoder_is_a_pure_encoder_that_passes_the_export_gate(
    runs, tiny_synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog
) -> None:
    caplog.set_level(logging.ERROR, logger="reid.models.backbones.weights")
    _, straight, _ = runs
    checkpoint = read_checkpoint(straight / "checkpoint_last.pt")
    assert not [k for k in checkpoint["encoder"] if "agents" in k]  # agents are method state
    assert checkpoint["metadata"]["embedding_dim"] == 64 + 256 + 512
    export_with_parity_gate(
        straight / "checkpoint_last.pt", tmp_path / "export", tiny_synthetic, capsys
    )
