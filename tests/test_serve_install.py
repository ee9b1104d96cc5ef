"""The serving install: ``pip install reid-system`` without extras (what the CPU Docker
image installs) runs the search server on an export, and torch is not in it."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from live_server import wait_until_serving
from PIL import Image

from reid_client import ReIDClient

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# What a build of the distribution reads (everything else of the checkout stays out).
SOURCES = ["pyproject.toml", "README.md", "constraints", "scripts", *(
    "reid", "trainer", "export", "server", "gallery", "client")]  # fmt: skip


def _site_packages_mb(python: Path) -> float:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([str(python), "-c", code], text=True).strip())
    return sum(f.stat().st_size for f in site.rglob("*") if f.is_file()) / 2**20


@pytest.fixture(scope="module")
def serve_python(tmp_path_factory) -> Path:
    """A fresh venv with ``scripts/install.sh`` and no EXTRAS, from a copy of the sources."""
    root = tmp_path_factory.mktemp("serve_install")
    source = root / "src"
    source.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    env = {**os.environ, "PY": str(python), "EXTRAS": "", "EDITABLE": "0"}
    result = subprocess.run(
        ["bash", "scripts/install.sh"], cwd=source, env=env, capture_output=True, text=True,
        timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    print(f"serving install: {_site_packages_mb(python):.0f} MB in site-packages")
    return python


def _run(python: Path, code: str) -> subprocess.CompletedProcess:
    # Outside the checkout, so the installed package is what imports.
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, cwd="/", timeout=120
    )


def test_torch_is_not_installed(serve_python):
    result = _run(serve_python, "import torch")
    assert result.returncode != 0 and "No module named 'torch'" in result.stderr


def test_training_says_which_extra_it_needs(serve_python):
    result = subprocess.run(
        [str(serve_python), "-m", "trainer", "train", "--help"],
        capture_output=True, text=True, cwd="/", timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "pip install 'reid-system[train]'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    from export.onnx_export import export_encoder_dir
    from reid.models import build_model

    model = build_model("mobilenetv2", pretrained=None, input_size=(64, 32)).eval()
    return export_encoder_dir(model, tmp_path_factory.mktemp("export"))


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    rng = np.random.default_rng(sum(colour))
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, (64, 32, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_the_server_of_the_serving_install_embeds_adds_and_searches(
    serve_python, export_dir, tmp_path
):
    log = tmp_path / "server.log"
    cmd = [
        str(serve_python), "-m", "server", "--model", str(export_dir), "--gallery",
        str(tmp_path / "gallery"), "--host", "127.0.0.1", "--http-port", "0", "--no-grpc",
    ]  # fmt: skip
    with log.open("w") as handle:
        proc = subprocess.Popen(cmd, cwd="/", stdout=handle, stderr=subprocess.STDOUT)
    try:
        url, _ = wait_until_serving(proc, log.read_text, timeout=120)
        crops = [_jpeg((200, 30, 30)), _jpeg((30, 200, 30)), _jpeg((30, 30, 200))]
        with ReIDClient(url) as client:
            assert client.model_info().runtime.runtime == "onnxruntime"
            ids = client.add(crops, [{"camera": c} for c in (1, 2, 3)])
            hits = client.search([crops[1]], k=3).results[0].matches
        assert len(ids) == 3
        assert hits[0].id == ids[1] and hits[0].score > 0.99
        modules = _run(serve_python, "import server.cli, sys; print('torch' in sys.modules)")
        assert modules.stdout.strip() == "False", modules.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
