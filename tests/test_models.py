"""The encoder contract, checked for every registered model.

Every name in ``list_models()`` is built and checked automatically: a new head or
backbone file gets these tests by registering itself. The full contract runs on
the covering set of ``tests/model_cases.py`` (each head and each backbone at least
once, plus every name that existed before heads and backbones were composed,
checked against the state dicts those names built then). Models on
ResNet-50-sized backbones are marked ``slow`` (they still run in CI).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import itertools
import json
import logging
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_cases import LEGACY_STATE_DICTS, covering_models

from reid.data.synthetic.generate import GeneratorParams, plan_dataset, render_job
from reid.models import (
    HEADS,
    EncoderStateError,
    TrainOutput,
    UnknownModelError,
    UnsupportedBackboneError,
    build_model,
    build_model_from_spec,
    first_conv,
    list_models,
    load_encoder_state,
    register_head,
    resolve_model,
)
from reid.models.backbones import BACKBONES, BUNDLED_WEIGHTS, STAGES
from reid.models.baseline import BaselineEncoder
from reid.models.neck import BNNeck
from reid.models.onnx_util import cosine_parity, export_onnx, onnx_session, run_onnx
from reid.models.part import stripe_bounds
from reid.models.patchnet import sample_patch, stripe_thetas
from reid.models.pooling import AvgPool, GeMPool
from reid.models.registry import register_model
from reid.preprocess import PreprocessConfig, decode_image_bytes, preprocess_batch

SIZE = (64, 32)  # small and fast; 8 stripes still fit (overlapping) on the 4x2 map
PARITY_SIZE = (128, 64)  # the demo's input size
HEAVY_BACKBONES = ("resnet50",)  # resnet50 and se_resnet50 trunks


def _case(name: str) -> object:
    heavy = any(b in name for b in HEAVY_BACKBONES)
    return pytest.param(name, marks=pytest.mark.slow) if heavy else name


ALL_MODELS = [_case(name) for name in list_models(aliases=False)]
COVERED_MODELS = [_case(name) for name in covering_models()]


@pytest.fixture(autouse=True)
def _quiet_random_init_warnings(caplog):
    caplog.set_level(logging.ERROR, logger="reid.models.backbones.weights")


def make(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, **{"pretrained": None, "input_size": SIZE, **kwargs})


def person_crops(count: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """``count`` synthetic pedestrian crops, preprocessed like served images."""
    params = GeneratorParams(ids_train=4, ids_test=1, cameras=2, seed=0)
    jobs = plan_dataset(params)[:count]
    images = [decode_image_bytes(render_job(job, params)) for job in jobs]
    return preprocess_batch(images, PreprocessConfig(height=size[0], width=size[1]))


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    return torch.from_numpy(person_crops(6))


def wake_and_calibrate(model: torch.nn.Module, images: torch.Tensor) -> torch.nn.Module:
    """Make every branch matter, as after training, and return the model in eval mode.

    Zero-initialised parameters (FRIFM's residual scales, PatchNet's localisation
    weights) are set to non-zero values, then two train-mode passes give the
    BatchNorm layers real running statistics.
    """
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad and not bool(param.any()):
                if param.dim() == 1:
                    param.uniform_(0.2, 0.8)
                else:
                    param.normal_(0.0, 0.01)
        model.train()
        for _ in range(2):
            model(images)
    return model.eval()


# --- the contract: every registered model, then the covering set ---------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_encoder_maps_images_to_unit_embeddings_deterministically(name, crops):
    model = make(name).eval()
    with torch.no_grad():
        first = model(crops[:3])
        again = model.forward_train(crops[:3])
    assert first.shape == (3, model.embedding_dim) and first.dtype == torch.float32
    torch.testing.assert_close(first.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    assert isinstance(again, TrainOutput)
    assert torch.equal(again.embedding, first)  # deterministic, and the same on both paths
    model.train()
    assert model(crops[:2]).shape == (2, model.embedding_dim)  # train mode: same return type


@pytest.mark.parametrize("name", COVERED_MODELS)
def test_model_describes_how_to_rebuild_and_feed_it(name):
    model = make(name)
    assert model.build_spec["name"] == name
    assert json.loads(json.dumps(model.build_spec))["kwargs"]["input_size"] == list(SIZE)
    config = model.preprocess_config()
    assert isinstance(config, PreprocessConfig) and (config.height, config.width) == SIZE
    assert model.input_size == SIZE
    assert model.metadata()["embedding_dim"] == model.embedding_dim > 0


@pytest.mark.parametrize("name", COVERED_MODELS)
def test_gradients_reach_the_first_conv_through_forward_train(name, crops):
    model = make(name).train()
    out = model.forward_train(crops[:4])
    torch.manual_seed(1)
    loss = (out.embedding * torch.randn_like(out.embedding)).sum()
    for extra in (out.bn_feat, out.part_feats, out.patch_feats):
        if extra is not None:
            loss = loss + (extra * torch.randn_like(extra)).sum()
    loss.backward()
    grad = first_conv(model).weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"parameters outside the training graph: {unused}"


# ONNX export + onnxruntime parity of every registered encoder: tests/test_export.py
# (through python -m export, with the parity gate on real images).


@pytest.mark.parametrize("name", COVERED_MODELS)
def test_state_dict_round_trip_through_build_spec_gives_identical_outputs(name, crops):
    model = wake_and_calibrate(make(name), crops[:4])
    buffer = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "spec": model.build_spec}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    rebuilt = build_model_from_spec(checkpoint["spec"])
    load_encoder_state(rebuilt, checkpoint["state_dict"])
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(model(crops[:2]), rebuilt(crops[:2]))
    assert rebuilt.build_spec == model.build_spec


# --- registry and checkpoints ----------------------------------------------------


EXPECTED_DIMS = {
    "resnet50": 2048,
    "se_resnet50_fusion": 256 + 1024 + 2048,
    "frifm_resnet50": 2048,
    "aff_resnet50": 2048,
    "part_resnet50": 2048 + 8 * 256,
    "patchnet_resnet50": 6 * 256,
    "resnet18": 512,
    "fusion_resnet18": 64 + 256 + 512,
    "part_resnet18": 512 + 8 * 256,
}


@pytest.mark.parametrize("name, dim", EXPECTED_DIMS.items())
def test_embedding_dimensions_follow_the_papers(name, dim):
    assert make(name).embedding_dim == dim


def test_every_head_is_composed_with_every_backbone():
    names = set(list_models())
    assert {"baseline", "aff", "frifm", "fusion", "part", "patchnet"} <= set(HEADS)
    for head in HEADS.values():
        for backbone in BACKBONES:
            assert head.model_name(backbone) in names
            assert resolve_model(head.model_name(backbone)) == (head.name, backbone)
    assert {"resnet34", "aff_resnet34", "fusion_resnet34"} <= names  # no head file lists it


def _state_dict_digest(model: torch.nn.Module) -> tuple[str, int]:
    items = sorted((k, list(v.shape)) for k, v in model.state_dict().items())
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16], len(items)


@pytest.mark.parametrize("name", sorted(LEGACY_STATE_DICTS))
def test_legacy_names_build_the_same_state_dict_as_before(name):
    model = build_model(name, pretrained=None)
    assert _state_dict_digest(model) == LEGACY_STATE_DICTS[name]
    assert model.build_spec == {"name": name, "kwargs": {"pretrained": None}}
    assert build_model_from_spec(model.build_spec).build_spec["name"] == name


def test_the_paper_name_of_a_combination_is_an_alias_of_its_composed_name():
    assert resolve_model("se_resnet50_fusion") == resolve_model("fusion_se_resnet50")
    assert "se_resnet50_fusion" in list_models()
    assert "se_resnet50_fusion" not in list_models(aliases=False)
    legacy, composed = make("se_resnet50_fusion"), make("fusion_se_resnet50")
    assert _state_dict_digest(legacy) == _state_dict_digest(composed)


def test_unknown_model_name_lists_the_available_ones():
    with pytest.raises(KeyError) as info:
        build_model("resnet51")
    message = str(info.value)
    assert "resnet51" in message
    for name in list_models():
        assert name in message


@pytest.mark.parametrize("name", ["sift_resnet18", "aff_resnet51"])
def test_unknown_head_or_backbone_lists_the_valid_heads_and_backbones(name):
    with pytest.raises(UnknownModelError) as info:
        build_model(name)
    message = str(info.value)
    assert name in message
    assert "heads: aff, baseline, frifm, fusion, part, patchnet" in message
    assert "backbones: efficientnet_lite0, mobilenetv2, resnet18, resnet34, " in message


def test_a_name_cannot_be_registered_twice():
    def resnet50() -> torch.nn.Module:
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="registered twice"):
        register_model(resnet50)
    with pytest.raises(ValueError, match="head 'aff' is registered twice"):
        register_head("aff")(BaselineEncoder)


# A backbone file as a contributor would write it: registering is all it takes.
NEW_BACKBONE_FILE = """
from torch import nn

from reid.models.backbones import Backbone, register_backbone


def _conv(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))


class TinyNet(Backbone):
    def __init__(self, last_stride=1):
        super().__init__()
        self.stem = _conv(3, 8, 2)
        self.stages = nn.ModuleList(
            [_conv(8, 16, 2), _conv(16, 32, 2), _conv(32, 48, 2), _conv(48, 64, last_stride)]
        )
        self.stage_channels = (16, 32, 48, 64)
        self.stage_strides = (4, 8, 16, 16 * last_stride)


class FlatNet(Backbone):
    \"\"\"Only a last feature map: no stages for the heads that read them.\"\"\"

    out_channels = 64

    def __init__(self, last_stride=1):
        super().__init__()
        self.body = nn.Sequential(_conv(3, 32, 4), nn.ReLU(), _conv(32, 64, 4 * last_stride))

    def forward(self, images):
        return self.body(images)


@register_backbone("tinynet")
def tinynet(last_stride=1):
    \"\"\"A four-stage toy backbone, 64 output channels.\"\"\"
    return TinyNet(last_stride)


@register_backbone("flatnet", provides=())
def flatnet(last_stride=1):
    \"\"\"A toy backbone without stages.\"\"\"
    return FlatNet(last_stride)
"""


@pytest.fixture
def new_backbone_file(tmp_path):
    """Import ``NEW_BACKBONE_FILE`` as a new module; the registry is restored afterwards."""
    saved = dict(BACKBONES), dict(BUNDLED_WEIGHTS)
    path = tmp_path / "toy_backbones.py"
    path.write_text(NEW_BACKBONE_FILE)
    spec = importlib.util.spec_from_file_location("toy_backbones", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_backbones"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("toy_backbones", None)
        for registry, before in zip((BACKBONES, BUNDLED_WEIGHTS), saved, strict=True):
            registry.clear()
            registry.update(before)


def test_a_backbone_registered_in_one_new_file_is_built_under_every_head(new_backbone_file, crops):
    assert list_models("*tinynet") == sorted(h.model_name("tinynet") for h in HEADS.values())
    for head in HEADS.values():
        name = head.model_name("tinynet")
        model = make(name).eval()
        assert isinstance(model, head.encoder) and type(model.backbone).__name__ == "TinyNet"
        with torch.no_grad():
            embedding = model(crops[:2])
        assert embedding.shape == (2, model.embedding_dim)
        torch.testing.assert_close(embedding.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)
        assert build_model_from_spec(model.build_spec).build_spec["name"] == name


def test_a_head_that_reads_the_stages_refuses_a_backbone_without_them(new_backbone_file, crops):
    staged = {name for name, head in HEADS.items() if STAGES in head.requires}
    assert staged == {"frifm", "fusion"}
    flat = set(list_models("*flatnet"))
    assert flat == {h.model_name("flatnet") for n, h in HEADS.items() if n not in staged}
    for name in flat:
        with torch.no_grad():
            assert make(name).eval()(crops[:1]).shape[0] == 1
    with pytest.raises(UnsupportedBackboneError) as info:
        build_model("frifm_flatnet")
    message = str(info.value)
    assert "'frifm' needs backbone feature(s) stages" in message
    assert "'flatnet' does not provide" in message and "tinynet" in message


def test_preprocessing_follows_the_backbone_weights_normalisation():
    lite = make("efficientnet_lite0")
    config = lite.preprocess_config()
    assert (config.mean, config.std) == (lite.backbone.input_mean, lite.backbone.input_std)
    assert make("resnet18").preprocess_config().mean == PreprocessConfig().mean  # ImageNet


def test_common_kwargs_are_recorded_and_applied():
    model = make("resnet18", pooling="gem", embedding_dim=128, last_stride=2)
    assert model.embedding_dim == 128
    assert isinstance(model.pool, GeMPool)
    assert model.build_spec["kwargs"]["embedding_dim"] == 128
    assert model.build_spec["kwargs"]["input_size"] == list(SIZE)
    assert model.backbone.stage_strides[-1] == 32


def test_checkpoint_of_another_head_fails_naming_the_missing_keys():
    baseline_state = make("resnet18").state_dict()
    with pytest.raises(EncoderStateError) as info:
        load_encoder_state(make("aff_resnet18"), baseline_state)
    message = str(info.value)
    assert "aff_resnet18" in message and "missing" in message
    assert "aff.casam.channel.mlp.0.weight" in message


def test_checkpoint_of_another_backbone_fails_naming_mismatched_and_unexpected_keys():
    with pytest.raises(EncoderStateError) as info:
        load_encoder_state(make("resnet18"), make("resnet50").state_dict())
    message = str(info.value)
    assert "shape-mismatched" in message and "backbone.layer1.0.conv1.weight" in message
    assert "unexpected" in message and "backbone.layer1.0.conv3.weight" in message


def test_dataparallel_prefixes_are_accepted():
    model = make("resnet18")
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    load_encoder_state(make("resnet18"), state)


def test_export_refuses_a_model_in_train_mode(tmp_path):
    with pytest.raises(ValueError, match="eval"):
        export_onnx(make("resnet18").train(), tmp_path / "m.onnx")


def test_gem_pooled_model_exports_with_parity(tmp_path, crops):
    model = wake_and_calibrate(make("resnet18", pooling="gem"), crops[:4])
    path = export_onnx(model, tmp_path / "gem.onnx")
    images = crops[:3]
    with torch.no_grad():
        expected = model(images).numpy()
    assert cosine_parity(expected, run_onnx(onnx_session(path), images.numpy())) >= 0.9999


# --- building blocks ------------------------------------------------------------


def test_gem_is_average_at_p1_and_approaches_max_for_large_p():
    x = torch.rand(2, 3, 4, 5) + 0.1
    gem = GeMPool(p=1.0)
    torch.testing.assert_close(gem(x), AvgPool()(x))
    assert isinstance(gem.p, torch.nn.Parameter) and gem.p.requires_grad
    torch.testing.assert_close(GeMPool(p=60.0)(x), x.amax(dim=(2, 3)), rtol=0.1, atol=0)


def test_bn_neck_learns_the_scale_but_not_the_shift():
    neck = BNNeck(8)
    assert neck.weight.requires_grad and not neck.bias.requires_grad
    assert not neck.bias.any()


# --- method heads -----------------------------------------------------------------


def test_frifm_starts_as_the_plain_backbone(crops):
    model = make("frifm_resnet18").eval()
    with torch.no_grad():
        out = model.forward_train(crops[:2])
        plain = model.backbone(crops[:2])
    torch.testing.assert_close(out.feature_map, plain)
    assert set(out.attention) == {"stage1", "stage2", "stage3", "stage4"}


def test_se_fusion_concatenates_pooled_layer1_layer3_layer4(crops):
    model = make("fusion_resnet18").eval()
    with torch.no_grad():
        out = model.forward_train(crops[:2])
        stages = model.backbone.forward_stages(crops[:2])
    expected = torch.cat([stages[i].mean(dim=(2, 3)) for i in (0, 2, 3)], dim=1)
    torch.testing.assert_close(out.global_feat, expected)
    assert set(out.aux) == {"stage1", "stage3", "stage4"}


def test_aff_attends_globally_then_on_two_channel_halves(crops):
    model = make("aff_resnet18").eval()
    with torch.no_grad():
        out = model.forward_train(crops[:2])
    h, w = out.feature_map.shape[2:]
    assert out.attention["spatial"].shape == (2, 1, h, w)
    assert out.attention["local1"].shape == (2, 256, 1, 1)
    assert out.attention["local2"].shape == (2, 256, 1, 1)


def test_part_embedding_cosine_mixes_global_and_mean_stripe_cosines(crops):
    model = wake_and_calibrate(make("part_resnet18"), crops)
    with torch.no_grad():
        a, b = model.forward_train(crops[:1]), model.forward_train(crops[1:2])
    assert a.part_feats.shape == (1, 8, 256)
    cos_global = (a.aux["global_embedding"] * b.aux["global_embedding"]).sum()
    cos_parts = (a.part_feats * b.part_feats).sum(dim=2).mean()
    expected = 0.5 * cos_global + 0.5 * cos_parts
    torch.testing.assert_close((a.embedding * b.embedding).sum(), expected)


def test_stripes_cover_every_row_in_order():
    for height in (4, 8, 16, 13):
        bounds = stripe_bounds(height, 8)
        assert bounds[0][0] == 0 and bounds[-1][1] == height
        assert all(top < bottom for top, bottom in bounds)
        assert all(b[0] <= c[0] for b, c in itertools.pairwise(bounds))


def test_patchnet_starts_from_six_horizontal_stripes(crops):
    model = make("patchnet_resnet18").eval()
    with torch.no_grad():
        out = model.forward_train(crops[:2])
    assert out.patch_feats.shape == (2, 6, 256)
    torch.testing.assert_close(out.aux["theta"], stripe_thetas(6).expand(2, 6, 2, 3))
    rows = torch.arange(12.0).view(1, 1, 12, 1).expand(1, 1, 12, 4)
    for i, theta in enumerate(stripe_thetas(6)):
        patch = sample_patch(rows, theta[None])
        assert 2 * i - 0.5 <= float(patch.min()) and float(patch.max()) <= 2 * i + 1.5


def test_patch_embedding_is_the_renormalised_concatenation(crops):
    model = make("patchnet_resnet18").eval()
    with torch.no_grad():
        out = model.forward_train(crops[:2])
    torch.testing.assert_close(out.embedding, F.normalize(out.patch_feats.flatten(1), dim=1))
