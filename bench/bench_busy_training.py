"""Training throughput on a quiet and on a busy machine, before and after the wait policy.

    .venv/bin/python bench/bench_busy_training.py [--iters 10] [--load 2] [--data DIR]

``supervised_synthetic.yaml`` (MobileNetV2, 128x64, batch 64, no clustering, so only
the training steps count) trains one epoch of ``--iters`` steps four times, one after
another in one run:

* **before**: the trainer as it ran until now, ``trainer.cli.main`` called directly,
  so OpenMP keeps libgomp's default wait policy (threads spin before they sleep);
* **after**: ``python -m trainer``, which sets ``OMP_WAIT_POLICY=PASSIVE`` and
  ``train.threads=auto`` (cores / processes);

each on the quiet machine and with ``--load`` other busy processes (pure-Python spin
loops, one per core by default) competing for the cores. images/s is the training-step
rate from the run's ``metrics.csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from _report import machine_summary, update_section

CONFIG = "trainer/configs/supervised_synthetic.yaml"
DATA_ARGS = ["--ids-train", "150", "--ids-test", "100", "--cameras", "6", "--seed", "0"]
BEFORE = [sys.executable, "-c", "import sys; from trainer.cli import main; sys.exit(main())"]
AFTER = [sys.executable, "-m", "trainer"]
SPIN = "import time\nend = time.monotonic() + 3600\nwhile time.monotonic() < end: pass"


@contextmanager
def busy(processes: int):
    """``processes`` CPU-bound spin loops for the duration of the block."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(processes)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def train_rate(launcher: list[str], spec: str, out: Path, iters: int) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    cmd = [
        *launcher, "train", "--config", CONFIG, "--data", spec, "--out", str(out),
        "epochs=1", f"iters_per_epoch={iters}", "eval.every=0", "train.progress=false",
    ]  # fmt: skip
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    with open(out / "metrics.csv", newline="") as handle:
        return float(list(csv.DictReader(handle))[-1]["img_s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10, help="training steps per run")
    parser.add_argument("--load", type=int, default=os.cpu_count() or 2, help="busy processes")
    parser.add_argument("--data", type=Path, default=REPO / "runs" / "results" / "data")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if not (args.data / "meta.json").is_file():
        cmd = [sys.executable, "-m", "reid.data.synthetic", str(args.data), *DATA_ARGS, "--force"]
        subprocess.run(cmd, cwd=REPO, check=True)
    spec = f"synthetic:{args.data}"
    rates: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for machine, load in (("quiet", 0), ("busy", args.load)):
            with busy(load):
                for name, launcher in (("before", BEFORE), ("after", AFTER)):
                    out = Path(tmp) / f"{machine}-{name}"
                    rates[machine, name] = train_rate(launcher, spec, out, args.iters)
                    print(f"{machine:5s} {name:6s} {rates[machine, name]:6.1f} img/s", flush=True)
    rows = [
        "| trainer | quiet: images/s | busy: images/s | busy / quiet |",
        "|---|---:|---:|---:|",
    ]
    for name, label in (
        ("before", "before: libgomp's default wait policy (spin, then sleep)"),
        ("after", "after: `OMP_WAIT_POLICY=PASSIVE`, `train.threads=auto`"),
    ):
        quiet, loaded = rates["quiet", name], rates["busy", name]
        rows.append(f"| {label} | {quiet:.1f} | {loaded:.1f} | {loaded / quiet:.2f} |")
    body = "\n".join(
        [
            f"Command: `.venv/bin/python bench/bench_busy_training.py --iters {args.iters} "
            f"--load {args.load}`.",
            f"Machine: {machine_summary()}; CPU, torch eager, float32.",
            "",
            *rows,
            "",
            f"`supervised_synthetic.yaml`, one epoch of {args.iters} steps of 64 images, the "
            "four runs one after another in one run. Busy: "
            f"{args.load} pure-Python spin loops beside the training (on {os.cpu_count()} "
            "cores), standing in for another job; a fair share of the cores would be "
            f"{(os.cpu_count() or 1) / ((os.cpu_count() or 1) + args.load):.2f} of the "
            "quiet rate. Both rows use `train.threads=auto` (here the core count, which is "
            "also torch's default on this machine), so the rows differ in the wait policy.",
        ]
    )
    print(body)
    if not args.no_write:
        update_section(REPO / "docs" / "BENCHMARKS.md", "## Training on a busy machine", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
