"""Our export on a real NVIDIA Triton server (CPU, from PyPI's nvidia-pytriton): the
unchanged ``--format triton`` repository loads, and Triton and our own server answer the
same Open Inference Protocol request with the same embeddings as onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from triton_server import TritonServer, TritonUnavailableError

from export.cli import main as export_main
from reid.models import build_model
from trainer.checkpoint import build_checkpoint, save_checkpoint

pytestmark = pytest.mark.slow
SIZE = (64, 32)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, tiny_synthetic):
    root = tmp_path_factory.mktemp("triton")
    model = build_model("mobilenetv2", pretrained=None, input_size=SIZE).eval()
    checkpoint = save_checkpoint(build_checkpoint(model, method="baseline", epoch=0),
                                 root / "ckpt.pt")  # fmt: skip
    code = export_main(["--checkpoint", str(checkpoint), "--out", str(root / "out"),
                        "--format", "onnx,triton", "--data", f"synthetic:{tiny_synthetic}",
                        "--max-images", "16"])  # fmt: skip
    assert code == 0
    return root / "out"


@pytest.fixture(scope="module")
def triton(export_dir, tmp_path_factory):
    try:
        server = TritonServer(export_dir / "triton", tmp_path_factory.mktemp("triton-run"))
        server.wait_ready()
    except TritonUnavailableError as exc:
        pytest.skip(f"no Triton server here: {exc}")
    yield server
    server.stop()


def onnx_embeddings(export_dir, images):
    import onnxruntime as ort

    session = ort.InferenceSession(str(export_dir / "model.onnx"),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    return session.run(None, {"images": images})[0]


def infer(url: str, images: np.ndarray) -> np.ndarray:
    http = pytest.importorskip("tritonclient.http")
    client = http.InferenceServerClient(url=url.removeprefix("http://"))
    tensor = http.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images, binary_data=True)
    wanted = http.InferRequestedOutput("embeddings", binary_data=True)
    return client.infer("reid", [tensor], outputs=[wanted]).as_numpy("embeddings")


def test_triton_loads_the_exported_repository_and_matches_onnxruntime(triton, export_dir):
    images = np.random.default_rng(0).standard_normal((5, 3, *SIZE)).astype(np.float32)
    got = infer(triton.url, images)
    reference = onnx_embeddings(export_dir, images)
    assert got.shape == reference.shape
    assert float((got * reference).sum(axis=1).min()) > 0.99999


def test_our_server_and_triton_answer_the_same_request_alike(triton, export_dir, tmp_path):
    import subprocess
    import sys

    from live_server import REPO, wait_until_serving

    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "server", "--model", str(export_dir), "--gallery",
           str(tmp_path / "gallery"), "--host", "127.0.0.1", "--http-port", "0",
           "--no-grpc"]  # fmt: skip
    with log.open("w") as handle:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    try:
        url, _ = wait_until_serving(proc, log.read_text, timeout=120)
        images = np.random.default_rng(1).standard_normal((3, 3, *SIZE)).astype(np.float32)
        ours, theirs = infer(url, images), infer(triton.url, images)
        assert float((ours * theirs).sum(axis=1).min()) > 0.99999
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_perf_analyzer_measures_our_server_unchanged(export_dir, tmp_path):
    import subprocess
    import sys

    from live_server import REPO, wait_until_serving
    from triton_server import perf_analyzer

    try:
        binary, env = perf_analyzer()
    except TritonUnavailableError as exc:
        pytest.skip(str(exc))
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "server", "--model", str(export_dir), "--gallery",
           str(tmp_path / "gallery"), "--host", "127.0.0.1", "--http-port", "0",
           "--no-grpc"]  # fmt: skip
    with log.open("w") as handle:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    try:
        url, _ = wait_until_serving(proc, log.read_text, timeout=120)
        # Zeros: perf_analyzer's default random bytes include NaNs, which our server refuses;
        # any spread counts as stable: this checks the protocol, not the speed.
        run = subprocess.run(
            [str(binary), "-m", "reid", "-u", url.removeprefix("http://"), "-i", "http",
             "--input-data", "zero", "--concurrency-range", "2", "-b", "1",
             "--measurement-interval", "1000", "--stability-percentage", "999",
             "--max-trials", "3"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert "Throughput:" in run.stdout and "error" not in run.stdout.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
