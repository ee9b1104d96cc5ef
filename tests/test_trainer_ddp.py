"""Distributed training: ``torchrun --nproc_per_node 2`` with gloo on CPU, tiny runs.

* ``python -m trainer train`` (supervised) under torchrun finishes and writes a
  checkpoint and one CSV row per epoch (rank 0 only);
* the test-only ``fake_memory`` method (``tests/trainer_fakes.py`` run as the
  torchrun script) checks on every step that train features and memories are
  identical on both ranks: sharded extraction + all-gather, ``run_once`` and
  all-gathered memory updates.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from reid.checkpoint import read_checkpoint
from trainer import distributed

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "model": {"name": "resnet18", "kwargs": {"pretrained": None, "input_size": [64, 32]}},
    "data": {"num_workers": 0},
    "train": {"epochs": 2, "iters_per_epoch": 2, "batch_size": 16, "num_instances": 4},
    "eval": {"every": 2, "batch_size": 64},
    "checkpoint": {"every": 0},
}


def torchrun(script: list[str], args: list[str], timeout: float = 120) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, *script, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def write(path: Path, method: dict) -> Path:
    path.write_text(yaml.safe_dump({**TINY, "method": method}))
    return path


@pytest.mark.slow
def test_torchrun_supervised(tmp_path: Path, tiny_synthetic: Path) -> None:
    config = write(tmp_path / "sup.yaml", {"name": "supervised"})
    out = tmp_path / "run"
    data = f"synthetic:{tiny_synthetic}"
    args = ["train", "--config", str(config), "--data", data, "--out", str(out), "device=cpu"]
    output = torchrun(["-m", "trainer"], [*args, "train.sync_bn=true"])
    assert "train.sync_bn needs CUDA" in output  # SyncBatchNorm is GPU-only: warned, not fatal
    ckpt = read_checkpoint(out / "checkpoint_last.pt")
    assert ckpt["metadata"]["epoch"] == 2 and ckpt["training"]["world_size"] == 2
    assert ckpt["training"]["global_step"] == 4
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[-1]["mAP"] != "" and rows[-1]["batch_size"] == "16"


@pytest.mark.slow
def test_torchrun_shares_features_labels_and_memories(tmp_path: Path, tiny_synthetic: Path) -> None:
    config = write(tmp_path / "fake.yaml", {"name": "fake_memory"})
    out = tmp_path / "run"
    data = f"synthetic:{tiny_synthetic}"
    args = ["train", "--config", str(config), "--data", data, "--out", str(out), "device=cpu"]
    torchrun([str(REPO / "tests" / "trainer_fakes.py")], args)
    ckpt = read_checkpoint(out / "checkpoint_last.pt")
    assert ckpt["training"]["method"]["memory"].shape == (8, 512)


@pytest.mark.slow
def test_torchrun_mar_shards_the_target_and_the_reference_stream(
    tmp_path: Path, tiny_synthetic: Path
) -> None:
    from reid.data.synthetic.generate import main as generate

    reference = tmp_path / "ref"
    args = ["--ids-train", "6", "--ids-test", "1", "--cameras", "2", "--size", "64x32"]
    assert generate([str(reference), *args, "--seed", "11", "--pid-offset", "5000"]) == 0
    model = {"name": "fusion_resnet18", "kwargs": {**TINY["model"]["kwargs"], "neck": "none"}}
    config = tmp_path / "mar.yaml"
    train = {**TINY["train"], "batch_size": 8, "num_instances": 1, "sampler": "random"}
    raw = {**TINY, "model": model, "train": train, "method": {"name": "mar"},
           "reference": {"batch_size": 8}}  # fmt: skip
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    data = ["--data", f"synthetic:{tiny_synthetic}", "--reference", f"synthetic:{reference}"]
    args = ["train", "--config", str(config), *data, "--out", str(out), "device=cpu", "epochs=1"]
    torchrun(["-m", "trainer"], args)
    ckpt = read_checkpoint(out / "checkpoint_last.pt")
    assert ckpt["training"]["world_size"] == 2 and ckpt["training"]["global_step"] == 2
    # 2 steps x 2 ranks x 4 target images of one pass, all different: the ranks' shares
    # are disjoint and every rank wrote the gathered batch into the multilabel memory
    assert int(ckpt["training"]["method"]["seen"].sum()) == 2 * 2 * 4
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows[-1]["batch_size"] == "8" and rows[-1]["reference_batch_size"] == "8"


def test_single_process_helpers_are_no_ops() -> None:
    x = torch.arange(6.0).reshape(3, 2)
    assert distributed.all_gather_rows(x, [3]) is x
    assert distributed.run_once(lambda: torch.ones(2).numpy()).tolist() == [1.0, 1.0]
    assert distributed.all_reduce_mean({"a": 1.5}) == {"a": 1.5}
    assert distributed.shard_bounds(7, 1, 3) == ([3, 2, 2], slice(3, 5))
    assert not distributed.env_dist_info().enabled or "WORLD_SIZE" in os.environ
