"""`make demo`: the main job end to end on the embedded defaults.

Each step is an ordinary command a user can run by hand; the demo prints it
before running it, so the output doubles as a walkthrough.

Steps today: synthetic multi-camera dataset -> dataset summary -> colour-histogram
baseline (CMC / mAP). Later steps (training, export, serving, evaluation through
the served API) are appended to ``build_steps``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Step:
    title: str
    argv: list[str]


def synthetic_args(args: argparse.Namespace) -> list[str]:
    return [
        "--ids-train", str(args.ids_train),
        "--ids-test", str(args.ids_test),
        "--cameras", str(args.cameras),
        "--seed", str(args.seed),
        "--size", args.size,
        "--difficulty", str(args.difficulty),
    ]  # fmt: skip


def dataset_is_current(data_dir: Path, args: argparse.Namespace) -> bool:
    """True when ``data_dir`` already holds a synthetic dataset made with these settings."""
    meta_path = data_dir / "meta.json"
    if not meta_path.is_file():
        return False
    try:
        params = json.loads(meta_path.read_text())["params"]
    except (ValueError, KeyError):
        return False
    wanted = {
        "ids_train": args.ids_train,
        "ids_test": args.ids_test,
        "cameras": args.cameras,
        "seed": args.seed,
        "difficulty": args.difficulty,
    }
    same_size = str(params.get("size", "")).replace(" ", "") in {args.size, str(_size(args.size))}
    return same_size and all(params.get(k) == v for k, v in wanted.items())


def _size(text: str) -> list[int]:
    height, width = text.lower().split("x")
    return [int(height), int(width)]


def build_steps(args: argparse.Namespace) -> list[Step]:
    py = sys.executable
    data_dir = Path(args.out) / "data"
    spec = f"synthetic:{data_dir}"
    steps = []
    if dataset_is_current(data_dir, args):
        print(f"Reusing the synthetic dataset in {data_dir} (same settings).")
    else:
        steps.append(
            Step(
                "Generate the synthetic multi-camera dataset",
                [py, "-m", "reid.data.synthetic", str(data_dir), *synthetic_args(args), "--force"],
            )
        )
    steps.append(Step("Dataset summary", [py, "-m", "reid.data", "summary", spec]))
    steps.append(
        Step(
            "Baseline: HSV colour histogram + cosine distance",
            [py, "-m", "reid.color_baseline", "--data", spec],
        )
    )
    return steps


def run_steps(steps: list[Step]) -> None:
    started = time.perf_counter()
    for number, step in enumerate(steps, 1):
        print(f"\n== [{number}/{len(steps)}] {step.title}")
        print("$ " + shlex.join(step.argv), flush=True)
        t0 = time.perf_counter()
        result = subprocess.run(step.argv, cwd=REPO, check=False)
        if result.returncode != 0:
            sys.exit(f"demo: step '{step.title}' failed with exit code {result.returncode}")
        print(f"   ({time.perf_counter() - t0:.1f} s)")
    print(f"\nDemo finished in {time.perf_counter() - started:.1f} s.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "runs" / "demo"), help="working folder")
    parser.add_argument("--ids-train", type=int, default=150)
    parser.add_argument("--ids-test", type=int, default=100)
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="128x64", help="image size HxW")
    parser.add_argument("--difficulty", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    run_steps(build_steps(parse_args(argv)))


if __name__ == "__main__":
    main()
