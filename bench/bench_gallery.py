"""Gallery search: exact (flat) vs IVF vs HNSW latency and recall@10, plus SQLite ingest.

    .venv/bin/python bench/bench_gallery.py                 # full run, updates docs/BENCHMARKS.md
    .venv/bin/python bench/bench_gallery.py --quick         # small smoke run, writes nothing
    .venv/bin/python bench/bench_gallery.py --sizes 100000 --dims 2048,1280

Vectors are random but clustered like re-ID embeddings: one Gaussian centre per
"identity" (an identity per 50 entries), each entry its centre plus Gaussian noise
(sigma 0.75 per coordinate, so two entries of one identity have cosine ~0.64 and
entries of different identities ~0), L2-normalised. Queries are fresh draws from the
same distribution. Indexes are built directly on ``gallery.index.VectorIndex`` (the
layer under ``Gallery``; no SQLite), vectors generated and added in chunks so only one
index is in memory at a time. Exact top-10 from the flat index is the ground truth for
recall@10. SQLite ingest (durable ``Gallery.add``) is measured separately, smaller.
"""

from __future__ import annotations

import os

# Before faiss loads OpenMP: idle threads sleep instead of spinning. On this shared
# machine spinning OpenMP threads made single-query searches several times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_summary, today, update_section

from reid.gallery import EntryMetadata, Gallery
from reid.gallery.index import IndexSettings, VectorIndex

SECTION = "## Gallery search (gallery)"
COMMAND = ".venv/bin/python bench/bench_gallery.py"
CHUNK = 50_000
K = 10


class Clustered:
    """Deterministic clustered unit vectors, generated chunk by chunk."""

    def __init__(self, n: int, dim: int, seed: int = 0, per_cluster: int = 50) -> None:
        self.n, self.dim, self.seed = n, dim, seed
        rng = np.random.default_rng(seed)
        self.centres = rng.standard_normal((max(10, n // per_cluster), dim), dtype=np.float32)

    def draw(self, count: int, stream: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, stream])
        labels = rng.integers(0, len(self.centres), count)
        vectors = self.centres[labels] + 0.75 * rng.standard_normal((count, self.dim), np.float32)
        faiss.normalize_L2(vectors)
        return vectors

    def chunks(self) -> list[tuple[int, int]]:
        return [(s, min(s + CHUNK, self.n)) for s in range(0, self.n, CHUNK)]

    def chunk(self, start: int, stop: int) -> np.ndarray:
        return self.draw(stop - start, stream=1 + start // CHUNK)


@dataclass
class Row:
    n: int
    dim: int
    kind: str
    params: str
    build_s: float
    memory_mib: float
    batch1_ms: float
    batch32_ms: float  # per query
    recall: float


def build(data: Clustered, kind: str, settings: IndexSettings) -> tuple[VectorIndex, float]:
    """Build ``kind`` over ``data`` chunk by chunk; return it and the time spent in FAISS
    (training and adding; generating the vectors not counted)."""
    spent = 0.0
    index = VectorIndex(data.dim, kind, settings)
    if kind == "ivf":
        sample = data.draw(
            min(settings.nlist_for(data.n) * settings.ivf_train_per_list, data.n), 10_000
        )
        started = time.perf_counter()
        index.train(sample, expected_size=data.n)
        spent += time.perf_counter() - started
    for start, stop in data.chunks():
        ids = np.arange(start + 1, stop + 1, dtype=np.int64)
        vectors = data.chunk(start, stop)
        started = time.perf_counter()
        index.add(ids, vectors, np.full(stop - start, -1), np.full(stop - start, np.nan))
        spent += time.perf_counter() - started
    return index, spent


def median_ms(fn: Callable[[np.ndarray], object], blocks: list[np.ndarray]) -> float:
    """Median milliseconds per query of ``fn`` over query ``blocks`` (after one warm-up)."""
    fn(blocks[0])
    times = []
    for block in blocks:
        start = time.perf_counter()
        fn(block)
        times.append((time.perf_counter() - start) / len(block))
    return 1000 * statistics.median(times)


def recall_at_k(found: list, truth: list) -> float:
    hits = [len(np.intersect1d(f[1], t[1])) / len(t[1]) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


def bench_config(
    n: int, dim: int, kinds: list[str], args: argparse.Namespace, skipped: list[str]
) -> list[Row]:
    data = Clustered(n, dim)
    queries = data.draw(args.queries, stream=20_000)
    settings = IndexSettings()
    rows: list[Row] = []
    truth = None
    for kind in ["flat", *[k for k in kinds if k != "flat"]]:
        if kind == "hnsw" and n > args.hnsw_max:
            skipped.append(f"HNSW at {n:,} x {dim} (over `--hnsw-max {args.hnsw_max}`)")
            print(f"skip {skipped[-1]}", flush=True)
            continue
        gc.collect()
        index, build_s = build(data, kind, settings)
        if kind == "flat":
            truth = index.search(queries, K, None)
        flat_blocks = 3 if n * dim > 2e8 else 10
        single = [queries[i : i + 1] for i in range(args.batch1 if kind != "flat" else flat_blocks)]
        batch = [queries[i : i + 32] for i in range(0, min(len(queries), 32 * 4), 32)]
        if kind == "flat":
            batch = batch[:2] if n * dim > 2e8 else batch
        operating = {"flat": [None], "ivf": [0.25, None, 2], "hnsw": [64, None, 256]}[kind]
        for knob in operating:
            if kind == "ivf":
                base = settings.nprobe_for(index.nlist)
                index.tune(nprobe=max(1, round(base * (knob or 1))))
                params = f"nlist {index.nlist}, nprobe {index.nprobe}"
            elif kind == "hnsw":
                index.tune(ef_search=knob or settings.hnsw_ef_search)
                params = f"M {settings.hnsw_m}, efC {settings.hnsw_ef_construction}, "
                params += f"efSearch {index.ef_search}"
            else:
                params = "exact"

            def search(block: np.ndarray, index: VectorIndex = index) -> object:
                return index.search(block, K, None)

            b1, b32 = median_ms(search, single), median_ms(search, batch)
            recall = 1.0 if kind == "flat" else recall_at_k(index.search(queries, K, None), truth)
            row = Row(n, dim, kind, params, build_s, index.memory_bytes() / 2**20, b1, b32, recall)
            rows.append(row)
            print(format_row(row), f"load {os.getloadavg()[0]:.1f}", flush=True)
        del index, search  # the closure holds the index too: free it before the next build
    return rows


def bench_ingest(n: int, dim: int, batch: int) -> str:
    """Durable ``Gallery.add`` throughput, single-add latency and reopen time."""
    data = Clustered(n, dim, seed=1)
    vectors = data.draw(n, stream=1)
    metadata = [EntryMetadata(camera=i % 6, timestamp=float(i), track=i // 20) for i in range(n)]
    with tempfile.TemporaryDirectory(
        dir=REPO / "runs" if (REPO / "runs").exists() else None
    ) as tmp:
        with Gallery.open(tmp, dim, index="flat") as gallery:
            started = time.perf_counter()
            for s in range(0, n, batch):
                gallery.add(vectors[s : s + batch], metadata[s : s + batch])
            ingest_s = time.perf_counter() - started
            singles = []
            for i in range(100):
                start = time.perf_counter()
                gallery.add(vectors[i : i + 1], metadata[i : i + 1])
                singles.append(time.perf_counter() - start)
        started = time.perf_counter()
        with Gallery.open(tmp) as gallery:
            reopen_s = time.perf_counter() - started
            gallery.save_snapshot()
        started = time.perf_counter()
        with Gallery.open(tmp):
            snapshot_s = time.perf_counter() - started
    return (
        f"SQLite ingest ({n:,} x {dim}, flat, `Gallery.add` in batches of {batch}, each one "
        f"fsync'd transaction): {n / ingest_s:,.0f} entries/s; a single-entry add takes "
        f"{1000 * statistics.median(singles):.1f} ms (median of 100, mostly fsync). Reopening "
        f"(index rebuilt from SQLite): {reopen_s:.2f} s; from the FAISS snapshot: "
        f"{snapshot_s:.2f} s."
    )


def format_row(row: Row) -> str:
    return (
        f"| {row.n:,} | {row.dim} | {row.kind} | {row.params} | {row.build_s:.1f} "
        f"| {row.memory_mib:,.0f} | {row.batch1_ms:.2f} | {row.batch32_ms:.2f} "
        f"| {row.recall:.3f} |"
    )


HEADER = (
    "| entries | D | index | parameters | build s | memory MiB | batch 1 ms/query "
    "| batch 32 ms/query | recall@10 |\n|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="gallery sizes")
    parser.add_argument("--dims", default="2048,1280", help="2048: ResNet-50, 1280: MobileNetV2")
    parser.add_argument("--kinds", default="flat,ivf,hnsw")
    parser.add_argument("--max-gib", type=float, default=6.0, help="skip n x dim above this")
    parser.add_argument("--hnsw-max", type=int, default=1_000_000, help="skip HNSW above this")
    parser.add_argument("--queries", type=int, default=200, help="queries for recall@10")
    parser.add_argument("--batch1", type=int, default=50, help="single queries timed (ANN)")
    parser.add_argument("--ingest", type=int, default=20_000, help="entries for SQLite ingest")
    parser.add_argument("--threads", type=int, default=1, help="BLAS and OpenMP threads")
    parser.add_argument("--quick", action="store_true", help="10k x 128, writes nothing")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--output", default=str(REPO / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    if args.quick:
        sizes, dims, args.ingest, args.queries = [10_000], [128], 2_000, 64
    kinds = args.kinds.split(",")
    faiss.omp_set_num_threads(args.threads)
    threadpool_limits(args.threads)
    load_start, started = os.getloadavg()[0], time.perf_counter()
    rows: list[Row] = []
    skipped: list[str] = []
    print(HEADER, flush=True)
    for n in sizes:
        for dim in dims:
            if n * dim * 4 > args.max_gib * 2**30:
                skipped.append(
                    f"{n:,} x {dim} ({n * dim * 4 / 2**30:.1f} GiB of vectors, over "
                    f"`--max-gib {args.max_gib:g}` on this shared 24 GB machine)"
                )
                print(f"skip {skipped[-1]}", flush=True)
                continue
            rows.extend(bench_config(n, dim, kinds, args, skipped))
    ingest = bench_ingest(args.ingest, max(dims), batch=100)
    print(ingest)
    elapsed = time.perf_counter() - started
    body = report(rows, skipped, ingest, args, (load_start, os.getloadavg()[0]), elapsed)
    if args.quick or args.no_write:
        print("\n(not written: --quick or --no-write)")
    else:
        update_section(args.output, SECTION, body)
        print(f"\nwrote {SECTION!r} to {args.output} ({elapsed / 60:.1f} min)")
    return 0


def report(
    rows: list[Row],
    skipped: list[str],
    ingest: str,
    args: argparse.Namespace,
    load: tuple[float, float],
    elapsed: float,
) -> str:
    skipped_text = f" Skipped: {'; '.join(skipped)}." if skipped else ""
    return "\n".join(
        [
            f"Command: `{COMMAND}` (from the repository root). Date: {today()}.",
            f"Machine: {machine_summary()}; faiss {faiss.__version__} (CPU). "
            f"Load average (1 min) at start / end: {load[0]:.1f} / {load[1]:.1f} (shared "
            f"machine: timings are indicative). {args.threads} thread(s) for BLAS and "
            "OpenMP (`--threads`): with other jobs on the cores, two threads made "
            "single-query searches 10-100x slower whenever one thread was descheduled. "
            f"Whole run: {elapsed / 60:.1f} min.",
            "",
            "Random-but-clustered unit vectors (an identity per 50 entries, noise sigma 0.75: "
            "same-identity cosine ~0.64), D = 2048 (ResNet-50) and 1280 (MobileNetV2, the "
            "demo's encoder). Built on `gallery.index.VectorIndex` (the layer under "
            "`Gallery`, no SQLite). Latency: median per query over single queries (batch 1) "
            "and over blocks of 32 (batch 32, per query), k = 10, including the id-ordering "
            f"of results. recall@10: against the exact top 10, over {args.queries} queries. "
            "Memory: estimated index size (vectors, ids, id maps, graph links or centroids). "
            "Build: time in FAISS (IVF training and adding, HNSW graph), not counting "
            "generating the vectors. "
            "Rows with the library defaults: IVF nprobe = nlist/16, HNSW efSearch 128; the "
            "other rows show other operating points of the same index." + skipped_text,
            "",
            HEADER,
            *(format_row(r) for r in rows),
            "",
            ingest,
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
