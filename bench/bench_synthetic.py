"""Synthetic dataset generation speed on ONE CPU core (workers=1, 128x64 by default).

    .venv/bin/python bench/bench_synthetic.py [--ids-train 60] [--ids-test 40]
        [--difficulty 2] [--size 128x64] [--repeats 3]

The process is pinned to a single core where the OS allows it. Each repeat writes a
fresh dataset (planning, background textures, rendering, JPEG encoding and file
writes all included) into a temporary folder; the median rate is reported, followed
by a markdown section written into docs/BENCHMARKS.md ("## Synthetic dataset
generation"); ``--no-write`` only prints it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import cv2
from _report import machine_summary, update_section

from reid.data.synthetic.camera import camera_texture
from reid.data.synthetic.generate import GeneratorParams, generate, parse_size
from reid.data.synthetic.identity import identity_for


def pin_to_one_core() -> str:
    """Restrict this process (and OpenCV) to one core; returns a description."""
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "not pinned (no sched_setaffinity); OpenCV threads = 1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids-train", type=int, default=60)
    parser.add_argument("--ids-test", type=int, default=40)
    parser.add_argument("--difficulty", type=float, default=2.0)
    parser.add_argument("--size", type=parse_size, default=(128, 64))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    pinning = pin_to_one_core()
    params = GeneratorParams(
        ids_train=args.ids_train,
        ids_test=args.ids_test,
        difficulty=args.difficulty,
        height=args.size[0],
        width=args.size[1],
    )
    rates, images = [], 0
    for repeat in range(args.repeats):
        camera_texture.cache_clear()  # every repeat pays for its background textures
        identity_for.cache_clear()
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            meta = generate(Path(tmp) / "data", params, workers=1)
            elapsed = time.perf_counter() - start
        c = meta["counts"]
        images = c["train"]["images"] + c["query"]["images"] + c["gallery"]["images"]
        rates.append(images / elapsed)
        print(f"repeat {repeat + 1}: {images} images in {elapsed:.2f} s = {rates[-1]:.0f} images/s")
    rate = statistics.median(rates)
    body = "\n".join(
        [
            "Command: `.venv/bin/python bench/bench_synthetic.py` (from the repository root).",
            f"Machine: {machine_summary()}; {pinning}.",
            "",
            "| setting | images per run | images/s on one core (median of "
            f"{args.repeats}) | runs |",
            "|---|---:|---:|---|",
            f"| {params.size_text}, difficulty {params.difficulty:g}, {params.cameras} cameras, "
            f"workers=1 | {images} | **{rate:.0f}** | "
            + ", ".join(f"{r:.0f}" for r in rates)
            + " |",
            "",
            "Target: at least 200 images/s on one core at 128x64. Each run includes planning, "
            "background textures, rendering, JPEG encoding and file writes.",
        ]
    )
    print(body)
    if not args.no_write:
        update_section(REPO / "docs" / "BENCHMARKS.md", "## Synthetic dataset generation", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
