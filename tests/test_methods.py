"""Every registered method on a tiny fake epoch, then the clustering methods' details.

``test_every_registered_method_prepares_steps_and_resumes`` runs over
``trainer.methods.METHODS``, so a new method is covered as soon as it is registered;
the other tests pin cluster_contrast, aff_scl, frifm_adl (every ablation switch) and
its cluster-contrast variant; ``tests/test_iics.py`` pins IICS.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reid.data.transforms import build_train_transform
from reid.models import build_model
from trainer.checkpoint import load_method_state, method_state
from trainer.config import Params
from trainer.methods import METHODS, build_method, register_method
from trainer.methods.aff_scl import AffScl
from trainer.methods.base import EpochContext, Method, TrainInfo
from trainer.methods.frifm_adl import FrifmAdl
from trainer.methods.supervised import Supervised

NUM_IDS, PER_ID, NUM_CAMS = 6, 8, 3
N = NUM_IDS * PER_ID
NUM_REFERENCE_IDS = 5  # the reference set of methods that use one (mar)
INPUT = (64, 32)
CLUSTERING = {"eps": 0.5, "min_samples": 2, "k1": 7, "k2": 2}

# (method, encoder, params): every ablation switch of every method
CASES = [
    ("cluster_contrast", "resnet18", {}),
    ("aff_scl", "aff_resnet18", {"memories": "mean"}),
    ("aff_scl", "aff_resnet18", {"memories": "hard"}),
    ("aff_scl", "aff_resnet18", {"memories": "both"}),
    ("cluster_contrast", "resnet18", {"memory_update": "batch_mean"}),
    ("frifm_adl_cluster_contrast", "resnet18", {"adl": False}),
    ("frifm_adl_cluster_contrast", "frifm_resnet18", {"adl": True}),
]
EXPECTED_LOSSES = {
    "cluster_contrast": {"contrast"},
    ("aff_scl", "mean"): {"mean"},
    ("aff_scl", "hard"): {"hard"},
    ("aff_scl", "both"): {"mean", "hard", "balance"},
    ("cluster_contrast", "batch_mean"): {"contrast"},
    ("frifm_adl_cluster_contrast", False): {"contrast"},
    ("frifm_adl_cluster_contrast", True): {"contrast", "camera", "adl"},
}


def _make(method: str, model: str, params: dict, seed: int = 0) -> Method:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no pretrained weights"
        encoder = build_model(model, pretrained=None, input_size=INPUT)
    info = TrainInfo(
        num_train=N,
        num_cameras=NUM_CAMS,
        num_classes=NUM_IDS,  # the true identity count (only supervised methods use it)
        embedding_dim=encoder.embedding_dim,
        device=torch.device("cpu"),
        num_reference=4 * NUM_REFERENCE_IDS,
        num_reference_classes=NUM_REFERENCE_IDS,
    )
    fields = METHODS[method].params_cls.model_fields
    tiny = {k: v for k, v in CLUSTERING.items() if k in fields}  # for the 48-image epoch
    return build_method(method, encoder, {**tiny, **params}, info)


def _features(dim: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(NUM_IDS, dim, generator=gen), dim=1)
    noise = 0.004 * torch.randn(N, dim, generator=gen)
    return F.normalize(centres.repeat_interleave(PER_ID, 0) + noise, dim=1)


TRUE_LABELS = np.repeat(np.arange(NUM_IDS), PER_ID)


def _context(
    features: torch.Tensor | None,
    epoch: int = 0,
    run_once: Callable | None = None,
    true_labels: np.ndarray | None = None,
):
    kwargs = {} if run_once is None else {"run_once": run_once}
    camids = np.arange(N) % NUM_CAMS
    return EpochContext(epoch, [], camids, true_labels, features, **kwargs)


def _batch(
    labels: np.ndarray,
    seed: int = 1,
    streams: tuple[str, ...] = ("target",),
    views: tuple[str, ...] = (),
) -> dict[str, dict[str, torch.Tensor]]:
    """4 clusters x 4 instances, as a PK sampler would draw them; with ``"reference"`` in
    ``streams`` also 8 labelled reference images; ``views``: extra target views (PAUL's
    ``positive``), random images like the others."""
    index = np.concatenate([np.flatnonzero(labels == c)[:4] for c in range(4)])
    gen = torch.Generator().manual_seed(seed)
    batch = {
        "target": {
            "image": torch.randn(len(index), 3, *INPUT, generator=gen),
            "index": torch.from_numpy(index),
            "label": torch.from_numpy(labels[index]),
            "camid": torch.from_numpy(index % NUM_CAMS),
        }
    }
    for view in views:
        batch["target"][view] = torch.randn(len(index), 3, *INPUT, generator=gen)
    if "reference" in streams:
        ref = torch.arange(8)
        batch["reference"] = {
            "image": torch.randn(8, 3, *INPUT, generator=gen),
            "index": ref,
            "label": ref % NUM_REFERENCE_IDS,
            "camid": ref % 2,
        }
    return {k: v for k, v in batch.items() if k in streams}


def _memories(method: Method) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in method.state_dict().items() if k.endswith("features")}


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_methods_are_registered() -> None:
    shipped = {"supervised", "cluster_contrast", "aff_scl", "frifm_adl", "iics", "selective"}
    shipped |= {"mar", "paul"}
    assert shipped <= set(METHODS)
    for name, cls in METHODS.items():
        assert cls.name == name and issubclass(cls.params_cls, Params)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_prepares_steps_and_resumes(name: str) -> None:
    """The method contract of ``trainer.methods.base`` for each method, default params."""
    m = _make(name, "resnet18", {})
    feats = _features(m.info.embedding_dim) if m.needs_features else None
    labels = TRUE_LABELS if m.needs_labels else None
    trained: set[int] = set()
    for epoch in (0, 1):  # two epochs: a method with stages (iics) trains each in turn
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a well-separated epoch gives no warning
            plan = m.prepare_epoch(_context(feats, epoch=epoch, true_labels=labels))
        assert plan.labels.shape == (N,) and np.issubdtype(plan.labels.dtype, np.integer)
        assert (plan.labels >= 0).all() and all(isinstance(v, float) for v in plan.stats.values())

        views = tuple(m.view_transforms(build_train_transform(m.encoder.preprocess_config())))
        batch = _batch(plan.labels, streams=m.streams(), views=views)
        m.train()
        m.zero_grad(set_to_none=True)
        out = m.training_step(batch)
        assert out.losses and all(torch.isfinite(v) and v.ndim == 0 for v in out.losses.values())
        sum(out.losses.values()).backward()
        assert _grad_norm(m.encoder) > 0
        trained |= {id(p) for p in m.extra_parameters() if p.grad is not None}
        m.after_step(batch, out)
    trainable = [n for n, p in m.named_parameters() if p.requires_grad and id(p) not in trained]
    assert not [n for n in trainable if not n.startswith("encoder.")]  # the method's own too

    fresh = _make(name, "resnet18", {}, seed=1)  # resume: the state is all in state_dict
    load_method_state(fresh, method_state(m))
    for key, value in method_state(m).items():
        torch.testing.assert_close(method_state(fresh)[key], value, rtol=0, atol=0, msg=key)


def test_registering_a_method_is_one_decorator() -> None:
    class NoopParams(Params):
        scale: float = 1.0

    @register_method
    class Noop(Supervised):
        name = "test_noop"
        params_cls = NoopParams

    try:
        assert METHODS["test_noop"] is Noop
        assert register_method(Noop) is Noop  # idempotent
        with pytest.raises(ValueError, match="'test_noop' is taken"):
            register_method(type("Other", (Supervised,), {"name": "test_noop"}))
        with pytest.raises(TypeError, match="params_cls must be"):
            register_method(type("Bad", (Supervised,), {"name": "bad", "params_cls": dict}))
    finally:
        del METHODS["test_noop"]


@pytest.mark.parametrize(("method", "model", "params"), CASES)
def test_epoch_step_update_and_resume(method: str, model: str, params: dict) -> None:
    m = _make(method, model, params)
    calls = []

    def run_once(compute):
        calls.append(1)
        return compute()

    feats = _features(m.info.embedding_dim)
    plan = m.prepare_epoch(_context(feats, run_once=run_once))
    assert calls == [1]  # clustering goes through run_once (DDP: rank 0 only)
    assert plan.stats["num_clusters"] == NUM_IDS and plan.stats["outlier_ratio"] == 0.0
    np.testing.assert_array_equal(plan.labels, np.repeat(np.arange(NUM_IDS), PER_ID))
    for name, memory in _memories(m).items():  # initialised from the cluster means
        means = F.normalize(feats.view(NUM_IDS, PER_ID, -1).mean(1), dim=1)
        torch.testing.assert_close(memory, means, msg=name)

    batch = _batch(plan.labels)
    before = _memories(m)
    out = m.training_step(batch)
    key = (method, next(iter(params.values()))) if params else method
    assert set(out.losses) == EXPECTED_LOSSES[key]
    assert all(torch.isfinite(v) and v.ndim == 0 for v in out.losses.values())
    sum(out.losses.values()).backward()
    assert _grad_norm(m.encoder) > 0
    m.after_step(batch, out)

    after = _memories(m)
    in_batch = sorted(set(batch["target"]["label"].tolist()))
    others = [c for c in range(NUM_IDS) if c not in in_batch]
    for name in before:  # batch clusters moved, the others did not
        assert not torch.allclose(after[name][in_batch], before[name][in_batch]), name
        torch.testing.assert_close(after[name][others], before[name][others], rtol=0, atol=0)
        torch.testing.assert_close(after[name].norm(dim=1), torch.ones(NUM_IDS))

    # resume: a fresh method of the same config restores labels and memories exactly
    fresh = _make(method, model, params, seed=1)
    fresh.load_state_dict(m.state_dict())
    for name, memory in _memories(fresh).items():
        torch.testing.assert_close(memory, after[name], rtol=0, atol=0)
    torch.testing.assert_close(fresh.pseudo_labels, m.pseudo_labels, rtol=0, atol=0)


def test_cluster_contrast_memory_follows_each_instance_in_turn_by_default() -> None:
    """The reference rule (cluster-contrast ``cm.py``): slot <- L2(m * slot + (1 - m) * x)
    for every batch instance, one after the other."""
    m = _make("cluster_contrast", "resnet18", {"momentum": 0.2})
    plan = m.prepare_epoch(_context(_features(m.info.embedding_dim)))
    batch = _batch(plan.labels)
    expected = m.memory.features.clone()
    out = m.training_step(batch)
    m.after_step(batch, out)
    feats, labels = out.features.detach(), batch["target"]["label"]
    for x, c in zip(feats, labels.tolist(), strict=True):
        expected[c] = F.normalize(0.2 * expected[c] + 0.8 * x, dim=0)
    torch.testing.assert_close(m.memory.features, expected)


def test_cluster_contrast_batch_mean_memory_moves_once_per_cluster() -> None:
    m = _make("cluster_contrast", "resnet18", {"momentum": 0.2, "memory_update": "batch_mean"})
    plan = m.prepare_epoch(_context(_features(m.info.embedding_dim)))
    batch = _batch(plan.labels)
    old = m.memory.features.clone()
    out = m.training_step(batch)
    m.after_step(batch, out)
    feats, labels = out.features.detach(), batch["target"]["label"]
    for c in labels.unique().tolist():
        expected = F.normalize(0.2 * old[c] + 0.8 * feats[labels == c].mean(0), dim=0)
        torch.testing.assert_close(m.memory.features[c], expected)


def test_aff_scl_hard_memory_takes_the_least_similar_instance() -> None:
    m = _make("aff_scl", "aff_resnet18", {"momentum": 0.1})
    assert isinstance(m, AffScl)
    plan = m.prepare_epoch(_context(_features(m.info.embedding_dim)))
    batch = _batch(plan.labels)
    centres, hard = m.mean_memory.features.clone(), m.hard_memory.features.clone()
    out = m.training_step(batch)
    m.after_step(batch, out)
    feats, labels = out.features.detach(), batch["target"]["label"]
    for c in labels.unique().tolist():
        members = feats[labels == c]
        hardest = members[(members @ centres[c]).argmin()]
        expected = F.normalize(0.1 * hard[c] + 0.9 * hardest, dim=0)
        torch.testing.assert_close(m.hard_memory.features[c], expected)
    # the balance loss is zero while both memories are equal, positive once they differ
    out2 = m.training_step(batch)
    assert float(out2.losses["balance"].detach()) > 0
    assert float(out.losses["balance"].detach()) == pytest.approx(0.0, abs=1e-7)


def test_frifm_adl_gradients_reach_camera_branch_estimator_and_encoder() -> None:
    m = _make("frifm_adl", "frifm_resnet18", {"adl": True})
    assert isinstance(m, FrifmAdl) and m.adl is not None
    adl = m.adl
    extra = {id(p) for p in m.extra_parameters()}
    assert {id(p) for p in adl.parameters()} <= extra  # trained with the IICS classifiers
    plan = m.prepare_epoch(_context(_features(m.info.embedding_dim)))
    batch = _batch(plan.labels)

    out = m.training_step(batch)
    assert {"intra", "camera", "adl"} == set(out.losses)  # IICS's intra stage + ADL
    out.losses["camera"].backward()  # camera CE: camera branch only (detached map)
    assert _grad_norm(adl.camera) > 0 and _grad_norm(m.encoder) == 0
    m.zero_grad()

    out = m.training_step(batch)
    out.losses["adl"].backward()  # MI term: estimator and (reversed) encoder, not the branch
    assert _grad_norm(adl.statistics) > 0 and _grad_norm(m.encoder) > 0
    assert _grad_norm(adl.camera) == 0
    assert "mi" in out.extras and "camera_acc" in out.extras


@pytest.mark.parametrize("coeff", [1.0, 0.5])
def test_frifm_adl_gradient_reversal_opposes_the_estimator(coeff: float) -> None:
    m = _make("frifm_adl", "resnet18", {"adl": True, "grl_coeff": coeff})
    assert m.adl is not None
    dim = m.info.embedding_dim
    identity = torch.randn(8, dim, requires_grad=True)
    camera = torch.randn(8, m.params.camera_dim)
    torch.manual_seed(3)
    (-m.adl.mutual_information(identity, camera)).backward()  # what the loop minimises
    through_grl = identity.grad.clone()
    # the gradient the estimator's objective has w.r.t. the identity feature, no GRL
    plain = identity.detach().clone().requires_grad_(True)
    torch.manual_seed(3)
    shuffled = camera[torch.randperm(8)]
    from trainer.losses import jsd_mutual_information

    stats = m.adl.statistics
    bound = jsd_mutual_information(stats(plain, camera), stats(plain, shuffled))
    (-bound).backward()
    assert through_grl.abs().sum() > 0
    torch.testing.assert_close(through_grl, -coeff * plain.grad)


def test_frifm_adl_rejects_bad_camera_ids() -> None:
    m = _make("frifm_adl", "resnet18", {"adl": True})
    plan = m.prepare_epoch(_context(_features(m.info.embedding_dim)))
    batch = _batch(plan.labels)
    batch["target"]["camid"] = batch["target"]["camid"] + NUM_CAMS
    with pytest.raises(ValueError, match="camera ids"):
        m.training_step(batch)


def test_all_outliers_plan_nothing_and_the_state_before_is_restorable() -> None:
    """No cluster: an all ``-1`` plan with the clustering's own statistics, no warning
    (the loop warns once and restores the state it saved before ``prepare_epoch``)."""
    m = _make("cluster_contrast", "resnet18", {})
    dim = m.info.embedding_dim
    first = m.prepare_epoch(_context(_features(dim)))
    saved = method_state(m)
    noise = F.normalize(torch.randn(N, dim, generator=torch.Generator().manual_seed(9)), dim=1)
    m.params = m.params.model_copy(update={"eps": 1e-4, "min_samples": 4})  # noise: no core
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = m.prepare_epoch(_context(noise, epoch=1))
    assert (plan.labels == -1).all()
    assert plan.stats == {"num_clusters": 0.0, "outlier_ratio": 1.0, "eps": 1e-4}
    assert m.memory.num_slots == 0

    load_method_state(m, saved)  # what the loop does with such a plan
    assert m.memory.num_slots == NUM_IDS
    np.testing.assert_array_equal(m.pseudo_labels.numpy(), first.labels)
    torch.testing.assert_close(m.memory.features, saved["memory.features"], rtol=0, atol=0)


def test_bad_params_are_rejected() -> None:
    from trainer.config import ConfigError

    with pytest.raises(ConfigError, match="memories"):
        _make("aff_scl", "aff_resnet18", {"memories": "neither"})
    with pytest.raises(ConfigError, match="valid keys"):
        _make("cluster_contrast", "resnet18", {"lambda": 1.0})
    with pytest.raises(ConfigError, match="eps"):
        _make("frifm_adl_cluster_contrast", "resnet18", {"eps": 0.0})
    with pytest.raises(ConfigError, match="inter_clusters"):
        _make("frifm_adl", "resnet18", {"inter_clusters": 1})
    with pytest.raises(ConfigError, match="memory_update"):
        _make("cluster_contrast", "resnet18", {"memory_update": "mean"})


MY_CONFIGS = [
    f"{method}_{dataset}"
    for method in ("cluster_contrast", "aff_scl", "frifm_adl", "iics", "selective", "mar", "paul")
    for dataset in ("market1501", "dukemtmc", "synthetic")
]


@pytest.mark.parametrize("name", MY_CONFIGS)
def test_configs_load_with_the_ablation_switches(name: str) -> None:
    from pathlib import Path

    from trainer.config import load_config

    path = Path(__file__).resolve().parents[1] / "trainer" / "configs" / f"{name}.yaml"
    config = load_config(path)
    method = name.rsplit("_", 1)[0]
    assert config.method.name == method
    assert isinstance(config.method.params, METHODS[method].params_cls)
    if method == "aff_scl":
        for mode in ("mean", "hard", "both"):
            assert load_config(path, [f"method.memories={mode}"]).method.params.memories == mode
    if method == "frifm_adl":
        plain = config.model.name.removeprefix("frifm_")
        ablated = load_config(path, [f"model.name={plain}", "method.adl=false"])
        assert ablated.model.name == plain and ablated.method.params.adl is False
