"""Choosing the checkpoint without labels: the cluster quality of the train features.

After every ``select_every`` epochs (and before the first, so the starting model is a
candidate too) the train images are embedded and clustered as the clustering methods do
(k-reciprocal Jaccard distance + DBSCAN, with the method's own clustering settings when
it has them, else the Market-1501 defaults); the score is the mean silhouette
coefficient (cosine) over **all** train images, an image DBSCAN leaves out counting 0.
So it rises when more images fall into tight, well-separated groups. The best-scoring
model is kept as ``model_selected.pt`` and ``selection.json`` records every candidate.

Why this score: on the validation split (synthetic data seed 1) it orders the models
as their mAP does across methods and budgets: the ImageNet start 0.040 (7.8 mAP), an
IICS run that ended below its start 0.021 (5.7 mAP), aff_scl at 6 epochs 0.203-0.212
(34.2-38.0 mAP) and at 10 epochs 0.262-0.297 (49.9-54.5 mAP); within a group of runs of
equal budget its order is noisy (docs/RESULTS.md, "Choosing the checkpoint without
labels"). It says nothing about identities the clustering cannot see.

On real crops it is not reliable: on the real-crops validation runs (215 crops) neither
it nor five variants (a neighbourhood scaled to the set size, a cross-camera factor,
nearest neighbours across cameras) picked better checkpoints than "the last epoch", and
none flagged the runs that ended below their start (docs/RESULTS.md, "Choosing the
checkpoint without labels on real crops"; ``scripts/checkpoint_criteria.py`` holds the
variants and compares them). So ``model_selected.pt`` is written beside the last
checkpoint, which stays what is exported.

Each candidate also records ``agreement``: the adjusted Rand index between its
pseudo-labels and the previous candidate's (how stable the clustering has become; an
outlier counts as a cluster of its own), so that criterion can be compared from
``selection.json`` alone. Measured on 18 real-crops validation runs it is logged, not
used: choosing by it lost 0.4 mAP against the last epoch on average (docs/RESULTS.md).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from trainer.checkpoint import save_checkpoint
from trainer.clustering import ClusteringParams, cluster_pseudo_labels, label_free_quality
from trainer.features import extract_features
from trainer.hooks import HookBase
from trainer.logging_utils import get_logger

SELECTED_CHECKPOINT = "model_selected.pt"
SELECTION_LOG = "selection.json"
PREVIOUS_LABELS = "previous_labels"
"""``state.selection`` key of the last candidate's pseudo-labels (kept for ``--resume``)."""


@dataclass(frozen=True)
class ClusterQuality:
    """``score`` = ``silhouette`` x ``clustered`` (outliers count 0); ``eps``: the
    DBSCAN radius the clustering used (chosen from the data with ``eps: auto``)."""

    score: float
    silhouette: float
    clustered: float
    clusters: int
    eps: float
    agreement: float | None = None
    """Adjusted Rand index with the previous candidate's pseudo-labels (None: first)."""

    def as_record(self) -> dict[str, float]:
        record = {"select_score": self.score, "select_clustered": self.clustered}
        if self.agreement is not None:
            record["select_agreement"] = self.agreement
        return record


def label_agreement(first: np.ndarray, second: np.ndarray) -> float:
    """Adjusted Rand index of two pseudo-labellings of the same samples, each outlier
    (``-1``) a cluster of its own: 1 for the same partition, about 0 for unrelated ones."""
    from sklearn.metrics import adjusted_rand_score

    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    if first.shape != second.shape:
        raise ValueError(f"labellings of different sizes: {first.shape} vs {second.shape}")
    return float(adjusted_rand_score(_singletons(first), _singletons(second)))


def _singletons(labels: np.ndarray) -> np.ndarray:
    out = labels.copy()
    outliers = out < 0
    out[outliers] = out.max(initial=-1) + 1 + np.arange(int(outliers.sum()))
    return out


def cluster_quality(
    features: np.ndarray | torch.Tensor, params: ClusteringParams
) -> ClusterQuality:
    """The label-free score of L2-normalised ``[N, D]`` features (see the module doc)."""
    return clustered_quality(features, params)[1]


def clustered_quality(
    features: np.ndarray | torch.Tensor, params: ClusteringParams
) -> tuple[np.ndarray, ClusterQuality]:
    """:func:`cluster_quality` and the pseudo-labels it scored (``-1``: outlier)."""
    feats = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else features
    feats = np.asarray(feats, np.float32)
    result = cluster_pseudo_labels(feats, params)
    quality = label_free_quality(feats, result.labels, params.silhouette_sample)
    score = max(quality.score, 0.0)  # a rejected labelling (one giant cluster) scores 0
    return result.labels, ClusterQuality(
        score, quality.silhouette, quality.clustered, quality.clusters, result.eps
    )


def clustering_params_of(method: object) -> ClusteringParams:
    """The method's own clustering settings when it clusters, else the defaults."""
    params = getattr(method, "params", None)
    if isinstance(params, ClusteringParams):
        return ClusteringParams(
            **{name: getattr(params, name) for name in ClusteringParams.model_fields}
        )
    return ClusteringParams()


class SelectionHook(HookBase):
    """Scores the model every ``every`` epochs and after the last one (and the starting
    model of a fresh run); keeps the best as ``model_selected.pt``. Runs before
    ``LogHook`` so an epoch's row holds ``select_score``."""

    def __init__(self, out_dir: Path, every: int) -> None:
        self.out_dir = Path(out_dir)
        self.every = every

    def _score(self) -> ClusterQuality:
        t = self.trainer
        start = time.perf_counter()
        features = extract_features(
            t.encoder,
            t.records,
            t.preprocess,
            t.device,
            **t.embed_options,
            desc="selection features",
        )
        labels, quality = clustered_quality(features, clustering_params_of(t.method))
        previous = t.state.selection.get(PREVIOUS_LABELS)
        if previous is not None and len(previous) == len(labels):
            quality = replace(quality, agreement=label_agreement(np.asarray(previous), labels))
        t.state.selection[PREVIOUS_LABELS] = labels.tolist()
        t.epoch_record["select_time"] = time.perf_counter() - start
        return quality

    def _offer(self, epoch: int, quality: ClusterQuality) -> None:
        t = self.trainer
        candidates = t.state.selection.setdefault("candidates", [])
        candidates.append({"epoch": epoch, **asdict(quality)})
        best = t.state.selection.get("selected")
        if best is None or quality.score > best["score"]:
            t.state.selection["selected"] = {"epoch": epoch, **asdict(quality)}
            if t.dist.is_main:
                data = t.checkpoint_dict(with_training=False)
                data["metadata"]["selection"] = dict(t.state.selection["selected"])
                save_checkpoint(data, self.out_dir / SELECTED_CHECKPOINT)

    def before_train(self) -> None:
        t = self.trainer
        if self.every <= 0 or t.state.epoch > 0 or t.state.selection:
            return
        record, t.epoch_record = getattr(t, "epoch_record", {}), {}
        quality = self._score()
        t.epoch_record = record
        self._offer(0, quality)
        get_logger().info(f"label-free score of the starting model: {quality.score:.4f}")

    def after_epoch(self) -> None:
        t = self.trainer
        number = t.epoch + 1
        if self.every <= 0 or (number % self.every and number != t.total_epochs):
            return
        quality = self._score()
        t.epoch_record.update(quality.as_record())
        self._offer(number, quality)

    def after_train(self) -> None:
        t = self.trainer
        selected = t.state.selection.get("selected")
        if selected is None or not t.dist.is_main:
            return
        candidates = t.state.selection["candidates"]
        last = candidates[-1]
        why = (
            f"label-free cluster quality {selected['score']:.4f} (silhouette "
            f"{selected['silhouette']:.3f} x clustered {selected['clustered']:.2f}, DBSCAN eps "
            f"{selected.get('eps', float('nan')):.2f}); last "
            f"epoch {last['epoch']}: {last['score']:.4f}"
        )
        if last.get("agreement") is not None:
            why += f", pseudo-label agreement with the candidate before {last['agreement']:.3f}"
        where = "the starting model" if selected["epoch"] == 0 else f"epoch {selected['epoch']}"
        log = get_logger()
        if selected["epoch"] == 0 and len(candidates) > 1:
            log.warning(
                f"selected {where} ({why}): no trained epoch scored above the start; "
                f"{SELECTED_CHECKPOINT} holds the starting weights"
            )
        else:
            log.info(f"selected {where} for {SELECTED_CHECKPOINT}: {why}")
        kept = {key: value for key, value in t.state.selection.items() if key != PREVIOUS_LABELS}
        summary = {"criterion": "cluster_quality", **kept}
        (self.out_dir / SELECTION_LOG).write_text(json.dumps(summary, indent=2) + "\n")
