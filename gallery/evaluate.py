"""Evaluate a dataset through the served search API and compare with the offline numbers.

1. Every gallery image of the dataset is uploaded (raw file bytes, with its camera,
   timestamp and source path as metadata); the returned ids map back to gallery rows.
2. Every query image is searched, by default with ``full_ranking=true``; a score
   (cosine) becomes the distance ``1 - score``. Gallery entries that are not ours
   (already on the server) are ignored, entries not returned get distance ``inf``.
3. CMC / mAP / mINP come from :func:`reid.metrics.evaluate_rank`, so the protocol is
   exactly the offline one. In the top-k mode (``k``) an entry that was not returned
   counts as not retrieved (``inf_is_missed``): AP@k adds nothing for a match beyond
   rank k but still counts it in its denominator (a lower bound of AP), INP@k is 0
   unless every match was returned, CMC is exact up to the returned depth.
4. Per camera pair (:func:`camera_pairs`): for a query camera ``q`` and a gallery camera
   ``g != q``, the queries seen by ``q`` ranked over the gallery entries seen by ``g``
   only (the served distance matrix restricted to those columns, the ranking a search
   with a camera filter ``g`` returns), evaluated with the same protocol; a query whose
   identity ``g`` never saw has no valid match there and is skipped.
5. The offline reference embeds the same files with the same export and runtime
   (:func:`reid.metrics.evaluate_features`); the served numbers must match within
   :data:`TOLERANCE`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from reid.data.base import ImageRecord, ReIDDataset, label_arrays
from reid.metrics import (
    QueryScores,
    RankResult,
    evaluate_features,
    evaluate_rank,
    pairwise_distance,
    per_query_scores,
    truncate_distmat,
)
from reid.preprocess import PreprocessConfig, decode_image_bytes, preprocess_batch
from reid_client import ReIDClient, ReIDGrpcClient
from reid_client.schemas import (
    DeleteManyResponse,
    EntryMetadataIn,
    SearchParams,
    SearchResponse,
)

TOLERANCE = 1e-4
MAX_RANK = 50
DELETE_BATCH = 1000  # ids per delete request (the API takes up to 10,000)


class SearchBackend(Protocol):
    """What the harness needs from a server: the typed client's methods it calls.

    :class:`reid_client.ReIDClient` is one; :class:`GrpcQueries` sends the searches over
    gRPC instead.
    """

    def add(self, images: Sequence[bytes], metadata: Sequence[EntryMetadataIn]) -> list[int]: ...

    def search(self, images: Sequence[bytes], params: SearchParams) -> SearchResponse: ...

    def delete(self, ids: Sequence[int]) -> DeleteManyResponse: ...


class GrpcQueries:
    """A :class:`SearchBackend`: searches over gRPC, gallery adds and deletes over HTTP."""

    def __init__(self, http: ReIDClient, grpc: ReIDGrpcClient) -> None:
        self.http = http
        self.grpc = grpc

    def add(self, images: Sequence[bytes], metadata: Sequence[EntryMetadataIn]) -> list[int]:
        return self.http.add(images, metadata)

    def search(self, images: Sequence[bytes], params: SearchParams) -> SearchResponse:
        return self.grpc.search(images, params)

    def delete(self, ids: Sequence[int]) -> DeleteManyResponse:
        return self.http.delete(ids)


class Embedder(Protocol):
    """An opened export: ``reid.runtimes.Runtime`` or anything with the same two members."""

    manifest: Any  # needs ``.preprocess`` (a PreprocessConfig)

    def embed(self, images: np.ndarray) -> np.ndarray: ...


@dataclass
class ServedRankings:
    """What the server returned, as a ``[Q, G]`` distance matrix over the dataset gallery."""

    distmat: np.ndarray
    gallery_ids: list[int]
    foreign_matches: int = 0
    """Returned entries that are not part of this dataset's upload (ignored)."""
    seconds_upload: float = 0.0
    seconds_search: float = 0.0


@dataclass
class Evaluation:
    """Served and offline results of one run; ``passed`` when within :data:`TOLERANCE`."""

    mode: str  # "full" or "top-k"
    k: int | None
    served: RankResult
    offline: RankResult | None = None
    offline_full: RankResult | None = None
    """Top-k mode: the offline full-ranking numbers (what truncation costs)."""
    diff: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rankings: ServedRankings | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def max_diff(self) -> float | None:
        return max(self.diff.values()) if self.diff else None

    @property
    def passed(self) -> bool:
        """True without an offline reference (nothing to compare), else the tolerance check."""
        return self.max_diff is None or self.max_diff <= TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: modes, the three result sets, diffs, notes, timings."""
        out: dict[str, Any] = {
            "mode": self.mode,
            "k": self.k,
            "served": result_dict(self.served),
            "offline": result_dict(self.offline) if self.offline else None,
            "diff": dict(self.diff),
            "max_diff": self.max_diff,
            "tolerance": TOLERANCE,
            "passed": self.passed,
            "notes": list(self.notes),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }
        if self.offline_full is not None:
            out["offline_full_ranking"] = result_dict(self.offline_full)
        return out


def result_dict(result: RankResult) -> dict[str, Any]:
    """``RankResult.as_dict()`` plus the whole CMC curve."""
    return {**result.as_dict(), "cmc": [float(v) for v in result.cmc]}


def compare(served: RankResult, offline: RankResult) -> dict[str, float]:
    """Absolute differences: ``mAP``, ``mINP`` and the largest over all CMC ranks."""
    return {
        "mAP": abs(served.mAP - offline.mAP),
        "mINP": abs(served.mINP - offline.mINP),
        "cmc_max": float(np.max(np.abs(served.cmc - offline.cmc))),
    }


# ----------------------------------------------------------------------------- breakdowns


@dataclass(frozen=True)
class CameraPair:
    """Rank-1 / mAP of the queries of ``query_camera`` over the gallery of ``gallery_camera``.

    ``gallery_camera`` ``None`` is the whole gallery (the query camera's overall row);
    ``result`` is ``None`` when no query of the camera has a match in that gallery part.
    """

    query_camera: int
    gallery_camera: int | None
    num_queries: int
    result: RankResult | None


def camera_pairs(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    *,
    inf_is_missed: bool = False,
    max_rank: int = 1,
) -> list[CameraPair]:
    """Every (query camera, gallery camera != query camera) pair, plus each query camera
    over the whole gallery (``gallery_camera=None``); see the module doc, item 4."""
    q_pids, q_camids = np.asarray(q_pids), np.asarray(q_camids)
    g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
    pairs = []
    for q_cam in np.unique(q_camids):
        rows = np.flatnonzero(q_camids == q_cam)
        parts = [(None, np.arange(len(g_camids)))]
        others = [g for g in np.unique(g_camids) if g != q_cam]
        parts += [(int(g), np.flatnonzero(g_camids == g)) for g in others]
        for g_cam, cols in parts:
            try:
                result = evaluate_rank(
                    distmat[np.ix_(rows, cols)],
                    q_pids[rows],
                    g_pids[cols],
                    q_camids[rows],
                    g_camids[cols],
                    max_rank,
                    inf_is_missed=inf_is_missed,
                )
            except ValueError:  # no query of this camera has a match there
                result = None
            pairs.append(CameraPair(int(q_cam), g_cam, len(rows), result))
    return pairs


@dataclass(frozen=True)
class QueryOutcome:
    """One query's AP, INP and first-match rank in the served ranking."""

    query: int
    ap: float
    inp: float
    first_rank: float  # inf: its first match was not returned


def worst_queries(scores: QueryScores, count: int = 10) -> list[QueryOutcome]:
    """The ``count`` valid queries with the lowest AP, ascending (ties: lower index first)."""
    valid = np.flatnonzero(scores.valid)
    order = valid[np.argsort(scores.ap[valid], kind="stable")][:count]
    return [
        QueryOutcome(int(i), float(scores.ap[i]), float(scores.inp[i]), float(scores.first_rank[i]))
        for i in order
    ]


def _served_ranking(evaluation: Evaluation, dataset: ReIDDataset) -> dict[str, Any]:
    """The served distance matrix and labels of ``evaluation``, as metric keywords."""
    if evaluation.rankings is None:
        raise ValueError("the evaluation holds no served rankings")
    q_pids, q_camids = label_arrays(dataset.query)
    g_pids, g_camids = label_arrays(dataset.gallery)
    return {
        "distmat": evaluation.rankings.distmat,
        "q_pids": q_pids,
        "g_pids": g_pids,
        "q_camids": q_camids,
        "g_camids": g_camids,
        "inf_is_missed": evaluation.k is not None,
    }


def served_query_scores(evaluation: Evaluation, dataset: ReIDDataset) -> QueryScores:
    """Per-query AP / INP / first-match rank of the served ranking of ``evaluation``."""
    return per_query_scores(**_served_ranking(evaluation, dataset))


def served_camera_pairs(evaluation: Evaluation, dataset: ReIDDataset) -> list[CameraPair]:
    """:func:`camera_pairs` of the served ranking of ``evaluation``."""
    return camera_pairs(**_served_ranking(evaluation, dataset))


# ----------------------------------------------------------------------------- served side


def read_bytes(records: Sequence[ImageRecord]) -> list[bytes]:
    """The raw file bytes (uploaded as-is: the server decodes exactly what offline decodes)."""
    return [r.path.read_bytes() for r in records]


def gallery_metadata(record: ImageRecord) -> EntryMetadataIn:
    """Per-image metadata for ``POST /v1/gallery``; labels ride along in ``extra``."""
    return EntryMetadataIn(
        camera=record.camid,
        source=str(record.path),
        timestamp=record.timestamp,
        extra={"pid": record.pid, "frame": record.frame},
    )


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def _progress(batches: list[range], desc: str, enabled: bool) -> tqdm:
    """A progress bar on a terminal (tqdm switches itself off when stderr is not one)."""
    return tqdm(batches, desc=desc, disable=None if enabled else True)


def upload_gallery(
    backend: SearchBackend,
    records: Sequence[ImageRecord],
    batch: int,
    progress: bool = True,
    ids: list[int] | None = None,
) -> list[int]:
    """Add every gallery record; returns the server ids in record order.

    ``ids``, when given, is filled as batches succeed (so a failed upload can be undone).
    """
    ids = [] if ids is None else ids
    for rows in _progress(_batches(len(records), batch), "upload gallery", progress):
        chunk = [records[i] for i in rows]
        ids.extend(backend.add(read_bytes(chunk), [gallery_metadata(r) for r in chunk]))
    if len(set(ids)) != len(ids):
        raise RuntimeError("the server returned duplicate gallery ids for distinct images")
    return ids


def search_queries(
    backend: SearchBackend,
    records: Sequence[ImageRecord],
    gallery_ids: Sequence[int],
    *,
    batch: int,
    k: int | None,
    progress: bool = True,
) -> tuple[np.ndarray, int]:
    """Search every query; returns the ``[Q, G]`` distances (``inf``: not returned).

    ``k=None`` asks for the full ranking and raises ``RuntimeError`` when the server
    leaves out any of our gallery entries. The second value counts returned entries
    that are not ours.
    """
    index = {gid: i for i, gid in enumerate(gallery_ids)}
    distmat = np.full((len(records), len(gallery_ids)), np.inf, dtype=np.float64)
    foreign = 0
    params = SearchParams(full_ranking=True) if k is None else SearchParams(k=k)
    for rows in _progress(_batches(len(records), batch), "search queries", progress):
        answer = backend.search(read_bytes([records[i] for i in rows]), params)
        for row, result in zip(rows, answer.results, strict=True):
            for match in result.matches:
                column = index.get(match.id)
                if column is None:
                    foreign += 1
                else:
                    distmat[row, column] = 1.0 - match.score
    if k is None:
        missing = int(np.sum(~np.isfinite(distmat)))
        if missing:
            raise RuntimeError(
                f"full_ranking=true left out {missing} (query, gallery) pairs; the server "
                "must return every gallery entry for the full-ranking evaluation (is "
                "max_full_ranking set on the server?); use --k K for the truncated mode"
            )
    return distmat, foreign


def served_rankings(
    backend: SearchBackend,
    dataset: ReIDDataset,
    *,
    batch: int = 32,
    k: int | None = None,
    keep_gallery: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ServedRankings:
    """Upload the gallery, search every query, and (unless ``keep_gallery``) delete it again."""
    t0 = t1 = time.perf_counter()
    gallery_ids: list[int] = []
    try:
        upload_gallery(backend, dataset.gallery, batch, progress, ids=gallery_ids)
        t1 = time.perf_counter()
        distmat, foreign = search_queries(
            backend, dataset.query, gallery_ids, batch=batch, k=k, progress=progress
        )
    finally:
        if gallery_ids and not keep_gallery:
            for rows in _batches(len(gallery_ids), DELETE_BATCH):
                backend.delete(gallery_ids[rows.start : rows.stop])
            log(f"Removed the {len(gallery_ids)} uploaded gallery entries from the server.")
    return ServedRankings(
        distmat,
        gallery_ids,
        foreign,
        seconds_upload=t1 - t0,
        seconds_search=time.perf_counter() - t1,
    )


# ----------------------------------------------------------------------------- offline side


def embed_records(
    model: Embedder, records: Sequence[ImageRecord], batch: int = 64, progress: bool = True
) -> np.ndarray:
    """Embed files exactly as the server does: bytes -> decode -> preprocess -> runtime."""
    config: PreprocessConfig = model.manifest.preprocess
    parts = []
    for rows in _progress(_batches(len(records), batch), "offline embed", progress):
        images = [decode_image_bytes(data) for data in read_bytes([records[i] for i in rows])]
        parts.append(np.asarray(model.embed(preprocess_batch(images, config)), dtype=np.float32))
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def offline_results(
    model: Embedder, dataset: ReIDDataset, k: int | None = None, progress: bool = True
) -> tuple[RankResult, RankResult]:
    """``(same-mode result, full-ranking result)`` of the offline reference.

    With ``k`` the first is the offline ranking truncated to the top ``k`` exactly as
    the server truncates it; without, both are the full-ranking result.
    """
    q_feats = embed_records(model, dataset.query, progress=progress)
    g_feats = embed_records(model, dataset.gallery, progress=progress)
    q_pids, q_camids = label_arrays(dataset.query)
    g_pids, g_camids = label_arrays(dataset.gallery)
    full = evaluate_features(
        q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, metric="cosine", max_rank=MAX_RANK
    )
    if k is None:
        return full, full
    distmat = truncate_distmat(pairwise_distance(q_feats, g_feats, "cosine"), k)
    truncated = evaluate_rank(
        distmat, q_pids, g_pids, q_camids, g_camids, MAX_RANK, inf_is_missed=True
    )
    return truncated, full


# ----------------------------------------------------------------------------- the whole run


def evaluate_served(
    backend: SearchBackend,
    dataset: ReIDDataset,
    *,
    offline_model: Embedder | None = None,
    k: int | None = None,
    batch: int = 32,
    keep_gallery: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Evaluation:
    """Served-path evaluation of ``dataset``; compared with ``offline_model`` when given."""
    if not dataset.has_evaluation_splits:
        raise ValueError(f"dataset {dataset.name} has no query/gallery split to evaluate")
    q_pids, q_camids = label_arrays(dataset.query)
    g_pids, g_camids = label_arrays(dataset.gallery)
    rankings = served_rankings(
        backend, dataset, batch=batch, k=k, keep_gallery=keep_gallery, progress=progress, log=log
    )
    served = evaluate_rank(
        rankings.distmat, q_pids, g_pids, q_camids, g_camids, MAX_RANK, inf_is_missed=k is not None
    )
    evaluation = Evaluation(
        mode="full" if k is None else "top-k",
        k=k,
        served=served,
        rankings=rankings,
        timings={"upload": rankings.seconds_upload, "search": rankings.seconds_search},
    )
    if rankings.foreign_matches:
        evaluation.notes.append(
            f"{rankings.foreign_matches} returned matches were gallery entries already on the "
            "server (not from this dataset); they were ignored"
            + (" but took slots of the top k" if k is not None else "")
        )
    if k is not None:
        evaluation.notes.append(truncation_note(k))
    if offline_model is not None:
        add_offline_reference(evaluation, offline_model, dataset, progress)
    return evaluation


def add_offline_reference(
    evaluation: Evaluation, model: Embedder, dataset: ReIDDataset, progress: bool = True
) -> None:
    """Fill ``offline``, ``offline_full`` (top-k mode only) and ``diff`` of ``evaluation``."""
    t0 = time.perf_counter()
    k = evaluation.k
    same_mode, full = offline_results(model, dataset, k, progress)
    evaluation.timings["offline"] = time.perf_counter() - t0
    evaluation.offline = same_mode
    evaluation.diff = compare(evaluation.served, same_mode)
    if k is not None:
        evaluation.offline_full = full
        evaluation.notes.append(
            f"mAP@{k} served {100 * evaluation.served.mAP:.2f}%, offline with the same "
            f"truncation {100 * same_mode.mAP:.2f}%, offline full ranking "
            f"{100 * full.mAP:.2f}% (truncation costs {100 * (full.mAP - same_mode.mAP):.2f} "
            "points)"
        )


def truncation_note(k: int) -> str:
    """One sentence on what top-k truncation does to the metrics (see the module doc)."""
    return (
        f"truncated ranking (top {k} per query): matches beyond rank {k} count as not "
        f"retrieved, so mAP@{k} and mINP@{k} are lower bounds of the full-ranking values "
        f"(equal when every match is within the top {k}); CMC is exact up to rank {k} minus "
        "the removed same-camera/junk items in the list"
    )
