"""NVIDIA Triton Inference Server for the tests and benchmarks, CPU only, from PyPI.

``nvidia-pytriton==0.7.0`` ships the ``tritonserver`` 2.51 binary with the Python backend
only (no C++ onnxruntime backend). A small Python-based backend, ``onnxruntime/model.py``
in a backend directory built here, runs an ONNX model with onnxruntime, so an unchanged
``platform: "onnxruntime_onnx"`` model repository (``python -m export --format triton``)
loads and is served over Triton's real HTTP/gRPC protocols and dynamic batcher.

The server side needs ``numpy<2`` (with numpy 2 every output arrives empty), so it gets
its own venv, created once in ``~/.cache/reid/triton-venv`` (``$REID_TRITON_VENV``).
Traps handled here: the backend stub needs ``LD_LIBRARY_PATH`` to hold the interpreter's
LIBDIR and ``nvidia_pytriton.libs``, and it does not see ``PYTHONPATH``, so the backend
puts the venv's site-packages on ``sys.path`` itself.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = [
    "nvidia-pytriton==0.7.0",
    "numpy<2",
    "onnxruntime<1.24",
    # perf_analyzer: the 2.51 wheel ships a binary this glibc runs (newer ones do not); it
    # links libcudart.so.12 even on a CPU run, and Debian's libb64-0d.
    "tritonclient==2.51.0",
    "nvidia-cuda-runtime-cu12",
]

BACKEND = '''import sys

sys.path.insert(0, {site!r})  # the stub does not inherit PYTHONPATH

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """An onnxruntime backend in Python: one session, every request's rows in one run."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("ORT_THREADS", "1"))
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = config["input"][0]["name"]
        self.output = config["output"][0]["name"]

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
        out = self.session.run([self.output], {{self.input: np.concatenate(arrays)}})[0]
        responses, start = [], 0
        for array in arrays:
            rows = out[start : start + len(array)].astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output, rows)]))
            start += len(array)
        return responses
'''


class TritonUnavailableError(RuntimeError):
    """Triton cannot be installed or started here (the message says why)."""


def venv_dir() -> Path:
    default = Path.home() / ".cache" / "reid" / "triton-venv"
    return Path(os.environ.get("REID_TRITON_VENV", default))


def _site(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.check_output([str(python), "-c", code], text=True).strip())


def ensure_venv() -> Path:
    """The venv's interpreter, with pytriton installed (created on first use)."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    if python.is_file() and (python.parent / "perf_analyzer").is_file():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *PACKAGES],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if result.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        raise TritonUnavailableError(f"cannot install {PACKAGES}: {result.stderr[-500:]}")
    return python


def backend_dir(python: Path, root: Path) -> Path:
    """pytriton's Python backend (with the stub for this interpreter) + ours, in ``root``."""
    site = _site(python)
    triton = site / "pytriton" / "tritonserver"
    version = subprocess.check_output(
        [str(python), "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
        text=True,
    ).strip()
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(triton / "backends", root)
    for stub in (triton / "python_backend_stubs" / version).iterdir():
        shutil.copy2(stub, root / "python" / stub.name)
    (root / "onnxruntime").mkdir()
    (root / "onnxruntime" / "model.py").write_text(BACKEND.format(site=str(site)))
    return root


def perf_analyzer() -> tuple[Path, dict[str, str]]:
    """Triton's ``perf_analyzer`` and the environment it runs in."""
    python = ensure_venv()
    binary = python.parent / "perf_analyzer"
    if not binary.is_file():
        raise TritonUnavailableError(f"no perf_analyzer in {python.parent}")
    cudart = next((_site(python) / "nvidia").glob("cuda_runtime/lib/libcudart.so.12*"), None)
    if cudart is None:
        raise TritonUnavailableError("nvidia-cuda-runtime-cu12 (libcudart.so.12) is missing")
    if not any(Path(d).glob("libb64.so*") for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib")):
        raise TritonUnavailableError("libb64 is missing (apt-get install libb64-0d)")
    return binary, {**os.environ, "LD_LIBRARY_PATH": str(cudart.parent)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TritonServer:
    """``tritonserver`` on 127.0.0.1 serving ``repository``; ``url`` once ready."""

    def __init__(self, repository: Path, work: Path, *, threads: int = 1) -> None:
        python = ensure_venv()
        site = _site(python)
        libdir = subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
            text=True,
        ).strip()
        backends = backend_dir(python, Path(work) / "backends")
        self.http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
        env = {
            **os.environ,
            "LD_LIBRARY_PATH": os.pathsep.join([libdir, str(site / "nvidia_pytriton.libs")]),
            "ORT_THREADS": str(threads),
        }
        self.log = Path(work) / "triton.log"
        binary = site / "pytriton" / "tritonserver" / "bin" / "tritonserver"
        cmd = [
            str(binary), "--model-repository", str(repository), "--backend-directory",
            str(backends), "--http-address", "127.0.0.1", "--http-port", str(self.http_port),
            "--grpc-address", "127.0.0.1", "--grpc-port", str(grpc_port),
            "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics_port),
            "--exit-on-error=true",
        ]  # fmt: skip
        with self.log.open("w") as handle:
            self.proc = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.http_port}"

    def wait_ready(self, timeout: float = 120.0) -> TritonServer:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TritonUnavailableError(
                    f"tritonserver exited:\n{self.log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise TritonUnavailableError(f"tritonserver not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


if __name__ == "__main__":  # scripts/install_triton.sh: create the venv ahead of the tests
    print(f"Triton venv ready: {ensure_venv()}")
