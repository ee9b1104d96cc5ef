"""Encoder latency and throughput: torch eager vs onnxruntime on the CPU.

    .venv/bin/python bench/bench_models.py            # full run, updates docs/BENCHMARKS.md
    .venv/bin/python bench/bench_models.py --quick    # small smoke run, writes nothing

For each encoder (the baseline of every backbone, plus every method head on
ResNet-18), at 256x128 (the papers' size) and 128x64 (the demo's), batch 1 and
32: the encoder is exported with ``reid.models.onnx_util.export_onnx`` (dynamic
batch), then each runtime embeds the same preprocessed synthetic crops: warm-up
runs, then the median of N timed runs (the two runtimes interleaved). Reported:
milliseconds per image and images per second (batch / median batch time), and one
minus the smallest cosine between the torch and onnxruntime embeddings of the
batch. Both runtimes use as many threads as the machine has cores. Weights are
random (latency does not depend on them); BatchNorm layers are in eval mode.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle threads sleep instead of spinning. On a machine
# shared with other jobs, spinning OpenMP threads make torch up to 20x slower at
# batch 1; onnxruntime gets the same treatment (``spin=False``).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from reid.models import build_model
from reid.models.onnx_util import cosine_parity, export_onnx, onnx_session, run_onnx
from reid.preprocess import PreprocessConfig, decode_image_bytes, preprocess_batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_summary, today, update_section

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Encoders (torch eager vs onnxruntime)"
COMMAND = ".venv/bin/python bench/bench_models.py"
BASELINES = ["resnet18", "resnet50", "se_resnet50_fusion", "mobilenetv2", "efficientnet_lite0"]
HEADS = ["frifm_resnet18", "fusion_resnet18", "aff_resnet18", "part_resnet18", "patchnet_resnet18"]
SIZES = [(256, 128), (128, 64)]
BATCHES = [1, 32]


@dataclass(frozen=True)
class Row:
    """One (model, size, batch) measurement."""

    model: str
    dim: int
    size: tuple[int, int]
    batch: int
    torch_s: float  # median seconds per batch
    ort_s: float
    min_cosine: float
    load: float  # 1-minute load average right after the measurement


def crops(count: int, size: tuple[int, int]) -> np.ndarray:
    """``count`` synthetic pedestrian crops preprocessed to ``size``."""
    from reid.data.synthetic.generate import GeneratorParams, plan_dataset, render_job

    params = GeneratorParams(ids_train=max(3, count // 8), ids_test=1, cameras=4, seed=0)
    jobs = plan_dataset(params)[:count]
    images = [decode_image_bytes(render_job(job, params)) for job in jobs]
    return preprocess_batch(images, PreprocessConfig(height=size[0], width=size[1]))


def median_times(fns: list[Callable[[], object]], warmup: int, repeats: int) -> list[float]:
    """Median wall time of each ``fn()`` over ``repeats`` rounds after ``warmup`` rounds.

    The functions run interleaved, one call each per round, so a burst of load from
    other jobs on a shared machine hits both runtimes alike.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def bench_model(
    name: str, size: tuple[int, int], images: np.ndarray, workdir: Path, threads: int, quick: bool
) -> list[Row]:
    """Export ``name`` at ``size`` and time both runtimes at every batch size."""
    torch.manual_seed(0)
    model = build_model(name, pretrained=None, input_size=size).eval()
    path = export_onnx(model, workdir / f"{name}_{size[0]}x{size[1]}.onnx")
    session = onnx_session(path, threads=threads, spin=False)
    rows = []
    for batch in BATCHES:
        array = np.ascontiguousarray(images[:batch])
        tensor = torch.from_numpy(array)
        repeats = (3 if quick else 5) if batch > 1 else (5 if quick else 20)

        def run_torch(t: torch.Tensor = tensor) -> torch.Tensor:
            with torch.inference_mode():
                return model(t)

        def run_ort(a: np.ndarray = array) -> np.ndarray:
            return run_onnx(session, a)

        torch_s, ort_s = median_times([run_torch, run_ort], warmup=2, repeats=repeats)
        parity = cosine_parity(run_torch().numpy(), run_ort())
        load = os.getloadavg()[0]
        rows.append(Row(name, model.embedding_dim, size, batch, torch_s, ort_s, parity, load))
        print(format_row(rows[-1]), flush=True)
    return rows


def format_row(row: Row) -> str:
    """One markdown table row."""
    h, w = row.size
    per_torch, per_ort = 1000 * row.torch_s / row.batch, 1000 * row.ort_s / row.batch
    return (
        f"| `{row.model}` | {row.dim} | {h}x{w} | {row.batch} "
        f"| {per_torch:.1f} | {row.batch / row.torch_s:.1f} "
        f"| {per_ort:.1f} | {row.batch / row.ort_s:.1f} "
        f"| {row.torch_s / row.ort_s:.2f}x | {max(0.0, 1.0 - row.min_cosine):.1e} "
        f"| {row.load:.1f} |"
    )


HEADER = (
    "| encoder | D | input | batch | torch ms/img | torch img/s | ORT ms/img | ORT img/s "
    "| ORT speed-up | 1 - min cos | load |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def report(rows: list[Row], threads: int, load: tuple[float, float], elapsed: float) -> str:
    """The markdown section body."""
    shared = max(load) > 0.5 * threads
    note = ": the machine is shared with other jobs, so timings are indicative" if shared else ""
    return "\n".join(
        [
            f"Command: `{COMMAND}` (from the repository root). Date: {today()}.",
            f"Machine: {machine_summary()}. torch {torch.__version__} and onnxruntime "
            f"{ort.__version__} (CPUExecutionProvider), {threads} thread(s) each. "
            f"Load average (1 min) at start / end: {load[0]:.1f} / {load[1]:.1f}{note}.",
            "",
            "Random-init weights, eval mode, synthetic pedestrian crops preprocessed with "
            "`reid.preprocess`. ONNX from `reid.models.onnx_util.export_onnx` (dynamo exporter, "
            "opset 18, dynamic batch). Per configuration: 2 warm-up runs, then the median of "
            "20 (batch 1) or 5 (batch 32) timed runs, torch and ORT interleaved; "
            "ms/img = median batch time / batch, img/s = batch / median batch time. "
            "1 - min cos: one minus the smallest torch-vs-ORT cosine over the batch; load: "
            "1-minute load average after the row. Idle threads sleep rather than spin in both "
            f"runtimes (`OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')}`, ORT "
            "`session.intra_op.allow_spinning=0`): with other jobs on the cores, spinning "
            "made torch up to 20x slower at batch 1; on an idle machine it costs a little. "
            "With a load above the thread count, both runtimes get only part of the CPU. "
            "Baselines of each backbone first (`se_resnet50` through `se_resnet50_fusion`), "
            "then every method head on ResNet-18. "
            f"Whole run: {elapsed / 60:.1f} min.",
            "",
            HEADER,
            *(format_row(r) for r in rows),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small models, 128x64 only")
    parser.add_argument("--models", help="comma-separated registered names (default: all above)")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    parser.add_argument("--output", default=str(REPO / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    logging.getLogger("reid.models.backbones.weights").setLevel(logging.ERROR)
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    models = ["resnet18", "mobilenetv2"] if args.quick else BASELINES + HEADS
    if args.models:
        models = args.models.split(",")
    sizes = [(128, 64)] if args.quick else SIZES
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    rows: list[Row] = []
    print(HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            images = crops(max(BATCHES), size)
            for name in models:
                rows.extend(bench_model(name, size, images, Path(tmp), threads, args.quick))
    elapsed = time.perf_counter() - started
    body = report(rows, threads, (load_start, os.getloadavg()[0]), elapsed)
    if args.quick or args.no_write or args.models:
        print("\n(not written: --quick, --models or --no-write)")
    else:
        update_section(args.output, SECTION, body)
        print(f"\nwrote {SECTION!r} to {args.output} ({elapsed / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
