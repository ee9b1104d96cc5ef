"""``python -m export``: checkpoint -> ONNX (+ torch.export, TensorRT) -> manifest -> parity gate.

The export tests go through the command line entry point (``export.cli.main``), as a
user would; tiny models (64x32 input) and a few dozen gate images keep them cheap.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from model_cases import covering_models

from export.cli import main
from reid.data import load_dataset
from reid.data.io import read_image_rgb
from reid.manifest import FAILED_MARKER, ExportManifest, ManifestError, load_manifest
from reid.models import build_model
from reid.preprocess import preprocess_batch
from trainer.checkpoint import build_checkpoint, save_checkpoint

SIZE = (64, 32)
GATE_IMAGES = "40"
HEAVY = ("resnet50",)
REPO = Path(__file__).resolve().parents[1]

try:
    import tensorrt  # noqa: F401

    HAS_TENSORRT = True
except ImportError:
    HAS_TENSORRT = False


@pytest.fixture(autouse=True)
def _quiet_random_init_warnings(caplog):
    caplog.set_level(logging.ERROR, logger="reid.models.backbones.weights")


def make_checkpoint(path: Path, name: str = "resnet18", seed: int = 0) -> Path:
    """A weights-only checkpoint of a random-init encoder with real BatchNorm statistics."""
    torch.manual_seed(seed)
    model = build_model(name, pretrained=None, input_size=SIZE)
    with torch.no_grad():
        model.train()
        model(torch.randn(8, 3, *SIZE))  # non-trivial running statistics
    model.eval()
    data = build_checkpoint(model, method="baseline", epoch=2, metrics={"mAP": 0.25})
    return save_checkpoint(data, path)


def export(*args: object) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def gate_spec(tiny_synthetic) -> str:
    return f"synthetic:{tiny_synthetic}"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, gate_spec) -> tuple[Path, Path]:
    """``(checkpoint, export dir)`` of a resnet18 exported to ONNX and torch.export."""
    root = tmp_path_factory.mktemp("export")
    checkpoint = make_checkpoint(root / "model_best.pt")
    code = export(
        "--checkpoint",
        checkpoint,
        "--out",
        root / "out",
        "--format",
        "onnx,torch",
        "--data",
        gate_spec,
        "--max-images",
        GATE_IMAGES,
    )
    assert code == 0
    return checkpoint, root / "out"


def gate_images(spec: str, count: int) -> np.ndarray:
    dataset = load_dataset(spec)
    records = (dataset.query + dataset.gallery + dataset.train)[:count]
    manifest_config = build_model("resnet18", pretrained=None, input_size=SIZE).preprocess_config()
    return preprocess_batch([read_image_rgb(r.path) for r in records], manifest_config)


# --- every head and every backbone (tests/model_cases.py) ----------------------------


def _case(name: str) -> object:
    return pytest.param(name, marks=pytest.mark.slow) if any(h in name for h in HEAVY) else name


@pytest.mark.parametrize("name", [_case(n) for n in covering_models()])
def test_every_head_and_backbone_exports_and_passes_the_gate(name, tmp_path, gate_spec, capsys):
    checkpoint = make_checkpoint(tmp_path / "ckpt.pt", name)
    code = export(
        "--checkpoint",
        checkpoint,
        "--out",
        tmp_path / "out",
        "--data",
        gate_spec,
        "--max-images",
        GATE_IMAGES,
        "--json",
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, report
    assert report["passed"] and report["images"] == int(GATE_IMAGES)
    (onnx,) = report["runtimes"]
    assert onnx["format"] == "onnx" and onnx["precision"] == "fp32"
    assert onnx["min_cosine"] >= 0.9999
    assert abs(onnx["map_diff"]) <= 0.1
    manifest = load_manifest(tmp_path / "out")
    assert manifest.model_name == name and manifest.parity["passed"]
    assert not (tmp_path / "out" / FAILED_MARKER).exists()


# --- the exported model ----------------------------------------------------------


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_dynamic_batch_of_1_7_and_64_matches_pytorch(exported, gate_spec, runtime):
    from reid.checkpoint import load_encoder
    from reid.runtimes import load_runtime

    checkpoint, out = exported
    encoder, _ = load_encoder(checkpoint)
    images = gate_images(gate_spec, 64)
    with torch.no_grad():
        expected = encoder(torch.from_numpy(images)).numpy()
    model = load_runtime(out, runtime, device="cpu")
    for batch in (1, 7, 64):
        got = model.embed(images[:batch])
        assert got.shape == (batch, 512) and got.dtype == np.float32
        cosines = (got * expected[:batch]).sum(axis=1)  # both L2-normalised
        assert cosines.min() >= 0.9999


def test_manifest_describes_preprocessing_source_and_tools_and_round_trips(exported):
    checkpoint, out = exported
    raw = json.loads((out / "manifest.json").read_text())
    manifest = load_manifest(out)
    assert ExportManifest.from_dict(manifest.to_dict()).to_dict() == raw
    assert raw["input"] == {
        "name": "images",
        "shape": [-1, 3, *SIZE],
        "dtype": "float32",
        "layout": "NCHW",
    }
    assert raw["preprocess"]["color_order"] == "RGB"
    assert raw["preprocess"]["interpolation"] == "bilinear"
    assert raw["preprocess"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert raw["preprocess"]["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert raw["model"]["name"] == "resnet18" and raw["model"]["method"] == "baseline"
    assert raw["model"]["embedding_dim"] == 512 and raw["model"]["normalized"] is True
    assert raw["opset"] == 18
    assert raw["files"] == {"onnx": "model.onnx", "torch": "model.pt2"}
    assert raw["source"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert raw["source"]["epoch"] == 2 and raw["source"]["checkpoint"] == str(checkpoint)
    assert {"torch", "onnx", "onnxruntime", "python"} <= set(raw["tools"])
    assert raw["parity"]["passed"] and [r["format"] for r in raw["parity"]["runtimes"]] == [
        "onnx",
        "torch",
    ]


def test_onnx_graph_has_a_dynamic_batch_axis_and_passes_the_checker(exported):
    import onnx

    _, out = exported
    onnx.checker.check_model(str(out / "model.onnx"))
    (graph_input,) = onnx.load(str(out / "model.onnx")).graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, *SIZE]


# --- the parity gate -------------------------------------------------------------


def test_export_whose_gate_fails_exits_1_and_keeps_files_with_a_failed_marker(
    tmp_path, gate_spec, monkeypatch, capsys
):
    import export.onnx_export as onnx_export

    real_export = onnx_export.export_onnx

    def export_perturbed(model, path, input_size, **kwargs):
        model = copy.deepcopy(model)  # the gate's PyTorch reference keeps the true weights
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.05 * torch.randn_like(param))
        return real_export(model, path, input_size, **kwargs)

    monkeypatch.setattr(onnx_export, "export_onnx", export_perturbed)
    checkpoint = make_checkpoint(tmp_path / "ckpt.pt")
    code = export(
        "--checkpoint",
        checkpoint,
        "--out",
        tmp_path / "out",
        "--data",
        gate_spec,
        "--max-images",
        GATE_IMAGES,
    )
    output = capsys.readouterr().out
    assert code == 1
    assert "FAIL" in output and "parity gate FAILED" in output
    assert (tmp_path / "out" / "model.onnx").is_file()
    reason = (tmp_path / "out" / FAILED_MARKER).read_text()
    assert "min cosine" in reason
    with pytest.raises(ManifestError, match="parity gate"):
        load_manifest(tmp_path / "out")
    assert load_manifest(tmp_path / "out", allow_failed=True).parity["passed"] is False


def test_verify_rechecks_an_export_and_sets_then_clears_the_failed_marker(
    exported, tmp_path, capsys
):
    from reid.models.onnx_util import export_onnx

    _, original = exported
    out = tmp_path / "copy"
    shutil.copytree(original, out)
    torch.manual_seed(1)
    other = build_model("resnet18", pretrained=None, input_size=SIZE).eval()
    export_onnx(other, out / "model.onnx")  # a foreign model behind the same manifest
    assert main(["verify", str(out), "--max-images", GATE_IMAGES]) == 1
    assert "min cosine" in (out / FAILED_MARKER).read_text()
    assert load_manifest(out, allow_failed=True).parity["passed"] is False

    shutil.copy(original / "model.onnx", out / "model.onnx")
    capsys.readouterr()
    assert main(["verify", str(out), "--max-images", GATE_IMAGES]) == 0
    output = capsys.readouterr().out
    assert "no --data given, generating a small synthetic" in output
    assert not (out / FAILED_MARKER).exists()
    assert load_manifest(out).parity["passed"] is True


def test_verifying_only_some_formats_leaves_an_existing_failed_marker(
    exported, tmp_path, gate_spec, capsys
):
    _, original = exported
    out = tmp_path / "copy"
    shutil.copytree(original, out)
    (out / FAILED_MARKER).write_text("parity gate failed: torch/fp32: min cosine 0.5 < 0.9999\n")
    code = main(
        ["verify", str(out), "--format", "onnx", "--data", gate_spec, "--max-images", GATE_IMAGES]
    )
    assert code == 0
    assert "FAILED marker is left in place" in capsys.readouterr().out
    assert (out / FAILED_MARKER).exists()
    parity = load_manifest(out, allow_failed=True).parity
    assert [r["format"] for r in parity["runtimes"]] == ["onnx"]


def test_verify_refuses_a_checkpoint_that_is_not_the_exports_source(exported, tmp_path, capsys):
    _, out = exported
    other = make_checkpoint(tmp_path / "other.pt", seed=3)
    assert main(["verify", str(out), "--checkpoint", str(other)]) == 2
    assert "is not the one this export was made from" in capsys.readouterr().err


# --- clear failures --------------------------------------------------------------


def _truncated(path: Path) -> Path:
    make_checkpoint(path)
    path.write_bytes(path.read_bytes()[:2000])
    return path


def _foreign(path: Path) -> Path:
    model = build_model("resnet18", pretrained=None, input_size=SIZE)
    torch.save(model.state_dict(), path)  # a bare state dict, no reid metadata
    return path


def _wrong_architecture(path: Path) -> Path:
    data = torch.load(make_checkpoint(path), weights_only=True)
    data["metadata"]["build_spec"]["name"] = "mobilenetv2"
    torch.save(data, path)
    return path


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (_truncated, "cannot read"),
        (_foreign, "is not a reid checkpoint"),
        (_wrong_architecture, "does not fit encoder 'mobilenetv2'"),
        (lambda path: path, "no such checkpoint file"),
    ],
    ids=["corrupted", "foreign", "other-architecture", "missing"],
)
def test_a_bad_checkpoint_fails_with_one_clear_line_and_exit_2(make_bad, message, tmp_path, capsys):
    checkpoint = make_bad(tmp_path / "ckpt.pt")
    assert export("--checkpoint", checkpoint, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("error:")
    assert "weights_only" not in err  # never advise loading with pickled code enabled
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--int8", "--format", "onnx,tensorrt"], "--calib"),
        (["--fp16"], "add tensorrt to --format"),
        (["--format", "onnx,coreml"], "unknown --format"),
        (["--batch-min", "8", "--batch-opt", "4"], "--batch-min <= --batch-opt"),
        (["--opset", "17"], "--opset must be >= 18"),
        (["--data", "nosuch:/data"], "unknown dataset format"),
        (["--data", "synthetic:/no/such/dir"], "does not exist"),
        (["--max-images", "1"], "--max-images"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_usage_errors_exit_2_before_any_work(args, message, tmp_path, capsys):
    code = export("--checkpoint", tmp_path / "missing.pt", "--out", tmp_path / "out", *args)
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_tensorrt_format_without_tensorrt_fails_at_once_naming_the_gpu_extra(tmp_path, capsys):
    checkpoint = make_checkpoint(tmp_path / "ckpt.pt")
    code = export(
        "--checkpoint", checkpoint, "--out", tmp_path / "out", "--format", "onnx,tensorrt", "--fp16"
    )
    err = capsys.readouterr().err
    assert code == 2 and "TensorRT is not installed" in err and "pip install -e '.[gpu]'" in err
    assert not (tmp_path / "out").exists()


def test_python_m_export_reports_a_corrupted_checkpoint_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    result = subprocess.run(
        [sys.executable, "-m", "export", "--checkpoint", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "cannot read" in result.stderr


# --- TensorRT (needs tensorrt and an NVIDIA GPU) ---------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engine_is_built_and_gated(precision, tmp_path, gate_spec, capsys):
    pytest.importorskip("tensorrt", reason="TensorRT not installed (pip install -e '.[gpu]')")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs an NVIDIA GPU")
    checkpoint = make_checkpoint(tmp_path / "ckpt.pt")
    flags = {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", "--calib", gate_spec]}[precision]
    code = export(
        "--checkpoint",
        checkpoint,
        "--out",
        tmp_path / "out",
        "--format",
        "onnx,tensorrt",
        *flags,
        "--data",
        gate_spec,
        "--batch-opt",
        "8",
        "--batch-max",
        "64",
        "--json",
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, report
    trt = next(r for r in report["runtimes"] if r["format"] == "tensorrt")
    assert trt["precision"] == precision and trt["gated"] == (precision == "fp32")
    if precision == "fp32":
        assert trt["min_cosine"] >= 0.9999
    assert (tmp_path / "out" / "model.engine").is_file()
    assert (tmp_path / "out" / "timing.cache").is_file()


# --- Triton model repository ---------------------------------------------------------


def test_triton_format_writes_a_model_repository_triton_can_parse(tmp_path, gate_spec):
    checkpoint = make_checkpoint(tmp_path / "ckpt.pt")
    out = tmp_path / "out"
    code = export("--checkpoint", checkpoint, "--out", out, "--format", "onnx,triton",
                  "--data", gate_spec, "--max-images", GATE_IMAGES)  # fmt: skip
    assert code == 0
    model = out / "triton" / "reid"
    assert (model / "1" / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    assert json.loads((model / "manifest.json").read_text())["files"] == {"onnx": "model.onnx"}
    text = (model / "config.pbtxt").read_text()
    config = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    parsed = text_format.Parse(text, config.ModelConfig())
    assert parsed.name == "reid" and parsed.platform == "onnxruntime_onnx"
    assert parsed.max_batch_size == 256 and parsed.dynamic_batching.preferred_batch_size
    assert list(parsed.input[0].dims) == [3, *SIZE] and parsed.input[0].name == "images"
    assert parsed.output[0].name == "embeddings" and list(parsed.output[0].dims) == [512]


def test_a_failed_gate_writes_no_triton_repository(tmp_path, gate_spec, monkeypatch):
    from export import parity

    monkeypatch.setattr(parity.ParityReport, "passed", property(lambda self: False))
    checkpoint = make_checkpoint(tmp_path / "ckpt.pt")
    export("--checkpoint", checkpoint, "--out", tmp_path / "out", "--format", "triton",
           "--data", gate_spec, "--max-images", GATE_IMAGES)  # fmt: skip
    assert not (tmp_path / "out" / "triton").exists()
