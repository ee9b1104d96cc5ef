"""End-to-end search over HTTP on loopback, dynamic batching on vs off.

    .venv/bin/python bench/bench_server.py            # full run, updates docs/BENCHMARKS.md
    .venv/bin/python bench/bench_server.py --quick    # short smoke run, writes nothing

Exports the demo encoder (MobileNetV2 at 128x64, random weights: speed does not
depend on them) to ONNX unless ``--model EXPORT_DIR`` names an export, fills a
gallery with random embeddings, then for batching on and off starts ``python -m
server`` on 127.0.0.1 and drives ``POST /v1/search/raw`` (one JPEG crop, k=10) from
1, 8 and 32 concurrent httpx async clients for a fixed time each. Reported:
requests (= images) per second, p50/p99 latency, and the raw runtime throughput
of the same model in the same run (``runtime.embed`` on preprocessed batches of
1, 8 and ``max_batch``, same thread count, the best taken); the ratio is server/raw at
32 clients.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import asyncio
import io
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_summary, today, update_section

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SECTION = "## Server (HTTP search, dynamic batching)"
COMMAND = ".venv/bin/python bench/bench_server.py"
TARGET = 0.70


@dataclass(frozen=True)
class Load:
    mode: str
    clients: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_ms: float  # server process CPU time per request
    client_cpu_ms: float  # load generator CPU time per request

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def export_demo(out: Path, size: tuple[int, int], name: str = "mobilenetv2") -> Path:
    """A registered encoder (random weights) exported to ONNX with its manifest."""
    from export.onnx_export import export_encoder_dir
    from reid.models import build_model

    model = build_model(name, pretrained=None, input_size=size).eval()
    return export_encoder_dir(model, out)


def crops(count: int, size: tuple[int, int]) -> list[bytes]:
    """Distinct smooth random JPEG crops at the model's input size."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        small = rng.integers(0, 256, (8, 4, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((size[1], size[0]), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def raw_throughput(
    export: Path, images: list[bytes], batch: int, threads: int, workers: int = 1
) -> float:
    """Images/s of ``runtime.embed`` on preprocessed batches, ``workers`` calls at once.

    Median of timed rounds; a round is one call from each of ``workers`` threads on the
    same session (as the server's workers), so the reference uses the same cores.
    """
    from concurrent.futures import ThreadPoolExecutor

    from reid.preprocess import decode_image_bytes, preprocess_batch
    from reid.runtimes import load_runtime

    runtime = load_runtime(export, "onnxruntime", "cpu", threads=threads)
    decoded = [decode_image_bytes(images[i % len(images)]) for i in range(batch)]
    tensor = preprocess_batch(decoded, runtime.manifest.preprocess)
    with ThreadPoolExecutor(workers) as pool:

        def one_round() -> None:
            list(pool.map(lambda _: runtime.embed(tensor), range(workers)))

        for _ in range(3):
            one_round()
        times = []
        for _ in range(10):
            start = time.perf_counter()
            one_round()
            times.append(time.perf_counter() - start)
    runtime.close()
    return batch * workers / statistics.median(times)


def fill_gallery(directory: Path, dim: int, size: int) -> None:
    from reid.gallery import EntryMetadata, Gallery

    rng = np.random.default_rng(1)
    with Gallery.open(directory, dim, index="flat") as gallery:
        vectors = rng.standard_normal((size, dim)).astype(np.float32)
        meta = [EntryMetadata(camera=i % 4, timestamp=float(i)) for i in range(size)]
        gallery.add(vectors, meta)


def start_server(export: Path, gallery: Path, log: Path, threads: int, extra: list[str]):
    cmd = [
        sys.executable, "-m", "server", "--model", str(export), "--gallery", str(gallery),
        "--host", "127.0.0.1", "--http-port", "0", "--no-grpc", "--device", "cpu",
        "--threads", str(threads), *extra,
    ]  # fmt: skip
    handle = log.open("w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=handle, stderr=handle, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{log.read_text()}")
        match = re.search(r"serving HTTP on (http://[\d.]+:\d+)", log.read_text())
        if match:
            url = match.group(1)
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server not ready:\n{log.read_text()}")


async def drive(url: str, images: list[bytes], clients: int, warmup: float, seconds: float):
    """``clients`` loops of search requests; latencies of those finished in the window."""
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    start, end = t0 + warmup, t0 + warmup + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(worker: int) -> None:
            nonlocal errors
            i = worker
            headers = {"Content-Type": "image/jpeg"}
            while loop.time() < end:
                sent = loop.time()
                r = await client.post("/v1/search/raw?k=10", content=images[i % len(images)],
                                      headers=headers)  # fmt: skip
                done = loop.time()
                if start <= sent and done <= end:
                    if r.status_code == 200:
                        latencies.append(done - sent)
                    else:
                        errors += 1
                i += clients

        await asyncio.gather(*(one(w) for w in range(clients)))
    return latencies, errors


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    mode: str, url: str, pid: int, images: list[bytes], clients: int, seconds: float
) -> Load:
    server0, client0 = process_cpu_seconds(pid), time.process_time()
    latencies, errors = asyncio.run(drive(url, images, clients, 1.0, seconds))
    server_cpu, client_cpu = process_cpu_seconds(pid) - server0, time.process_time() - client0
    total = max(1, len(latencies) + errors) * (1 + 1 / seconds)  # warm-up second included
    ms = np.asarray(latencies) * 1000 if latencies else np.asarray([float("nan")])
    return Load(
        mode, clients, len(latencies), seconds,
        float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), errors,
        server_cpu / total * 1000, client_cpu / total * 1000,
    )  # fmt: skip


def report(rows: list[Load], raw_by_batch: dict[int, float], args: argparse.Namespace) -> str:
    raw = max(raw_by_batch.values())
    on32 = next((r for r in rows if r.mode == "on" and r.clients == max(args.clients)), None)
    off32 = next((r for r in rows if r.mode == "off" and r.clients == max(args.clients)), None)
    ratio = on32.rps / raw if on32 else float("nan")
    lines = [
        f"`{' '.join([COMMAND, *sys.argv[1:]])}` on {today()}. "
        f"Machine: {machine_summary()}. Load average at the "
        f"end: {os.getloadavg()[0]:.2f} (the machine is shared; numbers move with its load).",
        "",
        f"Model: {args.model_label}, onnxruntime on the CPU with {args.threads} thread(s) "
        f"per call and {args.workers} worker(s) (calls in flight at once); "
        f"gallery of {args.gallery_size} entries (flat index); each request is "
        "`POST /v1/search/raw?k=10` with one JPEG crop; the load generator (httpx async, "
        "same machine) and the server share the cores. Batching on: max batch "
        f"{args.max_batch}, max wait {args.max_wait_ms:g} ms. Each cell: {args.seconds:g} s "
        "after 1 s of warm-up.",
        "",
        "| batching | clients | req/s (= img/s) | p50 ms | p99 ms | errors "
        "| server CPU ms/req | client CPU ms/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.mode} | {r.clients} | {r.rps:.1f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
            f"{r.errors} | {r.server_cpu_ms:.2f} | {r.client_cpu_ms:.2f} |"
        )
    verdict = "met" if ratio >= TARGET else "not met"
    lines += [
        "",
        "Raw runtime throughput, same model, threads and workers, same run "
        "(``runtime.embed`` on preprocessed batches): "
        + ", ".join(f"{v:.1f} img/s at batch {b}" for b, v in raw_by_batch.items())
        + f"; the best, {raw:.1f} img/s, is the reference.",
        "",
        f"With batching at {max(args.clients)} clients the server delivers "
        f"{ratio:.0%} of the raw runtime throughput (target >= {TARGET:.0%}: {verdict})"
        + (f"; without batching {off32.rps / raw:.0%}." if off32 else "."),
    ]
    if on32 and ratio < TARGET:
        per_request = on32.server_cpu_ms + on32.client_cpu_ms
        lines += [
            "",
            f"Why: each request costs {on32.server_cpu_ms:.1f} ms of server CPU (decode, "
            "HTTP, batching, gallery search, JSON; the inference itself is about "
            f"{1000 / raw:.1f} ms) plus {on32.client_cpu_ms:.1f} ms in the load generator, "
            "on the same cores as the raw runtime's one inference thread: with a model "
            f"this cheap the per-request work ({per_request:.1f} ms) outweighs inference. "
            "Batching pays where one call on a batch is much cheaper than the calls on "
            "its images one by one (a GPU, or a heavier model).",
        ]
    if on32 and off32:
        lines += [
            "",
            "Batching on vs off at the same load: "
            f"{on32.rps:.1f} vs {off32.rps:.1f} req/s, p99 {on32.p99_ms:.0f} vs "
            f"{off32.p99_ms:.0f} ms. Raw throughput per image at batch 32 vs batch 1 is "
            f"{raw_by_batch.get(32, float('nan')) / raw_by_batch.get(1, float('nan')):.2f}x "
            "here, which bounds what merging requests can gain on this device.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short run, writes nothing")
    p.add_argument("--model", type=Path, help="an export dir (default: export --encoder)")
    p.add_argument(
        "--encoder", default="mobilenetv2", help="registered encoder exported when no --model"
    )
    p.add_argument(
        "--size", default="128x64", help="input HxW of the exported --encoder (default 128x64)"
    )
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--clients", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8, 32])
    p.add_argument("--threads", type=int, default=1, help="runtime threads (server and raw)")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=2.0)
    p.add_argument(
        "--workers", type=int, default=1, help="server --workers (runtime calls in flight)"
    )
    p.add_argument("--gallery-size", type=int, default=1000)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.clients = 2.0, [1, 8]

    from reid.manifest import load_manifest

    with tempfile.TemporaryDirectory(prefix="bench_server_") as tmp:
        tmp = Path(tmp)
        height, width = (int(v) for v in args.size.lower().split("x"))
        export = args.model or export_demo(tmp / "export", (height, width), args.encoder)
        manifest = load_manifest(export)
        args.model_label = (
            f"{manifest.model_name} at {manifest.preprocess.height}x{manifest.preprocess.width}"
            f" (D={manifest.embedding_dim})"
        )
        size = (manifest.preprocess.height, manifest.preprocess.width)
        images = crops(64, size)
        raw_by_batch = {
            b: raw_throughput(export, images, b, args.threads, args.workers)
            for b in sorted({1, 8, args.max_batch})
        }
        print("raw runtime img/s by batch:", {b: round(v, 1) for b, v in raw_by_batch.items()})
        gallery = tmp / "gallery"
        fill_gallery(gallery, manifest.embedding_dim, args.gallery_size)

        rows: list[Load] = []
        workers = ["--workers", str(args.workers)]
        modes = {
            "on": ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)],
            "off": ["--no-batching"],
        }
        modes = {mode: [*extra, *workers] for mode, extra in modes.items()}
        for mode, extra in modes.items():
            proc, url = start_server(export, gallery, tmp / f"{mode}.log", args.threads, extra)
            try:
                for clients in args.clients:
                    row = measure(mode, url, proc.pid, images, clients, args.seconds)
                    rows.append(row)
                    print(
                        f"batching {mode:>3} clients {clients:>2}: {row.rps:7.1f} req/s  "
                        f"p50 {row.p50_ms:6.1f} ms  p99 {row.p99_ms:6.1f} ms  "
                        f"errors {row.errors}  server CPU {row.server_cpu_ms:.2f} ms/req  "
                        f"client CPU {row.client_cpu_ms:.2f} ms/req",
                        flush=True,
                    )
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)

    body = report(rows, raw_by_batch, args)
    print(body)
    if not args.quick:
        default_model = args.model is None and (args.encoder, args.size) == (
            "mobilenetv2",
            "128x64",
        )
        section = SECTION if default_model else f"{SECTION}: {args.model_label}"
        update_section(args.out, section, body)
        print(f"updated {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
