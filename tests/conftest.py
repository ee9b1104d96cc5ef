"""Shared fixtures: a tiny synthetic re-ID dataset generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_SYNTHETIC_ARGS = (
    "--ids-train", "8", "--ids-test", "4", "--cameras", "3",
    "--size", "64x32", "--seed", "0", "--workers", "1",
)  # fmt: skip
"""8 train identities (~120 images), 4 test identities, 3 cameras, 64x32 images."""


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a tiny ``python -m reid.data.synthetic`` dataset (spec ``synthetic:DIR``)."""
    from reid.data.synthetic.generate import main

    out = tmp_path_factory.mktemp("tiny_synthetic") / "data"
    assert main([str(out), *TINY_SYNTHETIC_ARGS]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight ResNet-18 at 64x32 exported to ONNX with its manifest (built once
    for the server tests that need a real model)."""
    pytest.importorskip("reid.runtimes.onnx")
    from export.onnx_export import export_encoder_dir
    from reid.models import build_model

    model = build_model("resnet18", pretrained=None, input_size=(64, 32)).eval()
    return export_encoder_dir(model, tmp_path_factory.mktemp("export"))


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts FastAPI's dependency solving (what the server's fast paths skip)."""
    import fastapi.routing

    calls: list[int] = []
    real = fastapi.routing.solve_dependencies

    async def counted(*args, **kwargs):
        calls.append(1)
        return await real(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    return calls
