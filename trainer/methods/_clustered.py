"""What every clustering-based method shares: pseudo-labels each epoch, memory init.

``ClusteredMethod.prepare_epoch`` clusters the epoch's train features once (under
DDP through ``context.run_once``: rank 0 computes, every rank gets the result),
keeps the labels in a buffer (so checkpoints carry them) and lets the subclass
initialise its memories from the same features. An epoch where DBSCAN finds no
cluster gives an all ``-1`` plan with its statistics; the loop then keeps the
previous epoch's labels and method state, or skips the epoch (``trainer.engine``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from pydantic import Field
from torch import Tensor, nn

from trainer.clustering import ClusteringParams, ClusterResult, cluster_pseudo_labels
from trainer.logging_utils import get_logger
from trainer.methods.base import EpochContext, EpochPlan, Method, TrainInfo

__all__ = ["ClusterParams", "ClusteredMethod", "gather_batch"]


class ClusterParams(ClusteringParams):
    """Clustering and cluster-memory settings common to the clustering methods.

    ``eps``/``min_samples``/``k1``/``k2``: DBSCAN on the k-reciprocal Jaccard distance,
    ``jaccard`` (sparse radius graph, the default, or the dense matrix) and ``knn``
    (auto/exact/approximate neighbour search) (``trainer.clustering.ClusteringParams``);
    ``temperature``: InfoNCE temperature;
    ``momentum``: memory update ``m * old + (1 - m) * new`` (cluster-contrast uses
    0.1 to 0.2).
    """

    temperature: float = Field(0.05, gt=0)
    momentum: float = Field(0.1, ge=0, le=1)


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

    def __init__(self, encoder: nn.Module, params: ClusterParams, info: TrainInfo) -> None:
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

        def compute() -> ClusterResult:
            return cluster_pseudo_labels(features, self.params)

        result: ClusterResult = context.run_once(compute)
        if result.eps_scores:
            scores = " ".join(f"{eps:g}: {score:.3f}" for eps, score in result.eps_scores.items())
            get_logger().info(
                f"DBSCAN eps {result.eps:g} chosen from the data (label-free quality by radius, "
                f"-1 = one cluster holds half the samples: {scores})"
            )
        self.pseudo_labels.copy_(torch.from_numpy(result.labels))
        memory_feats = features.to(self.pseudo_labels.device, torch.float32)
        self.init_memories(memory_feats, self.pseudo_labels, result.num_clusters)
        return EpochPlan(labels=result.labels, stats=result.stats())

    @staticmethod
    def target(batch: dict[str, dict[str, Tensor]]) -> tuple[Tensor, Tensor]:
        """The target stream's images and (pseudo-)labels."""
        stream = batch["target"]
        return stream["image"], stream["label"].long()
