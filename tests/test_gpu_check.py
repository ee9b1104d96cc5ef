"""The prepared GPU check (bench/gpu_check.sh): its dry mode runs every section on the
CPU so that the script is known to work on the day a GPU machine is lent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import gpu_check  # noqa: E402

pytestmark = pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="the dry run is for machines without CUDA"
)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu_check")
    result = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry", "--out", str(out)],
        capture_output=True, text=True, timeout=600, env={**_env(), "PY": sys.executable},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text()) | {"out": out}


def _env() -> dict:
    import os

    return dict(os.environ)


def test_the_dry_run_runs_every_section_and_fails_none(dry_run):
    statuses = {s["name"]: s["status"] for s in dry_run["sections"]}
    assert set(statuses) == {name for name, _ in gpu_check.SECTIONS}
    assert "failed" not in statuses.values(), dry_run["sections"]
    # On the CPU at tiny sizes these all run; only their numbers are meaningless.
    for name in ("embed_torch", "embed_runtime", "served", "training"):
        assert statuses[name] == "ok", name


def test_the_dry_run_measures_positive_throughputs(dry_run):
    rows = [row for s in dry_run["sections"] for row in s["rows"] if row["unit"]]
    assert rows and all(row["value"] > 0 for row in rows)
    served = [r for s in dry_run["sections"] if s["name"] == "served" for r in s["rows"]]
    assert any("0 errors" in r["note"] for r in served if r["item"].startswith("server"))
    runtimes = [r for s in dry_run["sections"] if s["name"] == "embed_runtime" for r in s["rows"]]
    assert any(r["item"].startswith("torch ") and "min cosine 1.0" in r["note"] for r in runtimes)


def test_the_dry_run_writes_a_markdown_table_that_says_it_is_a_dry_run(dry_run):
    text = (dry_run["out"] / "gpu_check.md").read_text()
    assert "dry run" in text and "| section | measurement |" in text


def test_recording_refuses_a_dry_run(dry_run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(
            ["--record", str(dry_run["out"] / "gpu_check.json"), "--docs", str(tmp_path / "B.md")]
        )
    assert "dry run" in capsys.readouterr().err


def test_recording_a_device_run_writes_its_section_of_the_benchmarks(tmp_path):
    outcomes = [
        gpu_check.Outcome("environment", "ok", rows=[
            gpu_check.Row("environment", "torch 2.5", 0, ""),
            gpu_check.Row("environment", "NVIDIA H200", 139.8, "GiB", "CUDA 12.4"),
        ]),
        gpu_check.Outcome("embed_torch", "ok", rows=[
            gpu_check.Row("embed_torch", "resnet50 256x128 fp16 batch 256", 12345.6, "img/s"),
        ]),
        gpu_check.Outcome("faiss_gpu", "skipped", "faiss has no GPU support here"),
    ]  # fmt: skip
    meta = {"command": "bash bench/gpu_check.sh", "date": "2026-12-01", "device": "NVIDIA H200",
            "dry": False}  # fmt: skip
    json_path, _ = gpu_check.write_outputs(outcomes, meta, tmp_path / "run")
    docs = tmp_path / "BENCHMARKS.md"
    docs.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    assert gpu_check.main(["--record", str(json_path), "--docs", str(docs)]) == 0
    text = docs.read_text()
    assert "kept" in text and gpu_check.SECTION in text
    assert "**NVIDIA H200**" in text and "12,345.6" in text
    assert "| faiss_gpu | skipped | | | faiss has no GPU support here |" in text


def test_a_device_run_without_cuda_is_refused_with_a_clear_message(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main([])
    assert "no CUDA device here" in capsys.readouterr().err
