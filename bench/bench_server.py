"""End-to-end search over HTTP on loopback, dynamic batching on vs off.

    .venv/bin/python bench/bench_server.py            # full run, updates docs/BENCHMARKS.md
    .venv/bin/python bench/bench_server.py --quick    # short smoke run, writes nothing
    .venv/bin/python bench/bench_server.py --baseline /tmp/old   # before/after, same run

Exports the demo encoder (MobileNetV2 at 128x64, random weights: speed does not
depend on them) to ONNX unless ``--model EXPORT_DIR`` names an export, fills a
gallery with random embeddings, then for batching on and off starts ``python -m
server`` on 127.0.0.1 and drives ``POST /v1/search/raw`` (one JPEG crop, k=10) from
1, 8 and 32 concurrent connections for a fixed time each.

The load generator is ``wrk`` (Debian's package; ``bench/wrk_raw_search.lua`` sends the
raw body) with one thread pinned to one core with ``taskset``, so the client's cost is
small and known; ``--load httpx`` uses the older Python generator (httpx async) instead,
for comparison. ``--baseline DIR`` also serves from another checkout of this repository
(say the commit before a change), interleaved with this one in the same run.

Reported per cell: requests (= images) per second and its ratio to the raw runtime
throughput of the same model measured in the same run (``runtime.embed`` on preprocessed
batches of 1, 8 and ``max_batch``, same threads and workers, the best taken), p50/p99
latency, errors, the server process's CPU time per request, the same without inference,
and the load generator's CPU time per request. The runtime's own CPU time is what the
server measures (``reid_inference_cpu_seconds_total`` in ``/metrics``: the CPU time of
its inference threads inside the runtime calls, exact with one intra-op thread); for a
server that does not report it (an older ``--baseline``) or with ``--threads`` above 1
it is estimated from the raw measurement instead (a per-call and a per-image cost fitted
on the batch sizes measured, applied to the calls and images ``/metrics`` counted), and
the report marks those cells with ``~``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import asyncio
import io
import json
import re
import resource
import shlex
import shutil
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
LUA = Path(__file__).resolve().with_name("wrk_raw_search.lua")
SEARCH_PATH = "/v1/search/raw?k=10"
CPU_TARGET_MS = 1.5
"""Issue 19: server CPU per one-crop raw search outside inference."""
RATIO_TARGETS = {"mobilenetv2": 0.60}
"""Issue 19: served / raw throughput at 32 clients (0.80 for the other encoders)."""


@dataclass(frozen=True)
class Raw:
    """The runtime alone: images/s by batch size, and its CPU cost ``a + b * images``."""

    img_s: dict[int, float]
    cpu_per_call_s: float  # a
    cpu_per_image_s: float  # b

    @property
    def best(self) -> float:
        return max(self.img_s.values())

    def cpu_seconds(self, calls: float, images: float) -> float:
        """Runtime CPU time of ``calls`` calls embedding ``images`` images in all."""
        return calls * self.cpu_per_call_s + images * self.cpu_per_image_s


@dataclass(frozen=True)
class Load:
    server: str  # "after" (this checkout) or "before" (--baseline)
    mode: str
    clients: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_ms: float  # server process CPU time per request
    inference_cpu_ms: float  # of which the runtime's own, per request
    client_cpu_ms: float  # load generator CPU time per request
    mean_batch: float  # images per runtime call
    inference_measured: bool = True  # by the server (else fitted on the raw runtime)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def overhead_ms(self) -> float:
        """Server CPU per request outside inference."""
        return self.server_cpu_ms - self.inference_cpu_ms


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


def raw_runtime(
    export: Path, images: list[bytes], batches: list[int], threads: int, workers: int = 1
) -> Raw:
    """Images/s of ``runtime.embed`` on preprocessed batches, ``workers`` calls at once,
    and its CPU time per call fitted as ``a + b * batch`` (least squares over ``batches``).

    Median of timed rounds; a round is one call from each of ``workers`` threads on the
    same session (as the server's workers), so the reference uses the same cores.
    """
    from concurrent.futures import ThreadPoolExecutor

    from reid.preprocess import decode_image_bytes, preprocess_batch
    from reid.runtimes import load_runtime

    runtime = load_runtime(export, "onnxruntime", "cpu", threads=threads)
    img_s, cpu_per_call = {}, {}
    with ThreadPoolExecutor(workers) as pool:
        for batch in batches:
            decoded = [decode_image_bytes(images[i % len(images)]) for i in range(batch)]
            tensor = preprocess_batch(decoded, runtime.manifest.preprocess)

            def one_round(tensor: np.ndarray = tensor) -> None:
                list(pool.map(lambda _: runtime.embed(tensor), range(workers)))

            for _ in range(3):
                one_round()
            times = []
            cpu0 = time.process_time()
            for _ in range(10):
                start = time.perf_counter()
                one_round()
                times.append(time.perf_counter() - start)
            cpu_per_call[batch] = (time.process_time() - cpu0) / (10 * workers)
            img_s[batch] = batch * workers / statistics.median(times)
    runtime.close()
    sizes = np.asarray(list(cpu_per_call), dtype=float)
    cpu = np.asarray(list(cpu_per_call.values()))
    per_image, per_call = np.polyfit(sizes, cpu, 1) if len(sizes) > 1 else (cpu[0], 0.0)
    return Raw(img_s, max(0.0, float(per_call)), max(0.0, float(per_image)))


def fill_gallery(directory: Path, dim: int, size: int) -> None:
    from reid.gallery import EntryMetadata, Gallery

    rng = np.random.default_rng(1)
    with Gallery.open(directory, dim, index="flat") as gallery:
        vectors = rng.standard_normal((size, dim)).astype(np.float32)
        meta = [EntryMetadata(camera=i % 4, timestamp=float(i)) for i in range(size)]
        gallery.add(vectors, meta)


def start_server(
    root: Path, export: Path, gallery: Path, log: Path, threads: int, extra: list[str]
) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m server`` of the checkout at ``root`` on a free port; (process, URL)."""
    cmd = [
        sys.executable, "-m", "server", "--model", str(export), "--gallery", str(gallery),
        "--host", "127.0.0.1", "--http-port", "0", "--no-grpc", "--device", "cpu",
        "--threads", str(threads), *extra,
    ]  # fmt: skip
    handle = log.open("w")
    path = os.pathsep.join([str(root), str(root / "client")])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    proc = subprocess.Popen(cmd, cwd=root, stdout=handle, stderr=handle, env=env)
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


# -- load generators ---------------------------------------------------------------------


@dataclass(frozen=True)
class Driven:
    """What a load generator reports for the measured window."""

    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    client_cpu_s: float


def children_cpu_seconds() -> float:
    """User + system CPU time of the finished child processes (the load generator)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def client_core() -> int:
    """The core the load generator is pinned to: the last one this process may use."""
    return max(os.sched_getaffinity(0))


def run_wrk(url: str, image: Path, clients: int, seconds: float) -> Driven:
    """``wrk`` with one thread on one core, ``clients`` connections, for ``seconds``."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: bash scripts/install_bench_tools.sh")
    duration = max(1, round(seconds))  # wrk takes whole seconds
    cmd = [wrk, "-t1", f"-c{clients}", f"-d{duration}s", "--timeout", "30s", "--latency"]
    cmd += ["-s", str(LUA), url, "--", str(image), SEARCH_PATH]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", str(client_core()), *cmd]
    cpu0 = children_cpu_seconds()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    cpu = children_cpu_seconds() - cpu0
    match = re.search(r"^wrk-json (\{.*\})$", proc.stdout, flags=re.M)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    out = json.loads(match.group(1))
    errors = sum(out[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return Driven(
        requests=out["requests"] - out["status_errors"],
        seconds=out["duration_us"] / 1e6,
        errors=errors + out["status_errors"],
        p50_ms=out["p50_us"] / 1000,
        p99_ms=out["p99_us"] / 1000,
        client_cpu_s=cpu,
    )


async def _drive_httpx(url: str, image: bytes, clients: int, seconds: float) -> Driven:
    """``clients`` httpx loops of search requests for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    cpu0 = time.process_time()
    start = loop.time()
    end = start + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one() -> None:
            nonlocal errors
            headers = {"Content-Type": "image/jpeg"}
            while loop.time() < end:
                sent = loop.time()
                r = await client.post(SEARCH_PATH, content=image, headers=headers)
                if r.status_code == 200:
                    latencies.append(loop.time() - sent)
                else:
                    errors += 1

        await asyncio.gather(*(one() for _ in range(clients)))
    elapsed = loop.time() - start
    ms = np.asarray(latencies) * 1000 if latencies else np.asarray([float("nan")])
    return Driven(
        len(latencies), elapsed, errors, float(np.percentile(ms, 50)),
        float(np.percentile(ms, 99)), time.process_time() - cpu0,
    )  # fmt: skip


def run_httpx(url: str, image: Path, clients: int, seconds: float) -> Driven:
    return asyncio.run(_drive_httpx(url, image.read_bytes(), clients, seconds))


GENERATORS = {"wrk": run_wrk, "httpx": run_httpx}


# -- server-side counters -----------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}(\{{[^}}]*{re.escape(labels)}[^}}]*\}})? (\S+)$"
    return sum(float(m.group(2)) for m in re.finditer(pattern, text, flags=re.M))


INFERENCE_CPU = "reid_inference_cpu_seconds_total"
"""The server's own count of its runtime calls' CPU time (the calling threads')."""


def server_counters(url: str, pid: int) -> dict[str, float]:
    """Served searches, runtime calls and images (``/metrics``), and process CPU time."""
    return parse_counters(httpx.get(f"{url}/metrics", timeout=10).text, pid)


def parse_counters(text: str, pid: int) -> dict[str, float]:
    """:func:`server_counters` from a ``/metrics`` text (and the process's CPU time)."""
    return {
        "searches": _metric(text, "reid_requests_total", 'route="/v1/search/raw"'),
        "calls": _metric(text, "reid_batch_size_images_count"),
        "images": _metric(text, "reid_batch_size_images_sum"),
        "inference_cpu": _metric(text, INFERENCE_CPU),
        "reports_inference_cpu": float(bool(re.search(rf"^{INFERENCE_CPU} ", text, re.M))),
        "cpu": process_cpu_seconds(pid),
    }


def inference_seconds(
    after: dict[str, float], delta: dict[str, float], raw: Raw, threads: int
) -> tuple[float, bool]:
    """The runtime's CPU seconds in a cell, and whether the server measured them.

    Measured (``reid_inference_cpu_seconds_total``) where the server reports it and the
    runtime computes on the calling thread (one intra-op thread); else the fit on the raw
    runtime applied to the calls and images the server counted."""
    if after["reports_inference_cpu"] and threads == 1:
        return delta["inference_cpu"], True
    return raw.cpu_seconds(delta["calls"], delta["images"]), False


def measure(
    server: str,
    mode: str,
    url: str,
    pid: int,
    image: Path,
    clients: int,
    seconds: float,
    load: str,
    raw: Raw,
    threads: int = 1,
) -> Load:
    """One cell: 1 s of warm-up, then ``seconds`` of load, with the server's counters.

    The runtime's CPU time is the server's own measurement where it is exact (it reports
    it, and computes with one intra-op thread), else the fit on the raw runtime."""
    drive = GENERATORS[load]
    drive(url, image, clients, 1.0)
    before = server_counters(url, pid)
    driven = drive(url, image, clients, seconds)
    after = server_counters(url, pid)
    delta = {key: after[key] - before[key] for key in after}
    served = max(1.0, delta["searches"])
    inference, measured = inference_seconds(after, delta, raw, threads)
    return Load(
        server, mode, clients, driven.requests, driven.seconds, driven.p50_ms, driven.p99_ms,
        driven.errors, delta["cpu"] / served * 1000, inference / served * 1000,
        driven.client_cpu_s / max(1, driven.requests + driven.errors) * 1000,
        delta["images"] / max(1.0, delta["calls"]), measured,
    )  # fmt: skip


# -- report -------------------------------------------------------------------------------


def ratio_target(args: argparse.Namespace) -> float:
    return RATIO_TARGETS.get(args.encoder_name, 0.80)


def _pick(rows: list[Load], server: str, mode: str, clients: int) -> Load | None:
    return next((r for r in rows if (r.server, r.mode, r.clients) == (server, mode, clients)), None)


def report(rows: list[Load], raw: Raw, args: argparse.Namespace) -> str:
    top = max(args.clients)
    compare = any(r.server == "before" for r in rows)
    if args.load == "wrk":
        generator = (
            f"wrk ({args.wrk_version}; one thread, pinned to CPU {client_core()} with "
            "taskset, `bench/wrk_raw_search.lua`)"
        )
    else:
        generator = "httpx async (Python, same process as this script, not pinned)"
    baseline = ""
    if compare:
        baseline = (
            f" Rows `before`: the server of `{args.baseline_label}` (`--baseline`), started "
            "the same way and measured interleaved with `after` (this checkout), cell by cell."
        )
    lines = [
        f"`{shlex.join([COMMAND, *sys.argv[1:]])}` on {today()}. "
        f"Machine: {machine_summary()}. Load average at the "
        f"end: {os.getloadavg()[0]:.2f}. {args.note}",
        "",
        f"Model: {args.model_label}, onnxruntime on the CPU with {args.threads} thread(s) "
        f"per call and {args.workers} worker(s) (calls in flight at once); "
        f"gallery of {args.gallery_size} entries (flat index); each request is "
        f"`POST {SEARCH_PATH}` with one JPEG crop. Load generator: {generator}, on the same "
        f"machine as the server. Batching on: max batch {args.max_batch}, max wait "
        f"{args.max_wait_ms:g} ms. Each cell: {args.seconds:g} s after 1 s of warm-up." + baseline,
        "",
        "Columns: `/ raw` is req/s over the raw runtime's best img/s (below); server CPU is "
        "the server process's CPU time (all threads) per served request; `excl. inference` "
        "subtracts the runtime's own CPU time, as the server measured it "
        f"(`{INFERENCE_CPU}`: its inference threads' CPU time inside the runtime calls) "
        "or, in cells marked `~` (a server that does not report it, or more than one "
        "intra-op thread), as fitted on the raw measurement "
        f"({raw.cpu_per_call_s * 1000:.3f} ms per call + {raw.cpu_per_image_s * 1000:.3f} ms "
        "per image, times the calls and images the server's `/metrics` counted); `batch` is "
        "images per runtime call; client CPU is the load generator's.",
        "",
        ("| server " if compare else "")
        + "| batching | clients | req/s (= img/s) | / raw | p50 ms | p99 ms | errors "
        "| server CPU ms/req | excl. inference | batch | client CPU ms/req |",
        ("| --- " if compare else "")
        + "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            (f"| {r.server} " if compare else "")
            + f"| {r.mode} | {r.clients} | {r.rps:.1f} | {r.rps / raw.best:.0%} | "
            f"{r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} | {r.server_cpu_ms:.2f} | "
            f"{'' if r.inference_measured else '~'}{r.overhead_ms:.2f} | {r.mean_batch:.1f} | "
            f"{r.client_cpu_ms:.2f} |"
        )
    lines += [
        "",
        "Raw runtime throughput, same model, threads and workers, same run "
        "(``runtime.embed`` on preprocessed batches): "
        + ", ".join(f"{v:.1f} img/s at batch {b}" for b, v in raw.img_s.items())
        + f"; the best, {raw.best:.1f} img/s, is the reference.",
    ]
    target = ratio_target(args)
    for server in ("before", "after") if compare else ("after",):
        cells = [r for r in (_pick(rows, server, m, top) for m in ("on", "off")) if r]
        if not cells:
            continue
        judged = cells[0]  # batching on (the server's default) when it was measured
        who = f"`{server}`: " if compare else ""
        parts = [
            f"batching {r.mode} {r.rps / raw.best:.0%} with {r.overhead_ms:.2f} ms of server "
            "CPU per request outside inference"
            + ("" if r.inference_measured else " (inference CPU fitted, not measured)")
            for r in cells
        ]
        ratio_ok = "met" if judged.rps / raw.best >= target else "not met"
        cpu_ok = "met" if judged.overhead_ms <= CPU_TARGET_MS else "not met"
        lines += [
            "",
            f"{who}at {top} clients the server delivers {'; '.join(parts)}. Targets (issue "
            f"19, judged with batching {judged.mode}): >= {target:.0%} of the raw runtime: "
            f"{ratio_ok}; <= {CPU_TARGET_MS:g} ms outside inference: {cpu_ok}.",
        ]
    return "\n".join(lines)


def wrk_version() -> str:
    proc = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"wrk (\S+)", proc.stdout + proc.stderr)
    return f"wrk {match.group(1)}" if match else "wrk"


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
    p.add_argument(
        "--modes", type=lambda s: s.split(","), default=["on", "off"], help="batching on,off"
    )
    p.add_argument("--load", choices=sorted(GENERATORS), default="wrk", help="load generator")
    p.add_argument(
        "--baseline", type=Path, help="another checkout whose server is measured too (before)"
    )
    p.add_argument("--baseline-label", default=None, help="how the report names --baseline")
    p.add_argument("--note", default="", help="a sentence for the report (e.g. other load)")
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
    if args.modes and not set(args.modes) <= {"on", "off"}:
        p.error("--modes takes on, off or on,off")
    args.wrk_version = wrk_version() if args.load == "wrk" else ""
    args.baseline_label = args.baseline_label or (str(args.baseline) if args.baseline else "")

    from reid.manifest import load_manifest

    with tempfile.TemporaryDirectory(prefix="bench_server_") as tmp:
        tmp = Path(tmp)
        height, width = (int(v) for v in args.size.lower().split("x"))
        export = args.model or export_demo(tmp / "export", (height, width), args.encoder)
        manifest = load_manifest(export)
        args.encoder_name = manifest.model_name
        args.model_label = (
            f"{manifest.model_name} at {manifest.preprocess.height}x{manifest.preprocess.width}"
            f" (D={manifest.embedding_dim})"
        )
        size = (manifest.preprocess.height, manifest.preprocess.width)
        images = crops(64, size)
        image = tmp / "crop.jpg"
        image.write_bytes(images[0])
        batches = sorted({1, 8, args.max_batch})
        raw = raw_runtime(export, images, batches, args.threads, args.workers)
        print(
            "raw runtime img/s by batch:",
            {b: round(v, 1) for b, v in raw.img_s.items()},
            f"CPU {raw.cpu_per_call_s * 1000:.3f} ms/call + "
            f"{raw.cpu_per_image_s * 1000:.3f} ms/image",
        )
        gallery = tmp / "gallery"
        fill_gallery(gallery, manifest.embedding_dim, args.gallery_size)

        servers = {"after": REPO}
        if args.baseline is not None:
            servers = {"before": args.baseline.resolve(), **servers}
        rows: list[Load] = []
        workers = ["--workers", str(args.workers)]
        flags = {
            "on": ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)],
            "off": ["--no-batching"],
        }
        for mode in args.modes:
            procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
            try:
                for server, root in servers.items():
                    copy = tmp / f"gallery-{server}-{mode}"  # one process per gallery
                    shutil.copytree(gallery, copy)
                    log = tmp / f"{server}-{mode}.log"
                    extra = [*flags[mode], *workers]
                    procs[server] = start_server(root, export, copy, log, args.threads, extra)
                for clients in args.clients:
                    for server, (proc, url) in procs.items():
                        row = measure(
                            server, mode, url, proc.pid, image, clients, args.seconds,
                            args.load, raw, args.threads,
                        )  # fmt: skip
                        rows.append(row)
                        print(
                            f"{server:>6} batching {mode:>3} clients {clients:>2}: "
                            f"{row.rps:7.1f} req/s ({row.rps / raw.best:4.0%} of raw)  "
                            f"p50 {row.p50_ms:6.1f} ms  p99 {row.p99_ms:6.1f} ms  "
                            f"errors {row.errors}  server CPU {row.server_cpu_ms:.2f} ms/req "
                            f"(excl. inference {row.overhead_ms:.2f}, batch "
                            f"{row.mean_batch:.1f})  client CPU {row.client_cpu_ms:.2f} ms/req",
                            flush=True,
                        )
            finally:
                for proc, _ in procs.values():
                    proc.send_signal(signal.SIGTERM)
                for proc, _ in procs.values():
                    proc.wait(30)

    body = report(rows, raw, args)
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
