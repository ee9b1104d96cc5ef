"""The layers of docs/ARCHITECTURE.md hold: the import contract of pyproject.toml is kept.

``lint-imports`` (import-linter) checks the whole import graph, indirect imports
included: the library (``reid``, ``reid_client``) imports no app, no app imports another,
``reid_client`` needs neither torch nor the library, and the gallery tools reach the
gallery store only through the served API.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
APPS = {"trainer", "export", "server", "gallery"}


def lint_imports() -> str:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (it comes with the dev extra)")
    return exe


def test_the_import_contract_is_kept() -> None:
    proc = subprocess.run([lint_imports()], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_the_contract_covers_every_app_and_the_torch_free_client() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = {c["type"]: c for c in config["contracts"] if c["type"] == "independence"}
    assert set(contracts["independence"]["modules"]) == APPS
    client = [c for c in config["contracts"] if c.get("source_modules") == ["reid_client"]]
    assert client and {"torch", "reid"} <= set(client[0]["forbidden_modules"])
    on_disk = {p.name for p in REPO.iterdir() if (p / "__main__.py").is_file()}
    assert on_disk == APPS, "a new app must join the independence contract"
