"""The Milvus half of ``bench_gallery.py``: insert, index, search, through ``pymilvus``.

Imports only numpy and pymilvus, so the same code runs in this repository's environment
(pymilvus 2.6 against a Milvus 2.3.5 standalone server) and, as a subprocess, in the
separate milvus-lite environment (``scripts/install_milvus_lite.sh``: milvus-lite 3 with
the pymilvus 3 it needs)::

    python bench/_milvus_bench.py SPEC.json OUT.jsonl

The spec names the server (``uri``: ``http://HOST:PORT`` or a milvus-lite ``.db`` file),
the vectors (``vectors``: a float32 ``.npy`` of ``n x dim``, ids 1..n, camera ``id % 6``),
the queries, the filter expression and the operating points. The answer is one result
per operating point: timings and the ids found for every query (``bench_gallery.py``
scores them against the exact top-k). Records are handed on as they come (``sink``; the
subprocess appends them to ``OUT.jsonl``, one JSON line each: first ``{"n", "insert_s"}``
after the insert, then one per operating point), so a run stopped mid-way keeps them.

Collection: ``id`` INT64 primary key, ``embedding`` FLOAT_VECTOR (metric IP), ``camera``
INT64 (the field names of ``reid.gallery.milvus``). Inserted in batches of about 16 MB,
then flushed (sealed segments, so searches use the index, not a growing-segment scan).
Searches run at consistency level Bounded (the engine's own speed) and, at the first
operating point of each index, also at Strong, the level ``MilvusGallery`` uses: a
Strong search waits for the next time tick (``proxy.timeTickInterval``, 200 ms in Milvus
2.3) so that it sees every acknowledged write.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

COLLECTION = "bench_gallery"


def tree_rss_bytes(root: int) -> int:
    """Resident memory of process ``root`` and all its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    family, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    total = 0
    for pid in family:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def timed(search: Any, blocks: list[np.ndarray]) -> tuple[float, float]:
    """(queries per second, p99 milliseconds per call) over ``blocks``, after a warm-up."""
    search(blocks[0])
    times = []
    for block in blocks:
        start = time.perf_counter()
        search(block)
        times.append(time.perf_counter() - start)
    queries = sum(len(b) for b in blocks)
    return queries / sum(times), 1000 * float(np.percentile(times, 99))


def run(
    spec: dict[str, Any], sink: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Insert, index and search as ``spec`` says; every record also goes to ``sink``."""
    from pymilvus import DataType, MilvusClient

    queries = np.load(spec["queries"])
    n, dim = _shape(spec["vectors"])
    # Memory: the server's processes, or (milvus-lite, in this process) what this
    # process grew by from here on; the vectors are read from the file, never mapped.
    server_pid = int(spec.get("server_pid") or os.getpid())
    baseline = 0 if spec.get("server_pid") else tree_rss_bytes(server_pid)
    k, expr = int(spec["k"]), spec["filter"]
    client = MilvusClient(uri=spec["uri"], timeout=600)
    if client.has_collection(COLLECTION):
        client.drop_collection(COLLECTION)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("camera", DataType.INT64)
    client.create_collection(COLLECTION, schema=schema, consistency_level="Bounded")
    batch = max(1, 2**24 // (4 * dim))
    started = time.perf_counter()
    for start, block in _chunks(spec["vectors"], batch):
        stop = start + len(block)
        rows = [
            {"id": i + 1, "embedding": block[i - start], "camera": (i + 1) % 6}
            for i in range(start, stop)
        ]
        client.insert(COLLECTION, rows)
    client.flush(COLLECTION)
    insert_s = time.perf_counter() - started
    if sink is not None:
        sink({"n": n, "insert_s": insert_s})
    single = [queries[i : i + 1] for i in range(int(spec["batch1"]))]
    batched = [queries[i : i + 32] for i in range(0, min(len(queries), 32 * 4), 32)]
    results = []
    for index in spec["indexes"]:
        params = client.prepare_index_params()
        params.add_index(
            "embedding",
            index_type=index["type"],
            metric_type="IP",
            params=index.get("build", {}),
        )
        started = time.perf_counter()
        try:
            client.create_index(COLLECTION, params)
        except Exception as error:  # a retried call whose first try went through
            if "already exists" not in str(error):
                raise
        pending = _wait_indexed(client, n)
        client.load_collection(COLLECTION)
        build_s = time.perf_counter() - started
        if pending:
            print(f"{index['type']}: all {n} rows indexed; {pending} rows of compacted "
                  "segments still being re-indexed in the background", flush=True)  # fmt: skip
        memory = tree_rss_bytes(server_pid) - baseline
        for number, point in enumerate(index["search"]):
            cases = [(False, "Bounded")]
            if number == 0:
                cases = [(False, "Strong"), *cases]
            if point.get("filtered"):
                cases.append((True, "Bounded"))
            for filtered, level in cases:

                def search(
                    block: np.ndarray, point: dict = point, filtered: bool = filtered, level=level
                ):
                    return client.search(
                        COLLECTION,
                        data=[row.tolist() for row in block],
                        limit=k,
                        filter=expr if filtered else "",
                        output_fields=["id"],
                        search_params={"metric_type": "IP", "params": point["params"]},
                        consistency_level=level,
                    )

                b1 = timed(search, single)
                b32 = timed(search, batched)
                found = []
                for start in range(0, len(queries), 64):
                    for hits in search(queries[start : start + 64]):
                        found.append([int(hit["id"]) for hit in hits])
                results.append(
                    {
                        "index": index["type"],
                        "build": index.get("build", {}),
                        "params": point["params"],
                        "filtered": filtered,
                        "consistency": level,
                        "build_s": build_s,
                        "pending_after_build": pending,
                        "memory_bytes": memory,
                        "batch1": b1,
                        "batch32": b32,
                        "found": found,
                    }
                )
                print(json.dumps({key: v for key, v in results[-1].items() if key != "found"}))
                if sink is not None:
                    sink(results[-1])
        client.release_collection(COLLECTION)
        client.drop_index(COLLECTION, "embedding")
    client.drop_collection(COLLECTION)
    client.close()
    return {"insert_s": insert_s, "n": n, "results": results}


def _shape(path: str) -> tuple[int, int]:
    with open(path, "rb") as handle:
        np.lib.format.read_magic(handle)
        shape, _, _ = np.lib.format.read_array_header_1_0(handle)
    return int(shape[0]), int(shape[1])


def _chunks(path: str, rows: int) -> Any:
    """``(start, float32 block)`` of a 2-d ``.npy``, ``rows`` at a time, by plain reads."""
    with open(path, "rb") as handle:
        np.lib.format.read_magic(handle)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        if fortran or dtype != np.float32:
            raise ValueError(f"{path}: expected a C-order float32 array")
        for start in range(0, shape[0], rows):
            count = min(rows, shape[0] - start)
            data = handle.read(4 * count * shape[1])
            yield start, np.frombuffer(data, np.float32).reshape(count, shape[1])


def _wait_indexed(client: Any, n: int, timeout: float = 3600.0) -> int:
    """Wait until every row is in an indexed segment (Milvus builds indexes
    asynchronously); returns the rows still pending then.

    ``pending_index_rows`` is not waited for: it also counts the rows of segments that
    compaction is merging in the background, whose new segments are indexed again while
    the old indexed ones keep serving. At 1M x 1280 in Milvus 2.3.5 it rose and fell for
    30+ minutes after every row was indexed (9 such tasks queued on one index node).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.describe_index(COLLECTION, "embedding")
        indexed = int(info.get("indexed_rows", n))
        if indexed >= n and info.get("state", "Finished") == "Finished":
            return int(info.get("pending_index_rows", 0))
        time.sleep(0.5)
    raise RuntimeError(f"index not built within {timeout:.0f} s")


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    with open(argv[1], "w", encoding="utf-8") as out:

        def append(record: dict[str, Any]) -> None:
            out.write(json.dumps(record) + "\n")
            out.flush()

        run(spec, append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
