"""Helpers for the tests that train tiny runs of a method (not a test module)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainer.cli import main

# the data, evaluation and checkpoint sections every tiny run shares
TINY_SECTIONS: dict[str, Any] = {
    "data": {"num_workers": 0, "transforms": {"flip": True, "pad": 0, "erasing_p": 0.0}},
    "schedule": {"name": "constant"},
    "eval": {"every": 1, "batch_size": 64},
    "checkpoint": {"every": 0},
}
# two epochs of two steps on the CPU, one image per identity in a batch
TINY_TRAIN: dict[str, Any] = {
    "epochs": 2,
    "iters_per_epoch": 2,
    "batch_size": 8,
    "num_instances": 1,
    "sampler": "random",
    "device": "cpu",
    "seed": 0,
    "threads": 1,
}


def labelled_reference(
    tmp_path_factory: pytest.TempPathFactory, name: str, ids: int, seed: int, pid_offset: int
) -> Path:
    """A tiny labelled synthetic set (``ids`` identities numbered from ``pid_offset + 1``)
    for the reference stream of MAR and PAUL."""
    from reid.data.synthetic.generate import main as generate

    out = tmp_path_factory.mktemp(name) / "data"
    argv = ["--ids-train", str(ids), "--ids-test", "2", "--cameras", "4", "--size", "64x32",
            "--seed", str(seed), "--difficulty", "1.5", "--pid-offset", str(pid_offset),
            "--workers", "1"]  # fmt: skip
    assert generate([str(out), *argv]) == 0
    return out


def write_config(path: Path, model: dict, method: dict, **sections: Any) -> Path:
    """A tiny run's YAML config: ``TINY_SECTIONS`` and ``TINY_TRAIN`` with ``sections``
    (``train`` is merged into ``TINY_TRAIN``; the others replace the shared ones)."""
    train = {**TINY_TRAIN, **sections.pop("train", {})}
    raw = {"model": model, "method": method, **TINY_SECTIONS, **sections, "train": train}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def straight_and_resumed(base: list[str], root: Path, first: list[str] = ()) -> tuple[Path, Path]:
    """Train ``base`` (``train --config ... --data ...``, plus ``first``) for its 2 epochs
    in ``root/straight``, and as 1 epoch then ``--resume`` to 2 in ``root/split``."""
    straight, split = root / "straight", root / "split"
    assert main([*base, *first, "--out", str(straight)]) == 0
    assert main([*base, *first, "--out", str(split), "epochs=1"]) == 0
    assert main(["train", "--out", str(split), "--resume", "epochs=2"]) == 0
    return straight, split


def export_with_parity_gate(
    checkpoint: Path, out: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    """``python -m export`` of ``checkpoint`` with its parity gate on 40 images of the
    synthetic set ``data``; the gate passed and its JSON report is returned."""
    from export.cli import main as export_main

    argv = ["--checkpoint", str(checkpoint), "--out", str(out), "--data", f"synthetic:{data}",
            "--max-images", "40", "--json"]  # fmt: skip
    code = export_main(argv)
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and report["passed"], report
    assert report["runtimes"][0]["min_cosine"] >= 0.9999
    return report
