"""Benchmark the trainer's pseudo-label clustering: dense vs sparse Jaccard, up to 100k.

    .venv/bin/python bench/bench_clustering.py           # full run, updates docs/BENCHMARKS.md
    .venv/bin/python bench/bench_clustering.py --quick   # small smoke run, writes nothing

``trainer.clustering.cluster_pseudo_labels`` (k-reciprocal Jaccard distance, k1=30,
k2=6, then DBSCAN(eps=0.6, min_samples=4, precomputed)) on features clustered like
re-ID embeddings: identities with 3-6 cameras each, an identity centre + a camera
offset + per-image noise in a 32-d latent space, randomly embedded in 2,048-d with a
little isotropic noise; image counts per identity vary like Market-1501's (about 17
images per identity at every size).

Timed runs, each in a fresh ``spawn`` child so that its peak RSS (``VmHWM``) belongs
to that run alone (the child also reports its RSS with the input loaded):

1. 12,936 x 2,048 (Market-1501's train set, ResNet-50's dimension), dense path;
2. the same, sparse path (the default), whose labels must equal the dense ones
   (each of the two ``--repeat`` times, 3 by default: the best time counts);
3. 100,000 x 2,048 (a large retraining set), sparse path, approximate neighbours.

Then, untimed, the quality of the approximate neighbour search: recall against exact
search on a sample of rows at 25,000 and 100,000 rows, and at 25,000 rows (where exact
search is still affordable) the sparse clustering with exact vs approximate neighbour
lists (adjusted Rand index between the two labelings).

Targets on the 2-core development machine: Market size <= 8 s and <= 1.5 GB, 100k
<= 120 s and <= 4 GB. ``--pause CMD`` / ``--resume CMD`` run shell commands around
each timed child, e.g. to stop a training job that shares the cores (use a pattern
that does not match the benchmark's own command line: ``'trainer trai[n]'``).
"""

from __future__ import annotations

import os

# as python -m trainer does (trainer/__main__.py): waiting OpenMP threads (FAISS) sleep
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import multiprocessing as mp
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_summary, today, update_section

from reid.knn import HnswParams
from reid.rerank import EXACT_KNN_MAX

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Clustering (Jaccard + DBSCAN)"
COMMAND = ".venv/bin/python bench/bench_clustering.py"
MARKET_TARGET = (8.0, 1536.0)  # seconds, MB
LARGE_TARGET = (120.0, 4096.0)
RECALL_SAMPLE = 1000
# the dense path before the sparse one existed (FAISS IndexFlatL2 kNN), as recorded
# on 2026-11-21 by this benchmark: same data, but the development machine was then an
# AMD EPYC (2 vCPUs); the dense row of each run measures today's dense path beside it
RECORDED_DENSE = (
    "| dense, recorded 2026-11-21 on an AMD EPYC (FAISS flat kNN, before the sparse path) | \
12,936 | exact | 12.2 s | not recorded | 2,189 MB | 1,769 MB | 1079 | 0.101 | 0.739 / 0.941 |"
)


@dataclass(frozen=True)
class Problem:
    """Sizes and clustering settings of one run."""

    num_train: int = 12936
    num_ids: int = 751
    num_cams: int = 6
    dim: int = 2048
    latent_dim: int = 32
    eps: float = 0.6
    min_samples: int = 4
    k1: int = 30
    k2: int = 6


MARKET = Problem()
MID = Problem(num_train=25_000, num_ids=1451)
LARGE = Problem(num_train=100_000, num_ids=5805)
QUICK = (
    Problem(num_train=1500, num_ids=90, dim=256),
    Problem(num_train=2500, num_ids=150, dim=256),
    Problem(num_train=4000, num_ids=240, dim=256),
)


def reid_like_features(p: Problem, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(features float32 [N, dim], identity int64 [N])`` clustered like re-ID embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((p.num_ids, p.latent_dim), dtype=np.float32)
    cam_offsets = 0.6 * rng.standard_normal((p.num_cams, p.latent_dim), dtype=np.float32)
    weights = rng.gamma(4.0, size=p.num_ids)  # uneven images per identity
    ids = np.concatenate(
        [
            np.arange(p.num_ids),
            rng.choice(p.num_ids, p.num_train - p.num_ids, p=weights / weights.sum()),
        ]
    )
    cam_sets = [
        rng.choice(p.num_cams, rng.integers(3, p.num_cams + 1), replace=False)
        for _ in ids[: p.num_ids]
    ]
    cams = np.array([rng.choice(cam_sets[i]) for i in ids])
    latent = centres[ids] + cam_offsets[cams]
    latent += 0.5 * rng.standard_normal(latent.shape, dtype=np.float32)
    projection = rng.standard_normal((p.latent_dim, p.dim), dtype=np.float32) / np.sqrt(
        p.latent_dim
    )
    feats = latent @ projection
    feats += 0.3 * rng.standard_normal(feats.shape, dtype=np.float32)
    return np.ascontiguousarray(feats, dtype=np.float32), ids.astype(np.int64)


# ----------------------------------------------------------------------------- child


def _status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from ``/proc/self/status``.

    ``VmHWM`` belongs to this program's address space: unlike ``ru_maxrss``, which
    Linux carries over from the parent through fork + exec, it does not include the
    parent's peak (the parent holds the 100k-row features while it starts children).
    """
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(task: str, path: str, p: Problem, options: dict, queue: mp.Queue) -> None:
    feats = np.load(path)
    base = _status_mb("VmRSS")  # the input loaded
    start, cpu = time.perf_counter(), _cpu_seconds()
    out: dict[str, object]
    if task == "cluster":
        from trainer.clustering import ClusteringParams, cluster_pseudo_labels

        params = ClusteringParams(eps=p.eps, min_samples=p.min_samples, k1=p.k1, k2=p.k2, **options)
        result = cluster_pseudo_labels(feats, params)
        out = {"labels": result.labels, "num_clusters": result.num_clusters}
        out["outlier_ratio"] = result.outlier_ratio
    else:
        out = {"recall": _recall(feats, p.k1, options["sample"])}
    out["seconds"] = time.perf_counter() - start
    out["cpu_seconds"] = _cpu_seconds() - cpu
    out["base_mb"] = base
    out["peak_mb"] = _status_mb("VmHWM")
    queue.put(out)


def _recall(feats: np.ndarray, k: int, sample: int) -> float:
    """Mean share of each sampled row's k exact nearest others found by the approximate search."""
    from reid.rerank import k_nearest, l2_normalize

    x = l2_normalize(feats)
    _, approx = k_nearest(x, k + 1, normalize=False, method="approximate")  # self, k others
    rows = np.sort(np.random.default_rng(1).choice(len(x), min(sample, len(x)), replace=False))
    sq = np.einsum("ij,ij->i", x, x)
    d = sq[rows, None] + sq[None, :] - 2.0 * (x[rows] @ x.T)
    d[np.arange(len(rows)), rows] = -np.inf  # self first, as in k_nearest
    exact = np.argsort(d, axis=1, kind="stable")[:, 1 : k + 1]
    found = [len(np.intersect1d(a[1:], b)) for a, b in zip(approx[rows], exact, strict=True)]
    return float(np.mean(found)) / k


def run_in_child(task: str, path: str, p: Problem, **options: object) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(task, path, p, options, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"{task} child exited with {proc.exitcode}")
    return result


def timed(
    hooks: tuple[str | None, str | None],
    repeat: int,
    task: str,
    path: str,
    p: Problem,
    **kw: object,
) -> dict:
    """:func:`run_in_child` ``repeat`` times between the pause and resume hooks.

    Returns the fastest run, with every run's time (``all_seconds``), the largest peak
    RSS of them and the load average before the first.
    """
    pause, resume = hooks
    if pause:
        subprocess.run(pause, shell=True, check=False)
    try:
        load = os.getloadavg()[0]
        results = [run_in_child(task, path, p, **kw) for _ in range(repeat)]
    finally:
        if resume:
            subprocess.run(resume, shell=True, check=False)
    best = dict(min(results, key=lambda r: r["seconds"]))
    best["all_seconds"] = [r["seconds"] for r in results]
    best["peak_mb"] = max(r["peak_mb"] for r in results)
    best["load"] = load
    return best


# ----------------------------------------------------------------------------- report


def purity(labels: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of clustered samples that carry their cluster's majority identity."""
    inliers = labels >= 0
    if not inliers.any():
        return 0.0
    pairs = labels[inliers] * (truth.max() + 1) + truth[inliers]
    keys, counts = np.unique(pairs, return_counts=True)
    majority = np.zeros(labels.max() + 1, dtype=np.int64)
    np.maximum.at(majority, keys // (truth.max() + 1), counts)
    return float(majority.sum() / inliers.sum())


def singletons(labels: np.ndarray) -> np.ndarray:
    """Outliers (-1) as clusters of their own, for comparing two labelings."""
    out = labels.copy()
    outliers = out < 0
    out[outliers] = out.max() + 1 + np.arange(outliers.sum())
    return out


def same_clusters(a: np.ndarray, b: np.ndarray) -> float:
    """Share of the samples outliers in both labelings or in a cluster both have exactly."""
    total = int(((a < 0) & (b < 0)).sum())
    for label in np.unique(a[a >= 0]):
        members = np.flatnonzero(a == label)
        other = b[members[0]]
        if other >= 0 and (b[members] == other).all() and (b == other).sum() == len(members):
            total += len(members)
    return total / len(a)


def quality(run: dict, truth: np.ndarray, sep: str = " | ") -> str:
    """Clusters, outlier ratio, and ARI / purity against the identities (on the inliers)."""
    labels = run["labels"]
    inliers = labels >= 0
    ari = adjusted_rand_score(truth[inliers], labels[inliers]) if inliers.any() else 0.0
    return sep.join(
        [
            str(run["num_clusters"]),
            f"{run['outlier_ratio']:.3f}",
            f"{ari:.3f} / {purity(labels, truth):.3f}",
        ]
    )


def row(name: str, p: Problem, knn: str, run: dict, truth: np.ndarray, bold: bool) -> str:
    b = "**" if bold else ""
    times = run.get("all_seconds", [run["seconds"]])
    spread = (
        f" (best of {len(times)}: {', '.join(f'{t:.1f}' for t in times)})" if len(times) > 1 else ""
    )
    return f"| {name} | {p.num_train:,} | {knn} | {b}{run['seconds']:.1f} s{b}{spread} | \
{run['cpu_seconds']:.1f} s | {b}{run['peak_mb']:,.0f} MB{b} | \
{run['peak_mb'] - run['base_mb']:,.0f} MB | {quality(run, truth)} |"


def verdict(run: dict, target: tuple[float, float]) -> str:
    ok = run["seconds"] <= target[0] and run["peak_mb"] <= target[1]
    return f"{'meets' if ok else 'MISSES'} <= {target[0]:.0f} s and <= {target[1] / 1024:.1f} GB"


def report(sizes: tuple[Problem, Problem, Problem], runs: dict, truths: dict, note: str) -> str:
    market, mid, large = sizes
    dense, sparse_, big = runs["dense"], runs["sparse"], runs["large"]
    exact_mid, approx_mid = runs["mid_exact"], runs["mid_approx"]
    same = int((dense["labels"] == sparse_["labels"]).sum())
    ari_mid = adjusted_rand_score(singletons(exact_mid["labels"]), singletons(approx_mid["labels"]))
    kept = same_clusters(exact_mid["labels"], approx_mid["labels"])
    recorded = RECORDED_DENSE if market == MARKET else None
    table = "\n".join(
        line
        for line in (
            "| path | N | neighbours | time | CPU time | peak RSS | above the loaded input "
            "| clusters | outlier ratio | ARI / purity vs identities |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
            recorded,
            row("dense (`jaccard: dense`)", market, "exact", dense, truths["market"], False),
            row("**sparse** (default)", market, "exact (auto)", sparse_, truths["market"], True),
            row("**sparse** (default)", large, "approximate (auto)", big, truths["large"], True),
        )
        if line
    )
    p, h = market, HnswParams()
    return f"""\
Command: `{COMMAND}` (from the repository root). Date: {today()}.
Machine: {machine_summary()}. Load average (1 min) before each timed run: \
{dense["load"]:.1f} / {sparse_["load"]:.1f} / {big["load"]:.1f}. {note}

`trainer.clustering.cluster_pseudo_labels` (k-reciprocal Jaccard distance, k1={p.k1}, \
k2={p.k2}; scikit-learn DBSCAN eps={p.eps}, min_samples={p.min_samples}, precomputed) on \
N x {p.dim:,} float32 features: about 17 images per identity ({market.num_ids} identities \
at {market.num_train:,}, {large.num_ids:,} at {large.num_train:,}), 3-6 of {p.num_cams} \
cameras each, identity centre + camera offset + noise in a {p.latent_dim}-d latent space \
randomly embedded in {p.dim:,}-d. One fresh process per run (Market size: the best of \
{len(dense["all_seconds"])} runs, the largest peak of them); peak = the \
process's peak RSS \
(interpreter, libraries and the input, {market.num_train * p.dim * 4 / 2**20:,.0f} MB / \
{large.num_train * p.dim * 4 / 2**20:,.0f} MB, included); CPU time = user + system of all \
its threads. Dense: the {market.num_train:,}^2 float32 matrix \
({market.num_train**2 * 4 / 2**20:,.0f} MB; {large.num_train**2 * 4 / 2**30:,.0f} GB at \
{large.num_train:,}) into DBSCAN. Sparse: `reid.rerank.jaccard_graph`, only the pairs within \
eps, as a sparse precomputed matrix; neighbour lists exact (blocked BLAS) up to \
{EXACT_KNN_MAX:,} rows, above that PCA-{h.pca_dim} + FAISS HNSW (M {h.m}, efConstruction \
{h.ef_construction}, efSearch {h.ef_search}), {h.candidates}k candidates re-ranked by exact \
distance (`reid.knn`).

{table}

Targets: {market.num_train:,}: sparse {verdict(sparse_, MARKET_TARGET)}; \
{large.num_train:,}: {verdict(big, LARGE_TARGET)}. At {market.num_train:,} the sparse \
labels equal the dense ones on {same:,} of {market.num_train:,} samples \
(`tests/test_clustering.py` checks this equality on small sets, and \
`tests/test_rerank.py` that the stored distances are bit-identical).

Approximate neighbours (untimed runs): recall of the {p.k1} nearest other rows against \
exact search, on {RECALL_SAMPLE:,} sampled rows: {runs["recall_mid"]["recall"]:.4f} at \
{mid.num_train:,} rows, {runs["recall_large"]["recall"]:.4f} at {large.num_train:,}. At \
{mid.num_train:,} rows the sparse clustering with exact lists ({exact_mid["seconds"]:.1f} s) \
and with approximate ones ({approx_mid["seconds"]:.1f} s) agree with adjusted Rand index \
{ari_mid:.4f} (outliers as singletons; {kept:.1%} of the samples are outliers in both or \
in a cluster that both find with exactly the same members); \
clusters, outlier ratio, ARI / purity vs identities: exact \
{quality(exact_mid, truths["mid"], ", ")}; approximate \
{quality(approx_mid, truths["mid"], ", ")}. The approximate lists are reproducible (seeded \
PCA sample, HNSW graph built on one thread, searched on all).
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run, write nothing")
    parser.add_argument("--out", default=str(REPO / "docs" / "BENCHMARKS.md"))
    parser.add_argument("--pause", help="shell command run before each timed run")
    parser.add_argument("--resume", help="shell command run after each timed run")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each Market-size path (the best counts)"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else (MARKET, MID, LARGE)
    market, mid, large = sizes
    # the quick sizes are below the exact-search threshold: ask for approximate lists
    large_knn = "approximate" if args.quick else "auto"
    hooks = (args.pause, args.resume)
    runs: dict[str, dict] = {}
    truths: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, p in (("market", market), ("mid", mid), ("large", large)):
            feats, truths[name] = reid_like_features(p)
            paths[name] = os.path.join(tmp, f"{name}.npy")
            np.save(paths[name], feats)
            del feats
        repeat = args.repeat
        runs["dense"] = timed(hooks, repeat, "cluster", paths["market"], market, jaccard="dense")
        runs["sparse"] = timed(hooks, repeat, "cluster", paths["market"], market)
        runs["large"] = timed(hooks, 1, "cluster", paths["large"], large, knn=large_knn)
        runs["mid_exact"] = run_in_child("cluster", paths["mid"], mid, knn="exact")
        runs["mid_approx"] = run_in_child("cluster", paths["mid"], mid, knn="approximate")
        for name, p in (("recall_mid", mid), ("recall_large", large)):
            path = paths[name.removeprefix("recall_")]
            runs[name] = run_in_child("recall", path, p, sample=RECALL_SAMPLE)
    if args.pause:
        note = f'Timed runs between `--pause "{args.pause}"` and `--resume "{args.resume}"` \
(each run: a training job sharing the cores was stopped, other jobs were not); the \
untimed quality runs with it running.'
    else:
        note = "Nothing paused: the machine is shared with other jobs, so timings are indicative."
    body = report(sizes, runs, truths, note)
    print(f"{SECTION}\n\n{body}")
    if not args.quick:
        update_section(args.out, SECTION, body)
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
