"""Training throughput (images/s) of every method at the demo settings, in one run.

    .venv/bin/python bench/bench_training.py [--iters 15] [--data DIR]

Each method trains its ``trainer/configs/<method>_synthetic.yaml`` config (pretrained
MobileNetV2-based encoders, 128x64, batch 64) for one epoch of ``--iters`` steps on
the default synthetic dataset; images/s counts only the training steps (forward,
backward, optimiser step and memory update), read from the run's ``metrics.csv``.
Feature extraction + clustering time per epoch is reported beside it. Methods run one
after another in the same process tree, so the numbers compare side by side.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from _report import machine_summary, update_section

METHODS = {
    "supervised": "supervised_synthetic.yaml",
    "cluster_contrast": "cluster_contrast_synthetic.yaml",
    "aff_scl": "aff_scl_synthetic.yaml",
    "iics": "iics_synthetic.yaml",
    "frifm_adl": "frifm_adl_synthetic.yaml",
}
DATA_ARGS = ["--ids-train", "150", "--ids-test", "100", "--cameras", "6", "--seed", "0"]


def run_method(config: str, spec: str, out: Path, iters: int) -> dict[str, str]:
    cmd = [
        sys.executable, "-m", "trainer", "train", "--config", f"trainer/configs/{config}",
        "--data", spec, "--out", str(out), "epochs=1", f"iters_per_epoch={iters}",
        "eval.every=0", "train.progress=false",
    ]  # fmt: skip
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    with open(out / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--data", type=Path, default=REPO / "runs" / "results" / "data")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not (args.data / "meta.json").is_file():
        cmd = [sys.executable, "-m", "reid.data.synthetic", str(args.data), *DATA_ARGS, "--force"]
        subprocess.run(cmd, cwd=REPO, check=True)
    spec = f"synthetic:{args.data}"
    rows = [
        "| method | config | images/s (training steps) | step time per batch of 64 "
        "| feature extraction + clustering per epoch |",
        "|---|---|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for method, config in METHODS.items():
            stats = run_method(config, spec, Path(tmp) / method, args.iters)
            rate = float(stats["img_s"])
            prepare = float(stats.get("prepare_time") or 0.0)
            rows.append(
                f"| {method} | `{config}` | **{rate:.0f}** | {64 / rate:.2f} s | {prepare:.1f} s |"
            )
            print(rows[-1], flush=True)
    body = "\n".join(
        [
            f"Command: `.venv/bin/python bench/bench_training.py --iters {args.iters}`.",
            f"Machine: {machine_summary()}; CPU, torch eager, float32.",
            "",
            *rows,
            "",
            "Data: the default synthetic dataset (2,243 train images, 128x64). One epoch of "
            f"{args.iters} steps per method, batch 64 (16 identities x 4). These short runs "
            "include the first steps' warm-up (data-loader workers starting).",
        ]
    )
    print(body)
    if not args.no_write:
        update_section(REPO / "docs" / "BENCHMARKS.md", "## Training throughput", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
