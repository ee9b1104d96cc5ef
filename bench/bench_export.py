"""Exported-model latency and throughput: PyTorch eager vs the runtimes of ``python -m export``.

    .venv/bin/python bench/bench_export.py            # updates docs/BENCHMARKS.md
    .venv/bin/python bench/bench_export.py --quick    # one small model, writes nothing

For each encoder a random-init checkpoint is exported with the export pipeline
(ONNX + torch.export; TensorRT FP32/FP16 engines too where tensorrt and a GPU are
present), the parity gate runs on its default synthetic images, then every runtime
embeds the same preprocessed synthetic crops at batch 1 and 32 in one interleaved
run: warm-up, then the median of N timed calls. On a machine with an NVIDIA GPU the
same is repeated on cuda (onnxruntime with the CUDA / TensorRT execution providers
where installed, the TensorRT engine, eager PyTorch), with the GPU model named.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_models.py

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from export.parity import strict_fp32
from export.pipeline import ExportOptions, export_checkpoint
from reid.checkpoint import load_encoder
from reid.models import build_model
from reid.runtimes import Runtime, load_runtime

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_summary, today, update_section
from bench_models import crops, median_times

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Exported models (python -m export): PyTorch eager vs runtimes"
COMMAND = ".venv/bin/python bench/bench_export.py"
MODELS = ["resnet18", "mobilenetv2"]
SIZE = (256, 128)
BATCHES = [1, 32]
GPU_NOTE = (
    "No NVIDIA GPU here, so no cuda / TensorRT rows; on a GPU machine the same command adds "
    "them (onnxruntime CUDA/TensorRT EPs if onnxruntime-gpu is installed, the TensorRT engine "
    "if tensorrt is) with the GPU model named above. "
)
GATES: list[str] = []  # one line per exported model, for the report


@dataclass(frozen=True)
class Row:
    """One (model, runtime, device, batch) measurement."""

    model: str
    runtime: str
    device: str
    batch: int
    seconds: float  # median per batch
    load: float


def has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def make_checkpoint(name: str, size: tuple[int, int], path: Path) -> Path:
    from trainer.checkpoint import build_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = build_model(name, pretrained=None, input_size=size).eval()
    return save_checkpoint(build_checkpoint(model, method="baseline", epoch=0), path)


def eager(model: torch.nn.Module, device: str) -> Callable[[np.ndarray], np.ndarray]:
    model = model.to(device).eval()

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), strict_fp32():
            out = model(torch.from_numpy(images).to(device))
            return out.cpu().numpy()

    return run


def runners(export_dir: Path, checkpoint: Path, device: str, threads: int) -> dict[str, Callable]:
    """``{label: embed(images)}`` for eager PyTorch and every runtime usable on ``device``."""
    encoder, _ = load_encoder(checkpoint)
    found: dict[str, Callable] = {"pytorch eager": eager(encoder, device)}
    opened: list[tuple[str, Runtime]] = []
    ort_options = {"threads": threads, "spin": False} if device == "cpu" else {}
    opened.append(("onnxruntime", load_runtime(export_dir, "onnxruntime", device, **ort_options)))
    opened.append(("torch.export (.pt2)", load_runtime(export_dir, "torch", device)))
    if device == "cuda" and (export_dir / "model.engine").exists():
        opened.append(("tensorrt", load_runtime(export_dir, "tensorrt", device)))
    for label, runtime in opened:
        providers = runtime.describe().get("providers") or []
        short = ", ".join(p.removesuffix("ExecutionProvider") for p in providers)
        found[f"{label} [{short}]" if short else label] = runtime.embed
    return found


def bench(name: str, size: tuple[int, int], workdir: Path, threads: int, quick: bool) -> list[Row]:
    checkpoint = make_checkpoint(name, size, workdir / f"{name}.pt")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    formats = ("onnx", "torch") + (("tensorrt",) if has_tensorrt() else ())
    out = workdir / name
    started = time.perf_counter()
    _, report = export_checkpoint(
        ExportOptions(
            checkpoint=checkpoint,
            out=out,
            formats=formats,
            max_images=100,
            device="cuda" if "tensorrt" in formats else "cpu",
        ),
        say=lambda _text: None,
    )
    parity = ", ".join(f"{r.format} min cos {r.min_cosine:.6f}" for r in report.results)
    GATES.append(f"`{name}` {'passed' if report.passed else 'FAILED'} ({parity})")
    print(f"{name}: exported {formats} in {time.perf_counter() - started:.1f}s; {GATES[-1]}")
    images = crops(max(BATCHES), size)
    rows = []
    for device in devices:
        found = runners(out, checkpoint, device, threads)
        for batch in BATCHES:
            array = np.ascontiguousarray(images[:batch])
            repeats = (3 if quick else 5) if batch > 1 else (5 if quick else 20)
            calls = [lambda fn=fn, a=array: fn(a) for fn in found.values()]
            times = median_times(calls, warmup=2, repeats=repeats)
            load = os.getloadavg()[0]
            for label, seconds in zip(found, times, strict=True):
                rows.append(Row(name, label, device, batch, seconds, load))
                print(format_row(rows[-1]), flush=True)
    return rows


def format_row(row: Row) -> str:
    return (
        f"| `{row.model}` | {row.device} | {row.runtime} | {row.batch} "
        f"| {1000 * row.seconds:.1f} | {row.batch / row.seconds:.1f} | {row.load:.1f} |"
    )


HEADER = (
    "| encoder | device | runtime | batch | latency ms/batch | img/s | load |\n"
    "|---|---|---|---|---|---|---|"
)


def gpu_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def report(
    rows: list[Row], size: tuple[int, int], threads: int, load: tuple[float, float], elapsed: float
) -> str:
    shared = max(load) > 0.5 * threads
    note = " (the machine is shared with other jobs: timings are indicative)" if shared else ""
    import onnxruntime as ort

    providers = ", ".join(ort.get_available_providers())
    return "\n".join(
        [
            f"Command: `{COMMAND}` (from the repository root). Date: {today()}.",
            f"Machine: {machine_summary()}; GPU: {gpu_name()}. torch {torch.__version__}, "
            f"onnxruntime {ort.__version__} (providers: {providers}), "
            f"tensorrt: {'yes' if has_tensorrt() else 'not installed'}. {threads} CPU thread(s). "
            f"Load average (1 min) at start / end: {load[0]:.1f} / {load[1]:.1f}{note}.",
            "",
            f"Random-init encoders at {size[0]}x{size[1]}, exported with `python -m export` "
            "(`export.pipeline.export_checkpoint`: ONNX opset 18 simplified with onnxslim, "
            "torch.export `.pt2`), run through `reid.runtimes.load_runtime` as the server does. "
            f"Parity gate at export: {'; '.join(GATES) or 'n/a'}. "
            "Synthetic crops preprocessed with `reid.preprocess`. Per batch size, all runtimes "
            "run interleaved in one loop: 2 warm-up rounds, then the median of 20 (batch 1) "
            "or 5 (batch 32) timed calls. latency = median "
            "time of one `embed` call of the whole batch (host arrays in and out); img/s = batch / "
            "latency. onnxruntime on CPU uses non-spinning threads. "
            f"{GPU_NOTE if not torch.cuda.is_available() else ''}"
            f"Whole run: {elapsed / 60:.1f} min.",
            "",
            HEADER,
            *(format_row(r) for r in rows),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="resnet18 at 128x64, writes nothing")
    parser.add_argument("--models", help=f"comma-separated (default {','.join(MODELS)})")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--output", default=str(REPO / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("reid.models.backbones.weights").setLevel(logging.ERROR)
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    models = ["resnet18"] if args.quick else (args.models.split(",") if args.models else MODELS)
    size = (128, 64) if args.quick else SIZE
    load_start, started = os.getloadavg()[0], time.perf_counter()
    rows: list[Row] = []
    print(HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            rows.extend(bench(name, size, Path(tmp), threads, args.quick))
    elapsed = time.perf_counter() - started
    body = report(rows, size, threads, (load_start, os.getloadavg()[0]), elapsed)
    if args.quick or args.no_write:
        print("\n(not written: --quick or --no-write)")
    else:
        update_section(args.output, SECTION, body)
        print(f"\nwrote {SECTION!r} to {args.output} ({elapsed / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
