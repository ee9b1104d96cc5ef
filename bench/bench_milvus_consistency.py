"""Milvus read-after-write: what consistency Strong costs per search, by time-tick interval.

    .venv/bin/python bench/bench_milvus_consistency.py               # updates docs/BENCHMARKS.md
    .venv/bin/python bench/bench_milvus_consistency.py --ticks 200,20 --no-write

``MilvusGallery`` searches at consistency level Strong so that an add acknowledged by any
server is found by the next search through any server. A Strong search waits until the
query node has consumed the log up to the search's timestamp, which advances with the
proxy's time ticks (``proxy.timeTickInterval``, 200 ms by default): a single search
waits up to a tick, however small the collection. For each interval in ``--ticks`` this
starts a fresh Milvus 2.3.5 standalone (``scripts/install_milvus.sh``; started as the
tests start it, 127.0.0.1, free ports, ``--extra-config proxy.timeTickInterval=T``),
fills a ``MilvusGallery`` (FLAT) with ``--entries`` random unit vectors and measures,
through ``MilvusGallery`` as the server calls it:

* single-query ``search`` latency at Strong (what the gallery does) and, directly through
  pymilvus on the same collection, at Bounded (no wait; an add may be missed for up to
  ``common.gracefulTime``, 5 s);
* read-after-write: ``add`` of one entry, then a Strong ``search`` for it (the entry
  must come back first: counted);
* Strong searches per second with ``--threads`` concurrent callers (they share ticks);
* the Milvus process group's CPU while idle (the price of a shorter tick).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_summary, today, update_section
from milvus_server import MilvusServer, milvus_executable

from reid.gallery import EntryMetadata
from reid.gallery.milvus import MilvusGallery

SECTION = "## Milvus read-after-write (consistency Strong, by time tick)"
COMMAND = ".venv/bin/python bench/bench_milvus_consistency.py"
HEADER = (
    "| time tick ms | Strong search p50 ms | p99 ms | Bounded search p50 ms | "
    "add + Strong search p50 ms | found | Strong QPS, {threads} threads | idle CPU % of a core |"
)


def unit_rows(count: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def group_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of every live process in ``pid``'s process group."""
    group, total, tick = os.getpgid(pid), 0.0, os.sysconf("SC_CLK_TCK")
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.getpgid(int(name)) != group:
                continue
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1e3, q))


def concurrent_qps(gallery: MilvusGallery, queries: np.ndarray, threads: int, span: float) -> float:
    done, stop = [0] * threads, time.monotonic() + span

    def worker(slot: int) -> None:
        while time.monotonic() < stop:
            gallery.search(queries[slot % len(queries)][None], k=10)
            done[slot] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    started = time.monotonic()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(done) / (time.monotonic() - started)


def measure(tick: int, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """One row: a fresh Milvus with this time tick, or the running ``--milvus`` one."""
    if args.milvus:
        return measure_on(args.milvus, None, tick, args, workdir)
    executable = milvus_executable()
    if executable is None:
        raise SystemExit("no milvus-server launcher: run `bash scripts/install_milvus.sh`")
    server = MilvusServer(executable, workdir / f"tick{tick}", {"proxy.timeTickInterval": tick})
    server.start(timeout=300)
    try:
        return measure_on(server.url, server.process.pid, tick, args, workdir)
    finally:
        server.stop()


def measure_on(
    address: str, pid: int | None, tick: int, args: argparse.Namespace, workdir: Path
) -> dict[str, float]:
    """The row's numbers on the Milvus at ``address`` (idle CPU only with its ``pid``)."""
    from pymilvus import MilvusClient

    collection = f"bench_tick_{os.getpid()}_{tick}"
    url = f"milvus://{address}/{collection}"
    gallery = MilvusGallery.open(url, args.dim, index="flat", thumbnail_dir=workdir / "t")
    vectors = unit_rows(args.entries, args.dim, seed=0)
    for start in range(0, len(vectors), 1000):
        block = vectors[start : start + 1000]
        gallery.add(block, [EntryMetadata(camera=i % 6) for i in range(len(block))])
    queries = unit_rows(64, args.dim, seed=1)
    gallery.search(queries[:1], k=10)  # loaded, warm
    strong = []
    for query in queries[: args.searches]:
        started = time.perf_counter()
        gallery.search(query[None], k=10)
        strong.append(time.perf_counter() - started)
    client = MilvusClient(uri=f"http://{address}")  # the same searches, at Bounded
    bounded = []
    for query in queries[: args.searches]:
        started = time.perf_counter()
        client.search(
            gallery.collection, [query.tolist()], limit=10, anns_field="embedding",
            consistency_level="Bounded",
        )  # fmt: skip
        bounded.append(time.perf_counter() - started)
    client.close()
    fresh = unit_rows(args.searches, args.dim, seed=2)
    after_write, found = [], 0
    for vector in fresh:
        started = time.perf_counter()
        (added,) = gallery.add(vector[None], [EntryMetadata(camera=0)])
        (top,) = gallery.search(vector[None], k=1)
        after_write.append(time.perf_counter() - started)
        found += bool(top) and top[0].id == added
    qps = concurrent_qps(gallery, queries, args.threads, args.seconds)
    gallery.close()
    idle = math.nan
    if pid is not None:
        time.sleep(2)
        before = group_cpu_seconds(pid)
        time.sleep(args.idle)
        idle = (group_cpu_seconds(pid) - before) / args.idle * 100
    return {
        "tick": tick,
        "strong_p50": percentile_ms(strong, 50),
        "strong_p99": percentile_ms(strong, 99),
        "bounded_p50": percentile_ms(bounded, 50),
        "after_write_p50": percentile_ms(after_write, 50),
        "found": found / len(fresh),
        "qps": qps,
        "idle_cpu": idle,
    }


def format_row(r: dict[str, float]) -> str:
    idle = "-" if math.isnan(r["idle_cpu"]) else f"{r['idle_cpu']:.1f}"
    return (
        f"| {r['tick']:.0f} | {r['strong_p50']:.1f} | {r['strong_p99']:.1f} | "
        f"{r['bounded_p50']:.1f} | {r['after_write_p50']:.1f} | {r['found']:.0%} | "
        f"{r['qps']:.0f} | {idle} |"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", default="200,50,20,5", help="proxy.timeTickInterval values, ms")
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--searches", type=int, default=40, help="timed single searches")
    parser.add_argument("--threads", type=int, default=8, help="concurrent Strong searchers")
    parser.add_argument("--seconds", type=float, default=5.0, help="span of the QPS cell")
    parser.add_argument("--idle", type=float, default=15.0, help="seconds of idle CPU sampled")
    parser.add_argument(
        "--milvus", metavar="HOST:PORT",
        help="measure this running Milvus instead (--ticks: its one interval; no idle CPU)",
    )  # fmt: skip
    parser.add_argument("--note", default="", help="a sentence on the run's conditions")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--output", default=str(REPO / "docs" / "BENCHMARKS.md"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ticks = [int(t) for t in args.ticks.split(",")]
    load_start, started = os.getloadavg()[0], time.perf_counter()
    header = HEADER.format(threads=args.threads)
    print(header, flush=True)
    rows = []
    scratch = REPO / "runs" if (REPO / "runs").exists() else None
    with tempfile.TemporaryDirectory(dir=scratch, prefix="bench-milvus-tick-") as tmp:
        for tick in ticks:
            rows.append(measure(tick, args, Path(tmp)))
            print(format_row(rows[-1]), f"load {os.getloadavg()[0]:.1f}", flush=True)
    elapsed = time.perf_counter() - started
    command = shlex.join([*COMMAND.split(), *(sys.argv[1:] if argv is None else argv)])
    body = "\n".join(
        [
            f"Command: `{command}` (from the repository root). Date: {today()}.",
            f"Machine: {machine_summary()}. Load average (1 min) at start / end: "
            f"{load_start:.1f} / {os.getloadavg()[0]:.1f}. Whole run: {elapsed / 60:.1f} min.",
            "",
            f"Milvus 2.3.5 standalone, one fresh server per row with `proxy.timeTickInterval` "
            f"set; a `MilvusGallery` (FLAT) of {args.entries:,} x {args.dim} random unit "
            f"vectors; {args.searches} timed single-query searches (k = 10) per cell. Strong: "
            "`MilvusGallery.search` (what the server runs); Bounded: the same search through "
            "pymilvus at consistency Bounded (no wait, may miss adds of the last 5 s); add + "
            "Strong search: one `MilvusGallery.add` then a search for that vector, `found` = "
            "the share where it came back first; QPS: Strong searches from concurrent "
            "threads; idle CPU: the server's process group, nothing running.",
            "",
            header,
            "|---:" * 8 + "|",
            *(format_row(r) for r in rows),
            *(["", args.note] if args.note else []),
        ]
    )
    if args.no_write:
        print("\n(not written: --no-write)")
    else:
        update_section(args.output, SECTION, body)
        print(f"\nwrote {SECTION!r} to {args.output} ({elapsed / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
