"""The runtimes behind ``reid.runtimes.load_runtime``: onnxruntime, torch.export, TensorRT.

One tiny resnet18 export (ONNX + ``.pt2``, 64x32 input) serves every test; TensorRT
tests skip where ``tensorrt`` (the ``gpu`` extra) or a GPU is missing.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reid.manifest import load_manifest, save_manifest
from reid.runtimes import RUNTIMES, RuntimeUnavailableError, load_runtime
from reid.runtimes.onnx import CPU, CUDA, TENSORRT, OnnxRuntime, select_providers

SIZE = (64, 32)
REPO = Path(__file__).resolve().parents[1]

try:
    import tensorrt  # noqa: F401

    HAS_TENSORRT = True
except ImportError:
    HAS_TENSORRT = False


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, tiny_synthetic) -> Path:
    """A resnet18 export with ONNX and torch.export models (gate passed)."""
    from export.pipeline import ExportOptions, export_checkpoint
    from reid.models import build_model
    from trainer.checkpoint import build_checkpoint, save_checkpoint

    logging.getLogger("reid.models.backbones.weights").setLevel(logging.ERROR)
    root = tmp_path_factory.mktemp("runtimes")
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=None, input_size=SIZE).eval()
    checkpoint = save_checkpoint(build_checkpoint(model, method="baseline", epoch=1), root / "m.pt")
    options = ExportOptions(
        checkpoint=checkpoint,
        out=root / "out",
        formats=("onnx", "torch"),
        data=f"synthetic:{tiny_synthetic}",
        max_images=24,
        device="cpu",
    )
    _, report = export_checkpoint(options, say=lambda _text: None)
    assert report.passed
    return root / "out"


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((10, 3, *SIZE)).astype(np.float32)


def with_max_batch(export_dir: Path, target: Path, max_batch: int) -> Path:
    """A copy of the export's manifest (same model files) with another ``batch.max``."""
    manifest = load_manifest(export_dir)
    manifest.batch = {**manifest.batch, "max": max_batch}
    manifest.files = {k: str(export_dir / v) for k, v in manifest.files.items()}
    save_manifest(manifest, target)
    return target


# --- onnxruntime ------------------------------------------------------------------


def test_onnxruntime_embeds_batches_into_unit_vectors_on_cpu(export_dir, images):
    runtime = load_runtime(export_dir, "onnxruntime", device="cpu", threads=1)
    out = runtime.embed(images)
    assert out.shape == (10, 512) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert runtime.describe() == {
        "runtime": "onnxruntime",
        "device": "cpu",
        "model": "resnet18",
        "embedding_dim": 512,
        "input_size": list(SIZE),
        "providers": [CPU],
    }


def test_onnxruntime_splits_batches_over_max_batch_with_identical_results(
    export_dir, images, tmp_path
):
    whole = load_runtime(export_dir, "onnxruntime", device="cpu").embed(images)
    small = load_runtime(with_max_batch(export_dir, tmp_path, 3), "onnxruntime", device="cpu")
    assert small.max_batch == 3
    np.testing.assert_allclose(small.embed(images), whole, atol=1e-5)


def test_runtime_rejects_wrong_shapes_and_accepts_an_empty_batch(export_dir):
    runtime = load_runtime(export_dir, "onnxruntime", device="cpu")
    with pytest.raises(ValueError, match=r"float32\[N, 3, 64, 32\]"):
        runtime.embed(np.zeros((2, 3, 32, 64), dtype=np.float32))
    assert runtime.embed(np.zeros((0, 3, *SIZE), dtype=np.float32)).shape == (0, 512)


@pytest.mark.parametrize(
    "device, available, tensorrt, expected, warning",
    [
        ("cpu", [TENSORRT, CUDA, CPU], True, [CPU], None),
        ("cuda", [TENSORRT, CUDA, CPU], True, [TENSORRT, CUDA, CPU], None),
        ("cuda", [TENSORRT, CUDA, CPU], False, [CUDA, CPU], None),
        ("cuda", [CUDA, CPU], True, [CUDA, CPU], "lacks TensorrtExecutionProvider"),
        ("cuda", [CPU], True, [CPU], "falling back to CPUExecutionProvider"),
    ],
)
def test_provider_order_prefers_tensorrt_then_cuda_then_cpu(
    device, available, tensorrt, expected, warning
):
    providers, warnings = select_providers(device, available, tensorrt=tensorrt)
    assert providers == expected
    if warning is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warning in warnings[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the CPU fallback")
def test_onnxruntime_asked_for_cuda_without_a_gpu_provider_falls_back_with_a_warning(
    export_dir, images, caplog
):
    import onnxruntime as ort

    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    caplog.set_level(logging.WARNING, logger="reid.runtimes.onnx")
    runtime = OnnxRuntime(load_manifest(export_dir), device="cuda")
    assert runtime.device == "cpu" and runtime.providers == [CPU]
    assert "onnxruntime-gpu" in caplog.text
    assert runtime.embed(images[:2]).shape == (2, 512)


# --- torch.export -------------------------------------------------------------------


def test_torch_program_matches_onnxruntime(export_dir, images):
    onnx_out = load_runtime(export_dir, "onnxruntime", device="cpu").embed(images)
    torch_out = load_runtime(export_dir, "torch", device="cpu").embed(images)
    assert torch_out.shape == onnx_out.shape
    assert (torch_out * onnx_out).sum(axis=1).min() >= 0.9999


def test_torch_program_runs_without_the_model_code(export_dir):
    script = (
        "import sys, numpy as np\n"
        "from reid.runtimes import load_runtime\n"
        f"rt = load_runtime({str(export_dir)!r}, 'torch', device='cpu')\n"
        f"out = rt.embed(np.zeros((3, 3, {SIZE[0]}, {SIZE[1]}), dtype=np.float32))\n"
        "assert out.shape == (3, 512), out.shape\n"
        "assert 'reid.models' not in sys.modules, 'model code was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_torch_runtime_takes_the_servers_threads_option(export_dir, images):
    before = torch.get_num_threads()
    try:
        runtime = load_runtime(export_dir, "torch", device="cpu", threads=1)
        assert torch.get_num_threads() == 1
        assert runtime.embed(images[:2]).shape == (2, 512)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_every_runtime_accepts_the_options_the_server_passes(name):
    # `python -m server --threads N` passes threads to whichever runtime is chosen.
    module_name, class_name = RUNTIMES[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert "threads" in inspect.signature(cls.__init__).parameters


# --- errors -------------------------------------------------------------------------


def test_a_format_the_export_lacks_is_reported_as_unavailable(export_dir, tmp_path):
    manifest = load_manifest(export_dir)
    manifest.files = {"onnx": str(export_dir / "model.onnx")}
    save_manifest(manifest, tmp_path)
    with pytest.raises(RuntimeUnavailableError, match="re-export with --format torch"):
        load_runtime(tmp_path, "torch", device="cpu")


def test_unknown_runtime_name_is_a_value_error(export_dir):
    with pytest.raises(ValueError, match="unknown runtime"):
        load_runtime(export_dir, "openvino")


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_tensorrt_runtime_without_tensorrt_names_the_gpu_extra(export_dir):
    from reid.runtimes.tensorrt import TensorRTRuntime

    manifest = load_manifest(export_dir)
    with pytest.raises(RuntimeUnavailableError, match=r"pip install -e '\.\[gpu\]'"):
        TensorRTRuntime(manifest, device="cuda")


# --- TensorRT (needs tensorrt and an NVIDIA GPU) ---------------------------------------


@pytest.mark.slow
def test_tensorrt_engine_handles_batches_1_7_and_64_like_onnxruntime(export_dir, images, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT not installed (pip install -e '.[gpu]')")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs an NVIDIA GPU")
    from export.tensorrt_build import EngineOptions, build_engine

    manifest = load_manifest(export_dir)
    options = EngineOptions("images", SIZE, batch_min=1, batch_opt=8, batch_max=64)
    build_engine(export_dir / "model.onnx", tmp_path / "model.engine", options)
    manifest.files = {"onnx": str(export_dir / "model.onnx"), "tensorrt": "model.engine"}
    manifest.batch = {"min": 1, "opt": 8, "max": 64}
    save_manifest(manifest, tmp_path)
    engine = load_runtime(tmp_path, "tensorrt", device="cuda")
    reference = load_runtime(tmp_path, "onnxruntime", device="cpu")
    batch = np.random.default_rng(1).standard_normal((64, 3, *SIZE)).astype(np.float32)
    for size in (1, 7, 64):
        got, expected = engine.embed(batch[:size]), reference.embed(batch[:size])
        assert got.shape == (size, 512)
        assert (got * expected).sum(axis=1).min() >= 0.9999
