"""Gallery search: FAISS (flat, IVF, IVF-SQ8, HNSW) vs Milvus, insert rate, QPS, p99, recall@10.

    .venv/bin/python bench/bench_gallery.py                 # full run, updates docs/BENCHMARKS.md
    .venv/bin/python bench/bench_gallery.py --quick         # small smoke run, writes nothing
    .venv/bin/python bench/bench_gallery.py --sizes 100000 --dims 1280 \\
        --backend faiss,milvus-lite,milvus --title "Backends, 100k x 1280"

Vectors are random but clustered like re-ID embeddings: one Gaussian centre per
"identity" (an identity per 50 entries), each entry its centre plus Gaussian noise
(sigma 0.75 per coordinate, so two entries of one identity have cosine ~0.64 and
entries of different identities ~0), L2-normalised; entry ``i`` (ids 1..n) has camera
``i % 6``. Queries are fresh draws from the same distribution. Exact top-10 from the
flat index is the ground truth for recall@10 (filtered: the exact top-10 among the
entries passing the filter, ``camera in [0, 1]`` by default, a third of them).

Backends (``--backend``, comma-separated, one table):

* ``faiss``: ``reid.gallery.index.VectorIndex`` (the layer under ``Gallery``; no SQLite),
  vectors generated and added in chunks so only one index is in memory at a time.
  IVF-SQ8 is also measured as ``Gallery`` searches it (``--rerank``, default 4): 4 x k
  candidates re-scored exactly with their float32 embeddings read from a real SQLite
  ``Store`` holding the same vectors (``reid.gallery.index.rescore``).
* ``milvus``: a real Milvus 2.3.5 standalone (``scripts/install_milvus.sh``), started as
  ``tests/test_gallery_milvus.py`` starts it (127.0.0.1, free ports, its data in a
  temporary directory, stopped by killing its process group), driven by ``pymilvus``
  directly (``bench/_milvus_bench.py``: a collection with ``id``, ``embedding`` and
  ``camera`` as in ``reid.gallery.milvus``, its filter expressions; consistency Bounded,
  and Strong as ``MilvusGallery`` uses it at the first point of each index).
* ``milvus-lite``: the same ``bench/_milvus_bench.py`` in a subprocess of the separate
  milvus-lite environment (``scripts/install_milvus_lite.sh``; milvus-lite 3 needs
  pymilvus 3, which this repository does not use), on a ``.db`` file.

SQLite ingest (durable ``Gallery.add``) is measured separately, smaller. Each run writes
its own subsection (``--title``) of the section in ``docs/BENCHMARKS.md``, so runs with
different commands keep their tables side by side. The subsection is rewritten after
every row, marked as in progress until the run ends: a run stopped (Ctrl-C, SIGTERM) or
failing keeps the rows it finished and says where it stopped.
"""

from __future__ import annotations

import os

# Before faiss loads OpenMP: idle threads sleep instead of spinning. On this shared
# machine spinning OpenMP threads made single-query searches several times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import ctypes
import gc
import itertools
import json
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _milvus_bench
from _report import machine_summary, today, update_section

from reid.gallery import EntryMetadata, Gallery, SearchFilters
from reid.gallery.index import IndexSettings, VectorIndex, rescore
from reid.gallery.milvus import filter_expression
from reid.gallery.store import Store

SECTION = "## Gallery search (gallery)"
COMMAND = ".venv/bin/python bench/bench_gallery.py"
CHUNK = 50_000
K = 10
BACKENDS = ("faiss", "milvus-lite", "milvus")
LITE_VENV = Path(
    os.environ.get("MILVUS_LITE_VENV", Path.home() / ".cache" / "reid" / "milvus-lite-venv")
)


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
    backend: str
    kind: str
    params: str
    filtered: bool
    build_s: float
    insert_per_s: float
    memory_mib: float  # FAISS: the index's own estimate; Milvus: the server's RSS
    batch1_qps: float
    batch1_p99_ms: float
    batch32_qps: float
    batch32_p99_ms: float  # per call of 32 queries
    recall: float
    rss_mib: float | None = None  # FAISS: growth of this process's RSS over the build


@dataclass
class Truth:
    """Exact top-k ids per query, without and with the benchmark's filter."""

    plain: list[np.ndarray]
    filtered: list[np.ndarray]
    filters: SearchFilters


def build(data: Clustered, kind: str, settings: IndexSettings) -> tuple[VectorIndex, float, float]:
    """Build ``kind`` over ``data`` chunk by chunk; return it, the time spent in FAISS
    (training and adding; generating the vectors not counted) and the time adding."""
    spent = 0.0
    index = VectorIndex(data.dim, kind, settings, expected_size=data.n)
    if index.is_ivf:
        sample = data.draw(
            min(settings.nlist_for(data.n) * settings.ivf_train_per_list, data.n), 10_000
        )
        started = time.perf_counter()
        index.train(sample, expected_size=data.n)
        spent += time.perf_counter() - started
    adding = 0.0
    lists: dict[int, np.ndarray] = {}
    if index.is_ivf:  # as Gallery builds IVF: assign, size each list once, then add
        sizes = np.zeros(index.nlist, np.int64)
        for start, stop in data.chunks():
            vectors = data.chunk(start, stop)
            started = time.perf_counter()
            lists[start] = index.assign(vectors)
            sizes += np.bincount(lists[start], minlength=len(sizes))
            adding += time.perf_counter() - started
        started = time.perf_counter()
        index.reserve(sizes)
        adding += time.perf_counter() - started
    for start, stop in data.chunks():
        ids = np.arange(start + 1, stop + 1, dtype=np.int64)
        vectors = data.chunk(start, stop)
        started = time.perf_counter()
        index.add(ids, vectors, ids % 6, np.full(stop - start, np.nan), lists.pop(start, None))
        adding += time.perf_counter() - started
    return index, spent + adding, adding


def timed(fn: Callable[[np.ndarray], object], blocks: list[np.ndarray]) -> tuple[float, float]:
    """(queries per second, p99 ms per call) of ``fn`` over query ``blocks``, after a
    warm-up call."""
    return _milvus_bench.timed(fn, blocks)


def recall_at_k(found: list, truth: list[np.ndarray]) -> float:
    hits = [
        len(np.intersect1d(np.asarray(f), t)) / len(t) for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits))


def query_blocks(queries: np.ndarray, singles: int) -> tuple[list, list]:
    single = [queries[i : i + 1] for i in range(min(singles, len(queries)))]
    batch = [queries[i : i + 32] for i in range(0, min(len(queries), 32 * 4), 32)]
    return single, batch


def faiss_hnsw_builds(spec: str, n: int) -> list[IndexSettings]:
    """``--hnsw``: "auto" (the library's choice by size) or "M/efC,M/efC"."""
    if spec == "auto":
        return [IndexSettings()]
    builds = []
    for part in spec.split(","):
        m, ef = (int(v) for v in part.split("/"))
        builds.append(IndexSettings(hnsw_m=m, hnsw_ef_construction=ef))
    return builds


def sqlite_store(data: Clustered, directory: Path) -> Store:
    """The benchmark's vectors in a gallery's SQLite store (ids 1..n, as in the index)."""
    store = Store(directory, data.dim, create=True)
    for start, stop in data.chunks():
        vectors = data.chunk(start, stop)
        ids, _ = store.insert(vectors, [EntryMetadata()] * len(vectors), [None] * len(vectors))
        assert ids[0] == start + 1 and ids[-1] == stop, "store ids must match the index's"
    return store


def bench_faiss(
    data: Clustered,
    queries: np.ndarray,
    kinds: list[str],
    args: argparse.Namespace,
    progress: Progress,
    workdir: Path,
) -> Truth:
    n, dim = data.n, data.dim
    filters = SearchFilters(include_cameras=frozenset(args.filter_cameras))
    truth: Truth | None = None
    store: Store | None = None  # the float32 rows IVF-SQ8's candidates are re-scored with
    plans: list[tuple[str, IndexSettings]] = [("flat", IndexSettings())]
    for kind in kinds:
        if kind == "hnsw":
            if n > args.hnsw_max:
                progress.skip(f"FAISS HNSW at {n:,} x {dim} (over `--hnsw-max {args.hnsw_max}`)")
                continue
            plans += [("hnsw", s) for s in faiss_hnsw_builds(args.hnsw, n)]
        elif kind != "flat":
            plans.append((kind, IndexSettings()))
    for kind, settings in plans:
        gc.collect()
        _trim_heap()  # give the previous index's freed heap back, or it is reused unseen
        rss_before = _milvus_bench.tree_rss_bytes(os.getpid())
        faiss.omp_set_num_threads(args.build_threads)
        index, build_s, add_s = build(data, kind, settings)
        faiss.omp_set_num_threads(args.threads)  # searches are timed with --threads
        gc.collect()
        rss_mib = (_milvus_bench.tree_rss_bytes(os.getpid()) - rss_before) / 2**20
        if truth is None:  # the flat index comes first
            mask = index.mask(filters)
            truth = Truth(
                [ids for _, ids in index.search(queries, K, None)],
                [ids for _, ids in index.search(queries, K, mask)],
                filters,
            )
        single, batch = query_blocks(queries, args.batch1)
        if kind == "flat" and n * dim > 2e8:
            single, batch = single[:3], batch[:2]
        elif kind == "flat":
            single = single[:10]
        if index.is_ivf:
            base = settings.nprobe_for(index.nlist)
            operating = [max(1, round(base * f)) for f in (0.25, 1, 2)]
        elif kind == "hnsw":
            default = settings.hnsw_ef_search_for(n)
            operating = [default if e == "default" else int(e) for e in args.ef.split(",")]
        else:
            operating = [None]
        for position, knob in enumerate(operating):
            if index.is_ivf:
                index.tune(nprobe=knob)
                params = f"nlist {index.nlist}, nprobe {index.nprobe}"
                default_point = position == 1
            elif kind == "hnsw":
                index.tune(ef_search=knob)
                params = f"M {index.hnsw_m}, efC {index.hnsw_ef_construction}, "
                params += f"efSearch {index.ef_search}"
                default_point = knob == settings.hnsw_ef_search_for(n)
            else:
                params, default_point = "exact", True
            rerank = [0, args.rerank] if kind == "ivf_sq8" and args.rerank > 0 else [0]
            if rerank[-1] and store is None:
                store = sqlite_store(data, workdir / f"store-{n}x{dim}")
            for factor, filtered in itertools.product(
                rerank, [False, True] if default_point else [False]
            ):

                def search(
                    block: np.ndarray,
                    index: VectorIndex = index,
                    filtered: bool = filtered,
                    factor: int = factor,
                    store: Store | None = store,
                ) -> list:
                    mask = index.mask(filters) if filtered else None
                    if not factor:
                        return index.search(block, K, mask)
                    assert store is not None
                    found = index.search(block, K * factor, mask)
                    return rescore(block, found, K, store.embeddings)

                b1, b32 = timed(search, single), timed(search, batch)
                found = [ids for _, ids in search(queries)]
                recall = recall_at_k(found, truth.filtered if filtered else truth.plain)
                label = f"{params}, re-rank {factor}x from SQLite" if factor else params
                row = Row(
                    n, dim, "faiss", kind, label, filtered, build_s, n / add_s,
                    index.memory_bytes() / 2**20, *b1, *b32, recall, rss_mib,
                )  # fmt: skip
                progress.add(row)
        del index, search  # the closure holds the index too: free it before the next build
    if store is not None:
        store.close()
        shutil.rmtree(store.directory, ignore_errors=True)
    assert truth is not None
    return truth


def _trim_heap() -> None:
    """glibc ``malloc_trim(0)``: return free heap pages to the OS (no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def milvus_spec(n: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Milvus operating points: FLAT; HNSW M 16 / efC 100, ef 64 and 256; IVF_FLAT and
    IVF_SQ8 with FAISS's nlist for this size, nprobe 64. Filtered at the first point."""
    nlist = IndexSettings().nlist_for(n)
    nprobe = min(64, nlist)
    specs = {
        "FLAT": {"type": "FLAT", "search": [{"params": {}, "filtered": True}]},
        "HNSW": {
            "type": "HNSW",
            "build": {"M": 16, "efConstruction": 100},
            "search": [{"params": {"ef": 64}, "filtered": True}, {"params": {"ef": 256}}],
        },
        "IVF_FLAT": {
            "type": "IVF_FLAT",
            "build": {"nlist": nlist},
            "search": [{"params": {"nprobe": nprobe}, "filtered": True}],
        },
        "IVF_SQ8": {
            "type": "IVF_SQ8",
            "build": {"nlist": nlist},
            "search": [{"params": {"nprobe": nprobe}, "filtered": True}],
        },
    }
    return [specs[name] for name in args.milvus_indexes.split(",")]


def write_npy(data: Clustered, path: Path) -> None:
    """The benchmark's vectors as one float32 ``.npy`` (for the Milvus loaders)."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(data.n, data.dim))
    for start, stop in data.chunks():
        array[start:stop] = data.chunk(start, stop)
    array.flush()
    del array


class MilvusSink:
    """Turns ``_milvus_bench`` records into rows as they arrive (insert first)."""

    def __init__(self, backend: str, truth: Truth, dim: int, progress: Progress) -> None:
        self.backend, self.truth, self.dim, self.progress = backend, truth, dim, progress
        self.n, self.insert_s = 0, float("nan")

    def __call__(self, record: dict[str, Any]) -> None:
        if "insert_s" in record:
            self.n, self.insert_s = int(record["n"]), float(record["insert_s"])
            print(f"{self.backend}: inserted {self.n:,} in {self.insert_s:.1f} s", flush=True)
            return
        knobs = {**record["build"], **record["params"]}
        params = ", ".join([*(f"{k} {v}" for k, v in knobs.items()), record["consistency"]])
        if record.get("pending_after_build"):  # see _milvus_bench._wait_indexed
            params += f" (compaction re-indexing {record['pending_after_build']:,} rows)"
        ref = self.truth.filtered if record["filtered"] else self.truth.plain
        row = Row(
            self.n, self.dim, self.backend, record["index"], params, record["filtered"],
            record["build_s"], self.n / self.insert_s, record["memory_bytes"] / 2**20,
            *record["batch1"], *record["batch32"], recall_at_k(record["found"], ref),
        )  # fmt: skip
        self.progress.add(row)


class MilvusBackends:
    """The Milvus standalone server (started on first use) and the milvus-lite runner."""

    def __init__(self, args: argparse.Namespace, workdir: Path, absent: dict[str, str]) -> None:
        self.args, self.workdir = args, workdir
        self.server: Any = None
        self.absent = absent

    def standalone_uri(self) -> tuple[str, int]:
        if self.server is None:
            sys.path.insert(0, str(REPO / "tests"))
            from milvus_server import RECOMMENDED_CONFIG, MilvusServer, milvus_executable

            executable = milvus_executable()
            if executable is None:
                raise RuntimeError("no milvus-server launcher (bash scripts/install_milvus.sh)")
            config = {**RECOMMENDED_CONFIG, "proxy.timeTickInterval": self.args.milvus_tick_ms}
            server = MilvusServer(executable, self.workdir / "milvus-data", config)
            try:
                server.start(timeout=300)
            except RuntimeError:
                server.stop()
                raise
            self.server = server
        return f"http://{self.server.url}", self.server.process.pid

    def lite_python(self) -> Path:
        python = Path(os.environ.get("REID_MILVUS_LITE_PYTHON", LITE_VENV / "bin" / "python"))
        if not python.exists():
            raise RuntimeError(
                f"no milvus-lite environment at {python} (bash scripts/install_milvus_lite.sh)"
            )
        return python

    def run(self, backend: str, spec: dict[str, Any], sink: MilvusSink) -> None:
        """One backend's run; its records go to ``sink`` as they come."""
        if backend == "milvus":
            spec["uri"], spec["server_pid"] = self.standalone_uri()
            _milvus_bench.run(spec, sink)
            return
        python = self.lite_python()
        db = self.workdir / "lite" / f"{spec['n']}x{spec['dim']}.db"
        db.parent.mkdir(exist_ok=True)
        spec["uri"] = str(db)
        spec_path, out_path = self.workdir / "lite-spec.json", self.workdir / "lite-out.jsonl"
        spec_path.write_text(json.dumps(spec))
        out_path.unlink(missing_ok=True)  # an earlier size's records are not this run's
        env = {**os.environ, "OMP_NUM_THREADS": str(self.args.threads)}
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        worker = Path(_milvus_bench.__file__)
        command = [str(python), str(worker), str(spec_path), str(out_path)]
        process = subprocess.Popen(command, env=env)
        try:
            for line in _follow(out_path, process):
                sink(json.loads(line))
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
        if process.returncode:
            raise subprocess.CalledProcessError(process.returncode, command)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def _follow(path: Path, process: subprocess.Popen) -> Iterator[str]:
    """The complete lines appended to ``path`` while ``process`` runs, and after it ends."""
    while not path.exists() and process.poll() is None:
        time.sleep(0.2)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as handle:
        pending = ""
        while True:
            ended = process.poll() is not None  # read once more after it ended
            chunk = handle.read()
            pending += chunk
            *complete, pending = pending.split("\n")
            yield from (line for line in complete if line.strip())
            if ended and not chunk:
                return
            if not chunk:
                time.sleep(0.5)


class Progress:
    """The run's rows as they come: each printed and, unless the run writes nothing, the
    report rewritten at once (marked in progress), so a stopped run keeps its rows."""

    def __init__(self, args: argparse.Namespace, argv: list[str] | None) -> None:
        self.args, self.argv = args, argv
        self.rows: list[Row] = []
        self.skipped: list[str] = []
        self.absent: dict[str, str] = {}
        self.started, self.load_start = time.perf_counter(), os.getloadavg()[0]
        self.writes = not (args.quick or args.no_write)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(format_row(row), f"load {os.getloadavg()[0]:.1f}", flush=True)
        self.write(status="in progress")

    def skip(self, what: str) -> None:
        self.skipped.append(what)
        print(f"skip {what}", flush=True)

    @property
    def minutes(self) -> float:
        return (time.perf_counter() - self.started) / 60

    def write(self, status: str | None = None, ingest: str = "") -> None:
        """Rewrite the subsection; ``status`` (in progress, stopped...) heads it."""
        if not self.writes:
            return
        load = (self.load_start, os.getloadavg()[0])
        body = report(self, ingest, load, status)
        update_section(self.args.output, f"### {self.args.title}", body, parent=SECTION)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _signals_ignored() -> Any:
    """SIGINT and SIGTERM ignored for the duration (clean-up that must finish)."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def bench_config(
    n: int,
    dim: int,
    kinds: list[str],
    args: argparse.Namespace,
    progress: Progress,
    milvus: MilvusBackends,
) -> None:
    data = Clustered(n, dim)
    queries = data.draw(args.queries, stream=20_000)
    faiss_kinds = kinds if "faiss" in args.backends else []
    truth = bench_faiss(data, queries, faiss_kinds, args, progress, milvus.workdir)
    others = [b for b in args.backends if b != "faiss"]
    if not others:
        return
    vectors, query_path = milvus.workdir / "vectors.npy", milvus.workdir / "queries.npy"
    written = False
    for backend in others:
        limit = args.milvus_max if backend == "milvus" else args.lite_max
        if n > limit:
            option = "--milvus-max" if backend == "milvus" else "--lite-max"
            progress.skip(f"{backend} at {n:,} x {dim} (over `{option} {limit}`)")
            continue
        if backend in milvus.absent:
            continue
        if not written:
            write_npy(data, vectors)
            np.save(query_path, queries)
            written = True
        spec = {
            "n": n, "dim": dim, "vectors": str(vectors), "queries": str(query_path), "k": K,
            "filter": filter_expression(truth.filters), "batch1": args.batch1,
            "indexes": milvus_spec(n, args),
        }  # fmt: skip
        rows_before = len(progress.rows)
        try:
            milvus.run(backend, spec, MilvusSink(backend, truth, dim, progress))
        except (RuntimeError, subprocess.CalledProcessError) as error:
            why = str(error).splitlines()[0]
            kept = len(progress.rows) - rows_before
            if kept:  # it ran, then failed: its rows stay, and the header says so
                why = f"failed at {n:,} x {dim} after {kept} row(s): {why}"
            milvus.absent[backend] = why
            print(f"{backend}: absent ({why})", flush=True)
            continue
        finally:
            if backend == "milvus":  # its background compaction must not load the next rows
                with _signals_ignored():
                    milvus.close()
    with contextlib.suppress(FileNotFoundError):
        vectors.unlink()


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
    memory = f"{row.memory_mib:,.0f}"
    if row.rss_mib is not None:
        memory += f" / {row.rss_mib:,.0f}"
    where = f"camera in {list(row_filter_cameras)}" if row.filtered else "-"
    return (
        f"| {row.n:,} | {row.dim} | {row.backend} | {row.kind} | {row.params} | {where} "
        f"| {row.build_s:.1f} | {row.insert_per_s:,.0f} | {memory} "
        f"| {row.batch1_qps:,.0f} | {row.batch1_p99_ms:.2f} | {row.batch32_qps:,.0f} "
        f"| {row.batch32_p99_ms:.1f} | {row.recall:.3f} |"
    )


row_filter_cameras: tuple[int, ...] = (0, 1)  # set from --filter-cameras in main

HEADER = (
    "| entries | D | backend | index | parameters | filter | build s | insert entries/s "
    "| memory MiB (FAISS: estimate / RSS growth) | batch 1 QPS | batch 1 p99 ms "
    "| batch 32 QPS | batch 32 p99 ms/batch "
    "| recall@10 |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="gallery sizes")
    parser.add_argument("--dims", default="2048,1280", help="2048: ResNet-50, 1280: MobileNetV2")
    parser.add_argument("--kinds", default="flat,ivf,ivf_sq8,hnsw", help="FAISS index kinds")
    parser.add_argument(
        "--backend", default="faiss", help=f"comma-separated, of {', '.join(BACKENDS)}"
    )
    parser.add_argument(
        "--hnsw", default="auto", help="FAISS HNSW builds: auto (by size) or M/efC,M/efC,..."
    )
    parser.add_argument(
        "--ef", default="64,default,256", help="FAISS HNSW efSearch points (default: by size)"
    )
    parser.add_argument(
        "--rerank", type=int, default=4, help="IVF-SQ8 rows re-ranked from SQLite (0: none)"
    )
    parser.add_argument("--filter-cameras", default="0,1", help="filtered rows: camera in [...]")
    parser.add_argument(
        "--milvus-indexes", default="FLAT,HNSW,IVF_FLAT,IVF_SQ8", help="Milvus index types"
    )
    parser.add_argument(
        "--milvus-tick-ms",
        type=int,
        default=20,
        help="the Milvus server's proxy.timeTickInterval (Strong searches wait for a tick; "
        "20: docs/GALLERY.md's setting, 200: Milvus's default)",
    )
    parser.add_argument("--milvus-max", type=int, default=1_000_000, help="skip Milvus above")
    parser.add_argument("--lite-max", type=int, default=100_000, help="skip milvus-lite above")
    parser.add_argument("--max-gib", type=float, default=6.0, help="skip n x dim above this")
    parser.add_argument("--hnsw-max", type=int, default=1_000_000, help="skip HNSW above this")
    parser.add_argument("--queries", type=int, default=200, help="queries for recall@10")
    parser.add_argument("--batch1", type=int, default=100, help="single queries timed (ANN)")
    parser.add_argument("--ingest", type=int, default=20_000, help="entries for SQLite ingest")
    parser.add_argument("--threads", type=int, default=1, help="BLAS and OpenMP threads")
    parser.add_argument(
        "--build-threads", type=int, default=None, help="OpenMP threads for FAISS builds"
    )
    parser.add_argument("--title", default="Default run", help="subsection of the report")
    parser.add_argument("--quick", action="store_true", help="10k x 128, writes nothing")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--output", default=str(REPO / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    unknown = sorted(set(args.backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backend(s) {unknown}; expected {', '.join(BACKENDS)}")
    args.filter_cameras = tuple(int(c) for c in args.filter_cameras.split(","))
    return args


def main(argv: list[str] | None = None) -> int:
    global row_filter_cameras
    args = parse_args(argv)
    row_filter_cameras = args.filter_cameras
    sizes = [int(s) for s in args.sizes.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    if args.quick:
        sizes, dims, args.ingest, args.queries, args.batch1 = [10_000], [128], 2_000, 64, 20
    kinds = args.kinds.split(",")
    if args.build_threads is None:
        args.build_threads = args.threads
    faiss.omp_set_num_threads(args.threads)
    threadpool_limits(args.threads)
    progress = Progress(args, argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    print(HEADER, flush=True)
    scratch = REPO / "runs" if (REPO / "runs").exists() else None
    where = ""
    try:
        with tempfile.TemporaryDirectory(dir=scratch, prefix="bench-gallery-") as tmp:
            milvus = MilvusBackends(args, Path(tmp), progress.absent)
            try:
                for n, dim in itertools.product(sizes, dims):
                    where = f"{n:,} x {dim}"
                    if n * dim * 4 > args.max_gib * 2**30:
                        progress.skip(
                            f"{n:,} x {dim} ({n * dim * 4 / 2**30:.1f} GiB of vectors, over "
                            f"`--max-gib {args.max_gib:g}` on this shared 24 GB machine)"
                        )
                        continue
                    bench_config(n, dim, kinds, args, progress, milvus)
            finally:
                with _signals_ignored():  # a second Ctrl-C must not leave the server running
                    milvus.close()
        where = "the SQLite ingest"
        ingest = bench_ingest(args.ingest, max(dims), batch=100) if args.ingest else ""
    except BaseException as error:
        stopped = "stopped" if isinstance(error, KeyboardInterrupt) else f"failed ({error!r})"
        status = f"{stopped} after {progress.minutes:.1f} min, during {where}"
        with _signals_ignored():
            progress.write(status=status)
        print(f"\n{status}; rows so far kept", flush=True)
        if isinstance(error, KeyboardInterrupt):
            return 130
        raise
    print(ingest)
    if not progress.writes:
        print("\n(not written: --quick or --no-write)")
    else:
        progress.write(ingest=ingest)
        print(f"\nwrote '### {args.title}' to {args.output} ({progress.minutes:.1f} min)")
    return 0


def report(
    progress: Progress, ingest: str, load: tuple[float, float], status: str | None = None
) -> str:
    """The subsection's markdown: command, machine, the rows so far, the ingest note."""
    args, argv = progress.args, progress.argv
    absent_text = "".join(f" {name} absent: {why}." for name, why in progress.absent.items())
    skipped = progress.skipped
    skipped_text = f" Skipped: {'; '.join(skipped)}." if skipped else ""
    command = shlex.join([*COMMAND.split(), *(sys.argv[1:] if argv is None else argv)])
    state = f"**Run {status}: the rows below are the ones it finished.** " if status else ""
    return "\n".join(
        [
            state + f"Command: `{command}` (from the repository root). Date: {today()}.",
            f"Machine: {machine_summary()}; faiss {faiss.__version__} (CPU). "
            f"Load average (1 min) at start / end: {load[0]:.1f} / {load[1]:.1f} (where other "
            "jobs share the cores timings are indicative: compare rows of one table). "
            f"{args.threads} thread(s) for BLAS and OpenMP (`--threads`; FAISS and "
            "milvus-lite; the Milvus server uses its own threads, time tick "
            f"{args.milvus_tick_ms} ms: `--milvus-tick-ms`)"
            + (
                f", {args.build_threads} for FAISS builds"
                if args.build_threads != args.threads
                else ""
            )
            + ". "
            f"{'Whole run' if status is None else 'So far'}: {progress.minutes:.1f} min. "
            f"recall@10 over {args.queries} queries." + absent_text + skipped_text,
            "",
            HEADER,
            *(format_row(r) for r in progress.rows),
            *(["", ingest] if ingest else []),
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
