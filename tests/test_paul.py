"""PAUL: its losses on hand-built tensors, its memories, its stages, a tiny real run.

The rules are those of ``trainer/methods/paul.py`` (Yang et al., "Patch-based
Discriminative Feature Learning for Unsupervised Person Re-identification", CVPR 2019,
as the QizeYang/PAUL code computes them): PEDAL over the k nearest memory patches, IPFL
with cyclic ranking and margin 2, the nearest-positive / nearest-negative triplet of the
pre-training, the per-image memories (first value, then 0.9 old + 0.1 new), the
surrogate positive. The end-to-end part trains a tiny PatchNet on ResNet-18 through
``python -m trainer``: the supervised pre-training on a reference set, the unsupervised
stage started from it with ``--init``, the same stage split by ``--resume``, and the
export parity gate (the affine grid sampling in ONNX).
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
from reid.data.base import ImageRecord
from reid.data.torch_dataset import ImageDataset
from reid.data.transforms import (
    RandomAreaCrop,
    RandomRotation,
    build_surrogate_transform,
    build_train_transform,
)
from reid.models import build_model
from reid.models.patchnet import random_thetas, stripe_thetas
from reid.preprocess import PreprocessConfig
from trainer.cli import main
from trainer.config import ConfigError, load_config
from trainer.memory import PatchMemory
from trainer.methods import build_method
from trainer.methods.base import EpochContext, TrainInfo
from trainer.methods.paul import (
    Paul,
    cyclic_hard_negatives,
    ipfl_loss,
    nearest_triplet_loss,
    pedal_loss,
)
from trainer.optim import LRSchedule, param_groups

INPUT = (64, 32)
N, NUM_CAMS, NUM_REF = 20, 3, 4
PATCHES, PATCH_DIM, EMBED = 6, 16, 8
TINY_MODEL = {
    "pretrained": None,
    "input_size": list(INPUT),
    "num_patches": PATCHES,
    "patch_dim": PATCH_DIM,
    "loc_channels": 16,
    "loc_hidden": 8,
}
CONFIGS = Path(__file__).resolve().parents[1] / "trainer" / "configs"


def _points(*xs: float) -> torch.Tensor:
    """Points on a line, as ``[len, 2]`` vectors ``(x, 0)``."""
    return torch.tensor([[x, 0.0] for x in xs])


# ----------------------------------------------------------------------------- PEDAL


def test_pedal_is_minus_log_the_share_of_the_k_nearest_other_slots() -> None:
    # one patch; the image owns slot 0 (left out); slots 1..3 at squared distances 1, 4, 9
    x = _points(0.0)[:, None, :]
    memory = _points(0.0, 1.0, 2.0, 3.0)[:, None, :]
    s = 0.5
    w = [math.exp(-s * d) for d in (1.0, 4.0, 9.0)]
    expected_k1 = -math.log(w[0] / sum(w))
    expected_k2 = -math.log((w[0] + w[1]) / sum(w))
    index = torch.tensor([0])
    assert float(pedal_loss(x, memory, index, s, neighbours=1)) == pytest.approx(
        expected_k1, rel=1e-5
    )
    assert float(pedal_loss(x, memory, index, s, neighbours=2)) == pytest.approx(
        expected_k2, rel=1e-5
    )
    # k larger than the other slots: everything is a neighbour, the loss is 0
    assert float(pedal_loss(x, memory, index, s, neighbours=10)) == pytest.approx(0.0, abs=1e-6)


def test_pedal_leaves_out_unwritten_slots_and_averages_over_patches_and_images() -> None:
    memory = torch.stack([_points(0.0, 1.0, 2.0, 3.0), _points(0.0, 3.0, 2.0, 1.0)], dim=1)
    x = torch.stack([_points(0.0, 3.0), _points(0.0, 0.0)], dim=1)  # [2 images, 2 patches, 2]
    index = torch.tensor([0, 3])
    valid = torch.tensor([True, True, True, False])  # slot 3 not written yet
    s = 0.5

    def term(x0: float, slots: list[float]) -> float:
        w = sorted((math.exp(-s * (x0 - v) ** 2) for v in slots), reverse=True)
        return -math.log(w[0] / sum(w))

    terms = [
        term(0.0, [1.0, 2.0]),  # image 0, patch 0 (slot 3 invalid, own slot 0 out)
        term(0.0, [3.0, 2.0]),  # image 0, patch 1
        term(3.0, [0.0, 1.0, 2.0]),  # image 1 owns the invalid slot 3 anyway
        term(0.0, [0.0, 3.0, 2.0]),
    ]
    loss = pedal_loss(x, memory, index, s, neighbours=1, valid=valid)
    assert float(loss) == pytest.approx(sum(terms) / 4, rel=1e-5)


def test_pedal_gradient_reaches_the_features_not_the_memory() -> None:
    x = F.normalize(torch.randn(3, 2, 4), dim=-1).requires_grad_(True)
    memory = F.normalize(torch.randn(6, 2, 4), dim=-1).requires_grad_(True)
    pedal_loss(x, memory, torch.tensor([0, 1, 2]), 15.0, neighbours=2).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and memory.grad is None


# ----------------------------------------------------------------------------- IPFL

# Batch centres on a line: c0 = 0 is the anchor's; c1 = 0.5 is its nearest other centre,
# but c0 is among c1's own top-3 (c1, c0, c2), so c1 is rejected; c2 = 1.5 has the top-3
# (c2, c3, c4) without c0: the second candidate is accepted.
CENTRES = _points(0.0, 0.5, 1.5, 1.75, 2.0)
VIEW = _points(-0.25)  # a view of image 0


def test_cyclic_ranking_rejects_a_candidate_that_ranks_the_anchor_near_and_takes_the_next() -> None:
    dist = torch.cdist(VIEW, CENTRES)
    owner = torch.tensor([0])
    assert cyclic_hard_negatives(dist, owner, CENTRES).tolist() == [2]
    # walking a single candidate finds none; with top-1 (itself only) c1 is accepted
    assert cyclic_hard_negatives(dist, owner, CENTRES, candidates=1).tolist() == [-1]
    assert cyclic_hard_negatives(dist, owner, CENTRES, nearest=1).tolist() == [1]


def test_ipfl_is_the_hinge_between_own_centre_and_the_cyclic_negative() -> None:
    owner = torch.tensor([0])
    loss, negatives = ipfl_loss(VIEW, owner, CENTRES, margin=2.0)
    assert negatives.tolist() == [2]
    assert float(loss) == pytest.approx(2.0 + 0.25 - 1.75)
    # no negative found: its distance counts as 0
    loss, negatives = ipfl_loss(VIEW, owner, CENTRES, margin=2.0, candidates=1)
    assert negatives.tolist() == [-1] and float(loss) == pytest.approx(2.0 + 0.25)
    # a view of image 4 at 10: c3 and c2 keep c4 in their top-3, c1 (at 9.5) does not
    views = _points(-0.25, 10.0)
    loss, negatives = ipfl_loss(views, torch.tensor([0, 4]), CENTRES, margin=2.0)
    assert negatives.tolist() == [2, 1]
    assert float(loss) == pytest.approx((0.5 + (2.0 + 8.0 - 9.5)) / 2)  # the mean over views


# ----------------------------------------------------------------------------- triplet


def test_the_pretrain_triplet_compares_the_nearest_positive_and_the_nearest_negative() -> None:
    feats = _points(0.0, 0.4, 3.0, 1.0, 5.0)
    labels = torch.tensor([0, 0, 0, 1, 2])  # identity 2 has no positive: left out
    # 0: pos 0.4, neg 1.0 -> 0.4; 1: pos 0.4, neg 0.6 -> 0.8; 2: pos 2.6, neg 2.0 -> 1.6;
    # 3: no positive
    expected = (max(0, 1 + 0.4 - 1.0) + max(0, 1 + 0.4 - 0.6) + max(0, 1 + 2.6 - 2.0)) / 3
    assert float(nearest_triplet_loss(feats, labels, 1.0)) == pytest.approx(expected, rel=1e-5)
    single = nearest_triplet_loss(feats[:1], labels[:1], 1.0)
    assert float(single) == 0.0


# ----------------------------------------------------------------------------- memory


def test_the_patch_memory_stores_a_first_value_then_moves_a_tenth_without_renormalising() -> None:
    memory = PatchMemory(4, (2, 3), momentum=0.9)
    first, second = torch.full((1, 2, 3), 1.0), torch.full((1, 2, 3), 3.0)
    preview = memory.updated(torch.tensor([2]), first)
    assert not memory.seen.any() and (memory.features == 0).all()  # updated() writes nothing
    memory.update(torch.tensor([2]), first)
    torch.testing.assert_close(memory.features[2:3], preview)
    torch.testing.assert_close(memory.features[2:3], first)
    assert memory.seen.tolist() == [False, False, True, False]
    memory.update(torch.tensor([2]), second)
    torch.testing.assert_close(memory.features[2], torch.full((2, 3), 0.9 * 1.0 + 0.1 * 3.0))
    assert not memory.ready
    memory.fill(torch.ones(4, 2, 3))
    assert memory.ready


def test_an_image_twice_in_a_batch_moves_twice_in_batch_order() -> None:
    memory = PatchMemory(3, 1, momentum=0.5)
    memory.fill(torch.zeros(3, 1))
    values = torch.tensor([[4.0], [2.0], [8.0]])
    preview = memory.updated(torch.tensor([1, 0, 1]), values)
    memory.update(torch.tensor([1, 0, 1]), values)
    final = 0.5 * (0.5 * 0.0 + 0.5 * 4.0) + 0.5 * 8.0  # 5
    assert memory.features.flatten().tolist() == [1.0, final, 0.0]
    assert preview.flatten().tolist() == [final, 1.0, final]
    with pytest.raises(ValueError, match="expected values"):
        memory.update(torch.tensor([0]), torch.zeros(1, 2))


# ----------------------------------------------------------------------------- views


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(48, 24, 3), dtype=np.uint8)


def test_the_surrogate_positive_is_deterministic_for_a_seed_and_keeps_the_model_size() -> None:
    config = PreprocessConfig(height=INPUT[0], width=INPUT[1])
    surrogate = build_surrogate_transform(build_train_transform(config, pad=0, erasing_p=0.0))
    image = _image()
    a = surrogate(image, np.random.default_rng(7))
    b = surrogate(image, np.random.default_rng(7))
    c = surrogate(image, np.random.default_rng(8))
    assert a.shape == (3, *INPUT) and torch.equal(a, b) and not torch.equal(a, c)


def test_the_area_crop_keeps_70_to_95_percent_and_the_rotation_keeps_the_canvas() -> None:
    image = _image()
    for seed in range(20):
        crop = RandomAreaCrop((0.70, 0.95))(image, np.random.default_rng(seed))
        share = crop.shape[0] * crop.shape[1] / (48 * 24)
        assert 0.70 - 0.05 <= share <= 0.95 + 1e-9, share  # int() rounding of the sides
    turned = RandomRotation(10.0)(image, np.random.default_rng(0))
    assert turned.shape == image.shape and not np.array_equal(turned, image)
    assert np.array_equal(RandomRotation(0.0)(image, np.random.default_rng(0)), image)


def test_a_view_does_not_change_the_main_images_random_draw(tmp_path: Path) -> None:
    import cv2

    path = tmp_path / "0001_c1s1_000001_01.jpg"
    cv2.imwrite(str(path), _image())
    config = PreprocessConfig(height=INPUT[0], width=INPUT[1])
    base = build_train_transform(config, erasing_p=0.5)
    records = [ImageRecord(path, 1, 0)]
    plain = ImageDataset(records, base, seed=3)[0]
    paired = ImageDataset(
        records, base, seed=3, views={"positive": build_surrogate_transform(base)}
    )[0]
    assert torch.equal(plain["image"], paired["image"]) and paired["positive"].shape == (3, *INPUT)
    assert not torch.equal(paired["image"], paired["positive"])
    with pytest.raises(ValueError, match="taken"):
        ImageDataset(records, base, views={"label": base})


# ----------------------------------------------------------------------------- method


def _make(params: dict | None = None, **model: object) -> Paul:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no pretrained weights"
        encoder = build_model("patchnet_resnet18", **{**TINY_MODEL, **model})
    info = TrainInfo(
        N, NUM_CAMS, None, encoder.embedding_dim, torch.device("cpu"),
        num_reference=12, num_reference_classes=NUM_REF,
    )  # fmt: skip
    method = build_method("paul", encoder, {"embedding_dim": EMBED, **(params or {})}, info)
    assert isinstance(method, Paul)
    return method


def _target(index: list[int], seed: int = 1) -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    idx = torch.tensor(index)
    return {
        "target": {
            "image": torch.randn(len(idx), 3, *INPUT, generator=gen),
            "positive": torch.randn(len(idx), 3, *INPUT, generator=gen),
            "index": idx,
            "label": idx,
            "camid": idx % NUM_CAMS,
        }
    }


def _reference(seed: int = 2) -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    ref = torch.arange(8)
    return {
        "reference": {
            "image": torch.randn(8, 3, *INPUT, generator=gen),
            "index": ref,
            "label": ref // 2,  # 4 identities x 2 images, as the PK sampler draws them
            "camid": ref % 2,
        }
    }


def _filled(m: Paul) -> Paul:
    gen = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(N, m.info.embedding_dim, generator=gen), dim=1)
    assert m.wants_features(0)
    plan = m.prepare_epoch(EpochContext(0, [], np.arange(N) % NUM_CAMS, None, feats))
    np.testing.assert_array_equal(plan.labels, np.arange(N))  # the sampler draws images
    torch.testing.assert_close(m.patch_memory.features, m.split(feats))
    assert not m.wants_features(1)  # once per run (seen is a buffer: resumes keep it)
    return m


def test_the_unsupervised_stage_freezes_the_generator_and_the_embeddings() -> None:
    m = _make()
    assert m.streams() == ("target",) and set(m.view_transforms(build_train_transform(
        m.encoder.preprocess_config()))) == {"positive"}  # fmt: skip
    assert not any(p.requires_grad for p in m.encoder.generator.parameters())
    assert not any(p.requires_grad for p in m.embeddings.parameters())
    assert not [q for q in m.extra_parameters() if q.requires_grad]
    assert m.encoder_param_groups() == {}
    groups = param_groups(m.encoder, m.extra_parameters(), 1e-4, own=m.encoder_param_groups())
    in_optimiser = {id(p) for g in groups for p in g["params"]}
    assert not {id(p) for p in m.encoder.generator.parameters()} & in_optimiser
    assert {id(p) for p in m.encoder.down.parameters()} <= in_optimiser


def test_the_unsupervised_total_is_2_pedal_plus_ipfl_on_memories_updated_first() -> None:
    m = _filled(_make())
    batch = _target([0, 1, 2, 3, 4, 5])
    old_patches = m.patch_memory.features.clone()
    torch.manual_seed(5)
    out = m.training_step(batch)
    assert set(out.losses) == {"pedal", "ipfl"}
    # recompute both from the same forward pass
    torch.manual_seed(5)
    t = batch["target"]
    patches = m.encoder.forward_train(torch.cat([t["image"], t["positive"]])).patch_feats
    index = t["index"]
    bank = old_patches.clone()
    bank[index] = 0.9 * old_patches[index] + 0.1 * patches[:6].detach()  # updated before
    pedal = pedal_loss(patches[:6], bank, index, 15.0, 10)
    torch.testing.assert_close(out.losses["pedal"], 2.0 * pedal)
    e = m.projections(patches)
    centres = 0.5 * (e[:6] + e[6:]).detach()  # first sight: the two-view mean
    ipfl, _ = ipfl_loss(e, torch.arange(6).repeat(2), centres, 2.0)
    torch.testing.assert_close(out.losses["ipfl"], ipfl)
    sum(out.losses.values()).backward()
    assert m.encoder.down[0][0].weight.grad.abs().sum() > 0
    m.after_step(batch, out)
    torch.testing.assert_close(m.patch_memory.features, bank)
    torch.testing.assert_close(m.centre_memory.features[:6].flatten(1), centres)
    assert m.centre_memory.seen.tolist() == [True] * 6 + [False] * (N - 6)


def test_ipfl_projects_each_patch_with_the_unit_rows_of_its_embedding_layer() -> None:
    m = _make()
    x = F.normalize(torch.randn(3, PATCHES, PATCH_DIM), dim=-1)
    e = m.projections(x)
    assert e.shape == (3, PATCHES * EMBED)
    w = F.normalize(m.embeddings[2].weight, dim=1)
    torch.testing.assert_close(e[:, 2 * EMBED : 3 * EMBED], x[:, 2] @ w.t())


def test_the_ablation_switches_drop_their_loss_and_memory() -> None:
    m = _make({"pedal": False})
    assert not m.wants_features(0) and m.patch_memory.num_slots == 0
    m.prepare_epoch(EpochContext(0, [], np.arange(N) % NUM_CAMS, None, None))
    out = m.training_step(_target([0, 1, 2, 3]))
    assert set(out.losses) == {"ipfl"}
    m.after_step(_target([0, 1, 2, 3]), out)
    m = _filled(_make({"ipfl": False}))
    assert m.centre_memory.num_slots == 0
    assert set(m.training_step(_target([0, 1, 2, 3])).losses) == {"pedal"}
    with pytest.raises(ConfigError, match="train nothing"):
        _make({"pedal": False, "ipfl": False})


def test_the_pretrain_stage_sums_the_patch_cross_entropies_and_adds_a_tenth_triplet() -> None:
    m = _make({"stage": "pretrain"})
    assert m.streams() == ("reference",) and not m.wants_features(0)
    assert m.view_transforms(build_train_transform(m.encoder.preprocess_config())) == {}
    assert len(m.classifiers) == PATCHES and m.classifiers[0].out_features == NUM_REF
    batch = _reference()
    torch.manual_seed(5)
    out = m.training_step(batch)
    torch.manual_seed(5)
    hidden = F.relu(m.encoder.forward_train(batch["reference"]["image"]).aux["patch_raw"])
    labels = batch["reference"]["label"]
    ce = sum(F.cross_entropy(fc(hidden[:, i]), labels) for i, fc in enumerate(m.classifiers))
    emb = F.normalize(torch.cat([g(hidden[:, i]) for i, g in enumerate(m.embeddings)], 1), dim=1)
    torch.testing.assert_close(out.losses["ce"], ce)
    torch.testing.assert_close(out.losses["triplet"], 0.1 * nearest_triplet_loss(emb, labels))
    sum(out.losses.values()).backward()
    assert all(p.grad is not None for p in m.extra_parameters())


def test_the_generator_trains_only_inside_its_window_at_its_own_rate() -> None:
    m = _make({"stage": "pretrain", "generator_epochs": [2, 4], "generator_lr_mult": 1e-3})
    own = m.encoder_param_groups()
    groups = param_groups(m.encoder, m.extra_parameters(), 0.1, 0.1, own=own)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"backbone", "head", "method", "generator"}
    assert by_name["generator"]["lr"] == pytest.approx(1e-4)
    assert by_name["backbone"]["lr"] == pytest.approx(0.01)
    head = {id(p) for p in by_name["head"]["params"]}
    assert not head & {id(p) for p in m.encoder.generator.parameters()}
    optimizer = torch.optim.SGD(groups, lr=0.1)
    schedule = LRSchedule("step", total_epochs=6, milestones=[3])
    seen = {}
    for t in (0.0, 1.9, 2.0, 3.5, 4.0):
        schedule.apply(optimizer, t, m.lr_factor)
        seen[t] = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert seen[0.0]["generator"] == 0.0 and seen[1.9]["generator"] == 0.0
    assert seen[2.0]["generator"] == pytest.approx(1e-4)
    assert seen[3.5]["generator"] == pytest.approx(1e-5)  # the schedule's x0.1 applies too
    assert seen[4.0]["generator"] == 0.0 and seen[4.0]["head"] == pytest.approx(0.01)
    fixed = _make({"stage": "pretrain", "generator_lr_mult": 0.0})  # equal stripes kept
    assert fixed.encoder_param_groups() == {}
    assert not any(p.requires_grad for p in fixed.encoder.generator.parameters())


def test_random_patches_start_from_fixed_boxes_inside_the_map() -> None:
    thetas = random_thetas(6, seed=3)
    torch.testing.assert_close(thetas, random_thetas(6, seed=3))
    assert not torch.allclose(thetas, stripe_thetas(6))
    scale, shift = thetas[:, [0, 1], [0, 1]], thetas[:, [0, 1], [2, 2]]
    assert ((shift.abs() + scale) <= 1 + 1e-6).all()  # each box inside the map
    m = _make(patch_init="random", patch_seed=3)
    with torch.no_grad():
        theta = m.encoder.eval().forward_train(torch.randn(2, 3, *INPUT)).aux["theta"]
    torch.testing.assert_close(theta, thetas.expand(2, 6, 2, 3))


def test_init_takes_the_embedding_layers_of_a_pretrain_state() -> None:
    pre = _make({"stage": "pretrain"})
    with torch.no_grad():
        pre.embeddings[0].weight.mul_(3.0)
    unsup = _make()
    state = {k: v for k, v in pre.state_dict().items() if not k.startswith("encoder.")}
    taken = unsup.init_from_state(state)
    assert {n.split(".")[0] for n in taken} == {"embeddings"}
    torch.testing.assert_close(unsup.embeddings[0].weight, pre.embeddings[0].weight)
    assert not unsup.embeddings[0].weight.requires_grad
    with pytest.warns(UserWarning, match="no patch embedding layers"):
        assert unsup.init_from_state({}) == []


def test_only_the_pretrain_stage_needs_a_reference_set() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = build_model("patchnet_resnet18", **TINY_MODEL)
    info = TrainInfo(N, NUM_CAMS, None, encoder.embedding_dim, torch.device("cpu"))
    with pytest.raises(ValueError, match="--reference"):
        build_method("paul", encoder, {"stage": "pretrain"}, info)
    assert isinstance(build_method("paul", encoder, {}, info), Paul)
    params = Paul.params_cls
    assert Paul.needs_reference(params(stage="pretrain"))
    assert not Paul.needs_reference(params())


@pytest.mark.parametrize(
    "name",
    ["paul_synthetic", "paul_market1501", "paul_dukemtmc", "paul_pretrain_synthetic",
     "paul_pretrain_msmt17"],
)  # fmt: skip
def test_the_configs_hold_the_papers_settings_and_the_ablation_switches(name: str) -> None:
    path = CONFIGS / f"{name}.yaml"
    config = load_config(path)
    p = config.method.params
    assert config.model.name.startswith("patchnet_") and config.model.kwargs["num_patches"] == 6
    assert (p.pedal_weight, p.ipfl_weight, p.margin, p.neighbours) == (2.0, 1.0, 2.0, 10)
    assert (p.memory_momentum, p.ranking_candidates, p.ranking_nearest) == (0.9, 15, 3)
    assert (p.triplet_weight, p.triplet_margin, p.embedding_dim) == (0.1, 1.0, 128)
    assert p.stage == ("pretrain" if "pretrain" in name else "unsupervised")
    assert p.scale == (5.0 if name == "paul_dukemtmc" else 15.0)
    transforms = config.data.transforms
    assert transforms.flip and (transforms.pad, transforms.erasing_p) == (0, 0.0)
    if p.stage == "unsupervised":
        assert (config.train.sampler, config.train.num_instances) == ("random", 1)
        assert (config.optim.name, config.optim.lr, config.optim.weight_decay) == (
            "sgd", 1e-4, 1e-4,
        )  # fmt: skip
    else:
        assert (config.reference.sampler, config.reference.num_instances) == ("pk", 2)
        assert (config.optim.lr, config.optim.backbone_lr_mult) == (0.1, 0.1)
        assert p.generator_lr_mult == 1e-4
    if name == "paul_market1501":
        assert (config.train.epochs, config.train.batch_size) == (60, 42)
        assert config.schedule.milestones == [50]
        assert config.model.kwargs["input_size"] == [384, 128]
    if name == "paul_pretrain_msmt17":
        assert p.generator_epochs == [25.0, 40.0] and config.schedule.milestones == [40]
        assert config.reference.splits == ["train", "query", "gallery"]
        assert config.reference.batch_size == 96
    if name == "paul_pretrain_synthetic":
        assert p.generator_epochs == [4.0, 7.0] and config.schedule.milestones == [7]
    ablated = load_config(path, ["method.pedal=false"]).method.params
    assert ablated.pedal is False and ablated.ipfl is True


# ----------------------------------------------------------------------------- a tiny run


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny labelled synthetic reference set: 8 identities numbered from 6001."""
    return labelled_reference(tmp_path_factory, "paul_reference", ids=8, seed=12, pid_offset=6000)


def _config(path: Path) -> Path:
    method = {
        "name": "paul",
        "embedding_dim": EMBED,
        "generator_epochs": [1, 2],
        "generator_lr_mult": 1.0,
    }
    return write_config(
        path,
        # last stride 1: a 4x2 map (a 2x1 one does not pass torch's ONNX decomposition)
        {"name": "patchnet_resnet18", "kwargs": {**TINY_MODEL, "last_stride": 1}},
        method,
        reference={"batch_size": 8, "sampler": "pk", "num_instances": 2},
        train={"batch_size": 6},
        optim={"name": "sgd", "lr": 1.0e-3, "momentum": 0.9, "weight_decay": 1.0e-4},
    )


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path, tiny_reference: Path
) -> tuple[Path, Path, Path]:
    """``(pretrain, straight, split)``: the supervised pre-training (2 epochs, the generator
    trained in the second), the unsupervised stage from it over 2 epochs, and the same
    stage as 1 epoch then ``--resume`` to 2."""
    root = tmp_path_factory.mktemp("paul")
    config = str(_config(root / "c.yaml"))
    data = ["--data", f"synthetic:{tiny_synthetic}"]
    pretrain = root / "pretrain"
    base = ["train", "--config", config, *data]
    reference = ["--reference", f"synthetic:{tiny_reference}"]
    assert main([*base, *reference, "--out", str(pretrain), "method.stage=pretrain"]) == 0
    init = ["--init", str(pretrain / "checkpoint_last.pt")]
    return pretrain, *straight_and_resumed(base, root, init)


def test_the_pretrain_stage_trains_on_reference_pairs_and_moves_the_generator_late(
    runs,
) -> None:
    pretrain, _, _ = runs
    rows = read_csv(pretrain / "metrics.csv")
    assert len(rows) == 2 and all(float(r["ce"]) > 0 and r["mAP"] != "" for r in rows)
    assert rows[0]["reference_batch_size"] == "8" and "pedal" not in rows[0]
    state = read_checkpoint(pretrain / "checkpoint_last.pt")
    assert state["training"]["method"]["classifiers.0.weight"].shape == (8, PATCH_DIM)
    steps = read_csv(pretrain / "steps.csv")
    assert len(steps) == 4
    # the generator moved (epoch 2 is inside generator_epochs [1, 2)); it starts at stripes
    bias = state["encoder"]["generator.fc_loc.2.bias"].view(PATCHES, 2, 3)
    assert not torch.allclose(bias, stripe_thetas(PATCHES))


def test_the_unsupervised_stage_starts_from_the_pretraining_and_runs_both_losses(
    runs,
) -> None:
    pretrain, straight, _ = runs
    log = (straight / "train.log").read_text()
    assert "initialised the encoder and method parameters embeddings.0.weight" in log
    assert "reference set" not in log  # no reference stream in this stage
    rows = read_csv(straight / "metrics.csv")
    for key in ("pedal", "ipfl", "negatives_found", "mAP"):
        assert rows[-1][key] != "", key
    assert float(rows[0]["memory_filled"]) == 1.0
    before = read_checkpoint(pretrain / "checkpoint_last.pt")
    after = read_checkpoint(straight / "checkpoint_last.pt")
    key = "generator.fc_loc.2.bias"  # frozen: the patches stay where pre-training put them
    torch.testing.assert_close(after["encoder"][key], before["encoder"][key], rtol=0, atol=0)
    w = "embeddings.0.weight"
    torch.testing.assert_close(
        after["training"]["method"][w], before["training"]["method"][w], rtol=0, atol=0
    )
    assert not torch.equal(
        after["encoder"]["down.0.0.weight"], before["encoder"]["down.0.0.weight"]
    )
    method = after["training"]["method"]
    assert method["patch_memory.seen"].all() and method["centre_memory.seen"].sum() >= 6


def test_resume_restores_both_memories_exactly(runs) -> None:
    _, straight, split = runs
    a = read_checkpoint(straight / "checkpoint_last.pt")
    b = read_checkpoint(split / "checkpoint_last.pt")
    for key in ("patch_memory.features", "patch_memory.seen", "centre_memory.features",
                "centre_memory.seen"):  # fmt: skip
        va, vb = a["training"]["method"][key], b["training"]["method"][key]
        assert torch.allclose(va.float(), vb.float(), atol=1e-6), key
    for key, value in a["encoder"].items():
        assert torch.allclose(value.float(), b["encoder"][key].float(), atol=1e-6), key
    steps_a, steps_b = read_csv(straight / "steps.csv"), read_csv(split / "steps.csv")
    assert len(steps_a) == len(steps_b) == 4
    for ra, rb in zip(steps_a, steps_b, strict=True):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=1e-5)


def test_the_cli_refuses_a_reference_set_for_the_unsupervised_stage(
    runs, tiny_synthetic: Path, tiny_reference: Path, tmp_path: Path, capsys
) -> None:
    config = str(_config(tmp_path / "c.yaml"))
    args = ["train", "--config", config, "--data", f"synthetic:{tiny_synthetic}"]
    ref = ["--reference", f"synthetic:{tiny_reference}"]
    assert main([*args, *ref, "--out", str(tmp_path / "a")]) == 2
    assert "'paul' with these settings does not use a reference set" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "method.stage=pretrain"]) == 2
    assert "pass --reference FORMAT:PATH" in capsys.readouterr().err


def test_the_trained_encoder_is_a_pure_encoder_that_passes_the_export_gate(
    runs, tiny_synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog
) -> None:
    caplog.set_level(logging.ERROR, logger="reid.models.backbones.weights")
    _, straight, _ = runs
    checkpoint = read_checkpoint(straight / "checkpoint_last.pt")
    assert not [k for k in checkpoint["encoder"] if "embeddings" in k or "memory" in k]
    assert checkpoint["metadata"]["embedding_dim"] == PATCHES * PATCH_DIM
    export_with_parity_gate(
        straight / "checkpoint_last.pt", tmp_path / "export", tiny_synthetic, capsys
    )
