"""What every clustering-based method shares: pseudo-labels each epoch, memory init.

``ClusteredMethod.prepare_epoch`` clusters the epoch's train features once (under
DDP through ``context.run_once``: rank 0 computes, every rank gets the labels),
keeps the labels in a buffer (so checkpoints carry them) and lets the subclass
initialise its memories from the same features. An epoch where DBSCAN finds no
cluster keeps the previous epoch's labels (memories re-initialised from the new
features) with a warning; with no previous labels it returns an all ``-1`` plan,
which the loop reports and skips.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from trainer.clustering import ClusteringParams, cluster_pseudo_labels
from trainer.methods.base import EpochContext, EpochPlan, Method, TrainInfo

__all__ = ["ClusterParams", "ClusteredMethod", "NoClustersWarning", "gather_batch"]


class NoClustersWarning(RuntimeWarning):
    """DBSCAN found no cluster this epoch (every train image is an outlier)."""


@dataclass
class ClusterParams:
    """Clustering and cluster-memory settings common to the clustering methods.

    ``eps``/``min_samples``/``k1``/``k2``: DBSCAN on the k-reciprocal Jaccard distance;
    ``temperature``: InfoNCE temperature; ``momentum``: memory update
    ``m * old + (1 - m) * new`` (cluster-contrast uses 0.1 to 0.2).
    """

    eps: float = 0.6
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    temperature: float = 0.05
    momentum: float = 0.1

    def __post_init__(self) -> None:
        self.clustering()  # validates
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {self.momentum}")

    def clustering(self) -> ClusteringParams:
        return ClusteringParams(self.eps, self.min_samples, self.k1, self.k2)


def gather_batch(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Under DDP, every rank's batch features and labels (rank order); else the inputs.

    Memory updates use the gathered batch so the memories stay identical on all
    ranks (batches are equally sized: the loader drops the last partial batch).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, labels
    size = dist.get_world_size()
    feats = [torch.empty_like(features) for _ in range(size)]
    labs = [torch.empty_like(labels) for _ in range(size)]
    dist.all_gather(feats, features.contiguous())
    dist.all_gather(labs, labels.contiguous())
    return torch.cat(feats), torch.cat(labs)


class ClusteredMethod(Method):
    """Base of the methods trained on DBSCAN pseudo-labels with cluster memories.

    Subclasses implement :meth:`init_memories`, ``training_step`` and ``after_step``.
    """

    needs_features = True

    def __init__(self, encoder: nn.Module, params: Any, info: TrainInfo) -> None:
        super().__init__(encoder, params, info)
        self.register_buffer("pseudo_labels", torch.full((info.num_train,), -1, dtype=torch.long))

    def init_memories(self, features: Tensor, labels: Tensor, num_clusters: int) -> None:
        """(Re)build the memories for ``num_clusters`` clusters from the epoch features."""
        raise NotImplementedError

    def prepare_epoch(self, context: EpochContext) -> EpochPlan:
        """Cluster the features, keep the labels, initialise the memories."""
        if context.features is None:
            raise ValueError(f"{self.name} needs the train-set features in the EpochContext")
        features = context.features
        params = self.params.clustering()

        def compute() -> np.ndarray:
            return cluster_pseudo_labels(
                features, params.eps, params.min_samples, params.k1, params.k2
            ).labels

        labels = np.asarray(context.run_once(compute), dtype=np.int64)
        if len(labels) != len(features):
            raise ValueError(f"{len(labels)} labels for {len(features)} features")
        stats = {"num_clusters": float(labels.max(initial=-1) + 1)}
        stats["outlier_ratio"] = float((labels < 0).mean()) if len(labels) else 0.0
        if stats["num_clusters"] == 0:
            labels = self._no_clusters(context.epoch)
            stats["kept_previous_labels"] = float(bool((labels >= 0).any()))
        num_clusters = int(labels.max(initial=-1) + 1)
        self.pseudo_labels.copy_(torch.from_numpy(labels))
        memory_feats = features.to(self.pseudo_labels.device, torch.float32)
        self.init_memories(memory_feats, self.pseudo_labels, num_clusters)
        return EpochPlan(labels=labels, stats=stats)

    def _no_clusters(self, epoch: int) -> np.ndarray:
        previous = self.pseudo_labels.cpu().numpy().copy()
        if (previous >= 0).any():
            warnings.warn(
                f"epoch {epoch}: clustering found no cluster (all outliers; eps "
                f"{self.params.eps} too small?); keeping the previous pseudo-labels",
                NoClustersWarning,
                stacklevel=3,
            )
        else:
            warnings.warn(
                f"epoch {epoch}: clustering found no cluster (all outliers; eps "
                f"{self.params.eps} too small?) and there are no previous labels: "
                "nothing to train on this epoch",
                NoClustersWarning,
                stacklevel=3,
            )
        return previous

    @staticmethod
    def target(batch: dict[str, dict[str, Tensor]]) -> tuple[Tensor, Tensor]:
        """The target stream's images and (pseudo-)labels."""
        stream = batch["target"]
        return stream["image"], stream["label"].long()
