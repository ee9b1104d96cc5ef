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
