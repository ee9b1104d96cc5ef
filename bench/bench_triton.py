"""Our server vs NVIDIA Triton on the same ONNX model, the same request and load generator.

    .venv/bin/python bench/bench_triton.py            # full run, updates docs/BENCHMARKS.md
    .venv/bin/python bench/bench_triton.py --quick    # short smoke run, writes nothing

Exports an encoder (MobileNetV2 at 128x64, random weights: speed does not depend on them)
with ``python -m export --format onnx,triton``, starts Triton (``tests/triton_server.py``:
PyPI's nvidia-pytriton ``tritonserver`` with a Python onnxruntime backend, dynamic
batching from the generated ``config.pbtxt``) and ``python -m server`` on the export,
both with one onnxruntime thread per call, then drives each with ``wrk`` (Debian's
compiled HTTP load generator, pinned to the last core with ``taskset``) sending the same
Open Inference Protocol request, batch 1 in Triton's binary tensor format, at 1, 8 and 32
connections, the two servers interleaved. Reported: requests (= images) per second and
wrk's p50 / p99 latency. wrk sends the byte-identical request to both and costs little;
Triton's own ``perf_analyzer`` also runs against both (tests/test_triton.py), but its
synchronous client threads share these 2 cores with the servers.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO / "tests"))  # triton_server, live_server: the tests' servers

from _report import machine_summary, today, update_section

SECTION = "## Open Inference Protocol: our server vs Triton (same model, same load)"
COMMAND = ".venv/bin/python bench/bench_triton.py"


def export(out: Path, name: str, size: tuple[int, int]) -> Path:
    import torch

    from reid.models import build_model
    from trainer.checkpoint import build_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = build_model(name, pretrained=None, input_size=size).eval()
    checkpoint = save_checkpoint(build_checkpoint(model, method="baseline", epoch=0),
                                 out / "ckpt.pt")  # fmt: skip
    cmd = [sys.executable, "-m", "export", "--checkpoint", str(checkpoint), "--out",
           str(out / "export"), "--format", "onnx,triton", "--max-images", "16"]  # fmt: skip
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return out / "export"


def request_files(work: Path, size: tuple[int, int]) -> Path:
    """A wrk Lua script posting one binary-tensor inference request (batch 1)."""
    images = np.random.default_rng(0).standard_normal((1, 3, *size)).astype("<f4")
    raw = images.tobytes()
    header = {
        "inputs": [{"name": "images", "datatype": "FP32", "shape": list(images.shape),
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "embeddings", "parameters": {"binary_data": True}}],
    }  # fmt: skip
    text = json.dumps(header).encode()
    (work / "body.bin").write_bytes(text + raw)
    script = work / "infer.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f'local f = io.open("{work / "body.bin"}", "rb")\n'
        'wrk.body = f:read("*all")\nf:close()\n'
        f'wrk.headers["Inference-Header-Content-Length"] = "{len(text)}"\n'
        'wrk.headers["Content-Type"] = "application/octet-stream"\n'
    )
    return script


def wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, float]:
    """``wrk`` on the last core: requests/s, p50 / p99 ms, non-2xx answers."""
    cores = os.cpu_count() or 1
    pin = ["taskset", "-c", str(cores - 1)] if shutil.which("taskset") else []
    cmd = [*pin, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
           "-s", str(script), f"{url}/v2/models/reid/infer"]  # fmt: skip
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    return {
        "rps": rps,
        "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", text).group(1)),
        "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", text).group(1)),
        "errors": int(bad.group(1)) if bad else 0,
    }


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1000.0}[unit]


def set_instances(repository: Path, count: int) -> None:
    """Triton's model instances (``instance_group`` count) in an exported repository."""
    config = repository / "reid" / "config.pbtxt"
    text, found = re.subn(r"count: \d+", f"count: {count}", config.read_text())
    assert found == 1, "one instance_group expected"
    config.write_text(text)


def start_ours(
    export_dir: Path,
    work: Path,
    threads: int,
    root: Path = REPO,
    name: str = "ours",
    workers: int = 1,
):
    """``python -m server`` of the checkout at ``root`` on a free port: (process, URL)."""
    from live_server import wait_until_serving

    log = work / f"{name}.log"
    cmd = [sys.executable, "-m", "server", "--model", str(export_dir), "--gallery",
           str(work / f"gallery-{name}"), "--host", "127.0.0.1", "--http-port", "0",
           "--no-grpc", "--device", "cpu", "--threads", str(threads), "--workers",
           str(workers), "--no-access-log"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "client")])}
    handle = log.open("w")
    proc = subprocess.Popen(cmd, cwd=root, stdout=handle, stderr=subprocess.STDOUT, env=env)
    url, _ = wait_until_serving(proc, log.read_text, timeout=120)
    return proc, url


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short run, writes nothing")
    p.add_argument("--encoder", default="mobilenetv2")
    p.add_argument("--size", default="128x64", help="input HxW")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--connections", type=lambda s: [int(v) for v in s.split(",")],
                   default=[1, 8, 32])  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per call")
    p.add_argument(
        "--instances", type=int, default=1,
        help="model instances: Triton's instance_group count and our --workers",
    )  # fmt: skip
    p.add_argument(
        "--rounds", type=int, default=1,
        help="sweeps over the connection counts, interleaved; cells report the median",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    p.add_argument("--baseline", type=Path, help="another checkout whose server is measured too")
    p.add_argument("--baseline-label", default=None, help="how the report names --baseline")
    args = p.parse_args(argv)
    args.connections = list(dict.fromkeys(args.connections))  # a count once per round
    args.baseline_label = args.baseline_label or (str(args.baseline) if args.baseline else "")
    if not shutil.which("wrk"):
        raise SystemExit("bench_triton: wrk is not installed (apt-get install wrk)")
    from triton_server import TritonServer

    size = tuple(int(v) for v in args.size.split("x"))
    seconds = 2.0 if args.quick else args.seconds
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export_dir = export(work, args.encoder, size)
        script = request_files(work, size)
        set_instances(export_dir / "triton", args.instances)
        n, triton, servers = args.instances, None, {}
        rows = []
        try:
            triton = TritonServer(export_dir / "triton", work, threads=args.threads)
            triton.wait_ready()
            servers["ours"] = start_ours(export_dir, work, args.threads, workers=n)
            if args.baseline is not None:
                root = args.baseline.resolve()
                servers["ours (before)"] = start_ours(
                    export_dir, work, args.threads, root, "before", workers=n
                )
            targets = [(name, url) for name, (_, url) in servers.items()]
            targets.append(("triton", triton.url))
            for _ in range(max(1, args.rounds)):
                for connections in args.connections:
                    for name, url in targets:
                        wrk(url, script, connections, 1.0)  # warm-up
                        rows.append((name, connections, wrk(url, script, connections, seconds)))
        finally:
            if triton is not None:
                triton.stop()
            for proc, _ in servers.values():
                proc.terminate()
            for proc, _ in servers.values():
                proc.wait(30)
    body = report(rows, args, time.monotonic() - started)
    print(body)
    if not args.quick:
        plural = f" ({args.instances} model instances)" if args.instances != 1 else ""
        update_section(args.out, SECTION + plural, body)
    return 0


def report(rows: list, args: argparse.Namespace, elapsed: float) -> str:
    lines = [
        f"`{' '.join([COMMAND, *sys.argv[1:]])}` on {today()}. Machine: {machine_summary()}. "
        f"Load average at the end: {os.getloadavg()[0]:.2f} (shared machine: compare the two "
        f"servers within a row pair, measured back to back). Whole run {elapsed / 60:.1f} min.",
        "",
        f"Model: {args.encoder} at {args.size}, random weights, exported with `python -m "
        "export --format onnx,triton`; both servers run it with onnxruntime on the CPU, "
        f"{args.threads} thread(s) per call, {args.instances} model instance(s) (Triton's "
        "`instance_group` count, our `--workers`). Triton 2.51 (nvidia-pytriton 0.7.0) with a "
        "Python onnxruntime backend and the generated dynamic batching; ours: `python -m server` "
        "(its micro-batcher, defaults). Load: wrk, 1 thread pinned to the last core, batch-1 "
        f"binary-tensor requests to `/v2/models/reid/infer`, {args.seconds:g} s per cell after "
        "1 s of warm-up; the servers of a row group were measured one after the other."
        + (
            f" Rows `ours (before)`: the server of `{args.baseline_label}` (`--baseline`), "
            "started the same way."
            if args.baseline
            else ""
        )
        + (
            f" Each cell: the median over {args.rounds} rounds (a round measures every server "
            "at every connection count, in turn; errors: the sum); the ratios below are per "
            "round."
            if args.rounds > 1
            else ""
        ),
        "",
        "| server | connections | img/s | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = list(dict.fromkeys(n for n, _, _ in rows))
    for connections in args.connections:
        for name in names:
            cell = [r for n, c, r in rows if n == name and c == connections]
            rps, p50, p99 = (
                statistics.median(r[key] for r in cell) for key in ("rps", "p50", "p99")
            )
            errors = sum(r["errors"] for r in cell)
            lines.append(f"| {name} | {connections} | {rps:.1f} | {p50:.1f} | {p99:.1f} "
                         f"| {errors} |")  # fmt: skip
    for server in (n for n in names if n != "triton"):
        ratios = []
        for connections in args.connections:
            ours = [r["rps"] for n, c, r in rows if n == server and c == connections]
            theirs = [r["rps"] for n, c, r in rows if n == "triton" and c == connections]
            per_round = [a / b for a, b in zip(ours, theirs, strict=True)]
            text = f"{connections}: {statistics.median(per_round):.2f}"
            if len(per_round) > 1:
                text += " (" + " / ".join(f"{x:.2f}" for x in per_round) + ")"
            ratios.append(text)
        label = server.capitalize()
        what = "median (rounds)" if args.rounds > 1 else "throughput"
        lines += ["", f"{label} / Triton {what} by connections: " + ", ".join(ratios) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
