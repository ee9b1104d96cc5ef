"""Which label-free score picks the better checkpoint? Compare criteria on finished runs.

For every run folder given (trained with ``eval.every`` > 0 on a split with labels, so
its ``metrics.csv`` holds the mAP of the evaluated epochs and its ``train.log`` the
starting model's), the candidate models are the ones the run kept: the starting model
(``model_selected.pt`` when the run selected its start, else rebuilt from the run's
``model:`` config after seeding as the trainer does, so a random head is the run's
own), ``model_selected.pt``, ``model_best.pt`` and ``checkpoint_last.pt``. Folders that
are not such runs (no ``metrics.csv``, or no start score in ``train.log``) are skipped.
Each candidate's train-split features are scored by every
criterion of :data:`CRITERIA` (below); per run the criterion's choice is its
highest-scoring candidate, and the table reports the mAP that choice gets against
"always the last epoch", "always the start" and the best candidate (an oracle that
needs labels). Use it on validation runs only: a criterion chosen on a test split's
mAP is chosen on the test split.

``--logged`` compares from the runs' own logs instead, without loading a model: the
candidates are every model the trainer scored (``selection.json``: the start and every
``select_every`` epochs, each with its cluster quality under the run's own clustering
settings and its pseudo-label agreement with the candidate before), each with the mAP
``metrics.csv`` gives it (so train with ``eval.every`` equal to ``select_every``).

    .venv/bin/python scripts/checkpoint_criteria.py runs/val/ft/sup2_s0 runs/val/ft/aff2_s0 ...
        [--json OUT.json] [--logged]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reid.checkpoint import load_encoder  # noqa: E402
from reid.data import load_dataset  # noqa: E402
from reid.models import build_model  # noqa: E402
from reid.preprocess import PreprocessConfig  # noqa: E402
from trainer.clustering import ClusteringParams  # noqa: E402
from trainer.config import read_yaml  # noqa: E402
from trainer.engine import seed_everything  # noqa: E402
from trainer.features import extract_features  # noqa: E402
from trainer.selection import SELECTION_LOG, clustered_quality  # noqa: E402

START_MAP = re.compile(r"before training: mAP ([0-9.]+)%")
CANDIDATES = {
    "selected": "model_selected.pt",
    "best": "model_best.pt",
    "last": "checkpoint_last.pt",
}


def scaled_k1(n: int, ceiling: int = 30) -> int:
    """A k-reciprocal neighbourhood that follows the set's size: ``sqrt(n)``, in
    ``[6, ceiling]`` (30, the Market-1501 value, from ~900 images up)."""
    return int(min(ceiling, max(6, round(n**0.5))))


def cross_camera_share(labels: np.ndarray, cameras: np.ndarray) -> float:
    """Share of all samples that sit in a cluster spanning two or more cameras."""
    labels, cameras = np.asarray(labels), np.asarray(cameras)
    kept = labels >= 0
    if not kept.any():
        return 0.0
    pairs = np.unique(np.stack([labels[kept], cameras[kept]]), axis=1)  # (cluster, camera)
    spans = np.bincount(pairs[0], minlength=int(labels.max()) + 1)  # cameras per cluster
    return float((spans[labels[kept]] >= 2).sum() / labels.size)


def knn_cross_camera(features: np.ndarray, cameras: np.ndarray, k: int = 5) -> float:
    """Mean share of each sample's ``k`` nearest neighbours (cosine) from another camera,
    over the share a random neighbour would have (1: camera-blind; below: camera-bound)."""
    feats = np.asarray(features, np.float32)
    cameras = np.asarray(cameras)
    n = len(feats)
    k = min(k, n - 1)
    if k < 1:
        return 0.0
    sims = feats @ feats.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    other = (cameras[nearest] != cameras[:, None]).mean()
    _, counts = np.unique(cameras, return_counts=True)
    chance = 1.0 - float(((counts / n) ** 2).sum())
    return float(other / chance) if chance > 0 else 0.0


def score_features(features: np.ndarray, cameras: np.ndarray) -> dict[str, float]:
    """Every criterion of :data:`CRITERIA` on one model's train features."""
    feats = np.asarray(features, np.float32)
    out: dict[str, float] = {}
    for suffix, params in (
        ("", ClusteringParams()),
        ("_k1_scaled", ClusteringParams(k1=scaled_k1(len(feats)))),
    ):
        labels, quality = clustered_quality(feats, params)
        share = cross_camera_share(labels, cameras) / max(quality.clustered, 1e-12)
        out["cluster_quality" + suffix] = quality.score
        out["cross_camera_quality" + suffix] = quality.score * share
    mix = knn_cross_camera(feats, cameras)
    out["knn_cross_camera"] = mix
    out["quality_x_knn_cross_camera"] = out["cluster_quality"] * mix
    return out


CRITERIA = (
    "cluster_quality",
    "cluster_quality_k1_scaled",
    "cross_camera_quality",
    "cross_camera_quality_k1_scaled",
    "knn_cross_camera",
    "quality_x_knn_cross_camera",
)
"""The label-free scores :func:`score_features` computes; ``cluster_quality`` is the
trainer's own (``trainer.selection``), here with the default clustering settings."""


LOGGED_CRITERIA = ("logged_cluster_quality", "agreement", "quality_x_agreement")
"""The scores :func:`logged_run` reads from a run's ``selection.json``: the trainer's
cluster quality (the run's own clustering settings), the adjusted Rand index of the
candidate's pseudo-labels with the previous candidate's (none for the start), and their
product."""


def logged_run(run: Path) -> dict:
    """Every candidate the trainer scored, with its logged scores and its mAP."""
    config = read_yaml(run / "config.yaml")
    log = json.loads((run / SELECTION_LOG).read_text())
    maps = epoch_maps(run)
    selected = log.get("selected", {}).get("epoch")
    rows = []
    for cand in log["candidates"]:
        agreement = cand.get("agreement")
        scores = {
            "logged_cluster_quality": cand["score"],
            "agreement": agreement,
            "quality_x_agreement": None if agreement is None else cand["score"] * agreement,
        }
        name = "selected" if cand["epoch"] == selected else "scored"
        rows.append({"name": name, "epoch": cand["epoch"], "mAP": maps.get(cand["epoch"]),
                     "scores": scores})  # fmt: skip
    return {"run": str(run), "method": config["method"]["name"], "candidates": rows}


def epoch_maps(run: Path) -> dict[int, float]:
    """Epoch -> mAP (%) of every evaluated epoch, and 0 -> the starting model's."""
    maps: dict[int, float] = {}
    found = START_MAP.search((run / "train.log").read_text())
    if found:
        maps[0] = float(found.group(1))
    with open(run / "metrics.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("mAP"):
                maps[int(row["epoch"])] = 100 * float(row["mAP"])
    return maps


def is_scored_run(run: Path) -> bool:
    """A run folder this comparison can use: evaluated epochs and a scored start."""
    log, metrics = run / "train.log", run / "metrics.csv"
    if not (run.is_dir() and log.exists() and metrics.exists() and (run / "config.yaml").exists()):
        return False
    return START_MAP.search(log.read_text()) is not None


def candidates(run: Path, device: torch.device) -> list[tuple[str, int, torch.nn.Module, dict]]:
    """``(name, epoch, encoder, metadata)`` for the start and each kept checkpoint."""
    kept = []  # (name, epoch, encoder, metadata) of each checkpoint file the run has
    for name, file in CANDIDATES.items():
        if (run / file).exists():
            encoder, metadata = load_encoder(run / file, device)
            epoch = int(metadata.get("epoch") or 0)
            if name == "selected":
                epoch = int(metadata.get("selection", {}).get("epoch", epoch))
            kept.append((name, epoch, encoder.eval(), metadata))
    starts = [("start", 0, *rest) for _, epoch, *rest in kept if epoch == 0]  # its own start
    if not starts:
        model = read_yaml(run / "config.yaml")
        seed_everything(int(model["train"].get("seed", 0)))  # the trainer's order
        start = build_model(model["model"]["name"], **model["model"].get("kwargs", {}))
        starts = [("start", 0, start.to(device).eval(), start.metadata())]
    out, seen = starts[:1], {0}
    for candidate in kept:
        if candidate[1] not in seen:
            seen.add(candidate[1])
            out.append(candidate)
    return out


def score_run(run: Path, device: torch.device) -> dict:
    config = read_yaml(run / "config.yaml")
    dataset = load_dataset(config["data"]["spec"])
    records = list(dataset.train)
    cameras = torch.tensor([r.camid for r in records]).numpy()
    maps = epoch_maps(run)
    rows = []
    for name, epoch, encoder, metadata in candidates(run, device):
        feats = extract_features(
            encoder, records, PreprocessConfig.from_dict(metadata["preprocess"]), device
        )
        scores = score_features(feats.numpy(), cameras)
        rows.append({"name": name, "epoch": epoch, "mAP": maps.get(epoch), "scores": scores})
        print(f"{run.name} {name:8s} epoch {epoch:2d} mAP {maps.get(epoch)} "
              + " ".join(f"{k} {v:.4f}" for k, v in scores.items()), flush=True)  # fmt: skip
    return {"run": str(run), "method": config["method"]["name"], "candidates": rows}


def summarise(results: list[dict], criteria: tuple[str, ...] = CRITERIA) -> str:
    """Mean mAP of each criterion's choice over the runs, beside last / start / oracle;
    a candidate a criterion cannot score (``None``: the start's agreement) is never its
    choice unless nothing else is scored."""
    usable = [r for r in results if all(c["mAP"] is not None for c in r["candidates"])]
    lines = [
        f"{len(usable)} runs with every candidate's mAP known",
        "| choice | mean mAP of the chosen model | runs >= last | runs >= start |",
        "|---|---:|---:|---:|",
    ]

    def pick_last(cands: list[dict]) -> dict:
        return max(cands, key=lambda c: c["epoch"])

    def pick_start(cands: list[dict]) -> dict:
        return min(cands, key=lambda c: c["epoch"])

    def pick_oracle(cands: list[dict]) -> dict:
        return max(cands, key=lambda c: c["mAP"])

    def pick_own(cands: list[dict]) -> dict:  # the run's model_selected.pt (start if it chose it)
        named = [c for c in cands if c["name"] == "selected"]
        return named[0] if named else pick_start(cands)

    pickers = {
        "last epoch": pick_last,
        "start": pick_start,
        "oracle (labels)": pick_oracle,
        "the run's own model_selected.pt": pick_own,
    }

    def by_score(name: str):
        def key(cand: dict) -> tuple[bool, float]:
            value = cand["scores"][name]
            return value is not None, -np.inf if value is None else value

        return lambda cands: max(cands, key=key)

    for name in criteria:
        pickers[name] = by_score(name)
    for label, pick in pickers.items():
        chosen = [pick(r["candidates"]) for r in usable]
        last = [pick_last(r["candidates"]) for r in usable]
        start = [pick_start(r["candidates"]) for r in usable]
        mean = statistics.fmean(c["mAP"] for c in chosen) if chosen else float("nan")
        vs_last = sum(c["mAP"] >= e["mAP"] for c, e in zip(chosen, last, strict=True))
        vs_start = sum(c["mAP"] >= s["mAP"] for c, s in zip(chosen, start, strict=True))
        lines.append(f"| {label} | {mean:.1f} | {vs_last} | {vs_start} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="write every candidate's scores here")
    parser.add_argument(
        "--logged", action="store_true",
        help="compare the trainer's logged candidates (selection.json) instead of re-scoring "
        "the kept checkpoints",
    )  # fmt: skip
    args = parser.parse_args(argv)
    needs = "metrics.csv, a start score" + (f" and {SELECTION_LOG}" if args.logged else "")
    runs = [
        run for run in args.runs
        if is_scored_run(run) and (not args.logged or (run / SELECTION_LOG).exists())
    ]  # fmt: skip
    for run in sorted(set(args.runs) - set(runs)):
        print(f"skipped {run}: not a run with {needs}", flush=True)
    if args.logged:
        results = [logged_run(run) for run in runs]
    else:
        torch.set_num_threads(2)
        results = [score_run(run, torch.device("cpu")) for run in runs]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(summarise(results, LOGGED_CRITERIA if args.logged else CRITERIA))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
