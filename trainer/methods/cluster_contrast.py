"""``cluster_contrast``: the cluster-contrast baseline (Dai et al., ACCV 2022).

Per epoch: DBSCAN pseudo-labels and a cluster memory initialised from the cluster
means (``ClusteredMethod``). Per step: InfoNCE of the L2-normalised BN-neck
embedding (``TrainOutput.embedding``, the cluster-contrast training feature)
against every cluster slot, temperature 0.05; after the optimiser step each batch
cluster's slot moves to its batch mean with momentum (explicit, in ``after_step``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from trainer.losses import info_nce_over_memory
from trainer.memory import ClusterMemory
from trainer.methods._clustered import ClusteredMethod, ClusterParams, gather_batch
from trainer.methods.base import StepOutput, TrainInfo, register_method

__all__ = ["ClusterContrast", "ClusterContrastParams"]


class ClusterContrastParams(ClusterParams):
    """Cluster-contrast settings: only the shared clustering / memory ones."""


@register_method
class ClusterContrast(ClusteredMethod):
    """InfoNCE against a momentum-updated cluster-centroid memory."""

    name = "cluster_contrast"
    params_cls = ClusterContrastParams

    def __init__(self, encoder: nn.Module, params: ClusterContrastParams, info: TrainInfo) -> None:
        super().__init__(encoder, params, info)
        self.memory = ClusterMemory(info.embedding_dim, params.momentum)

    def init_memories(self, features: Tensor, labels: Tensor, num_clusters: int) -> None:
        self.memory.init_from(features, labels, num_clusters)

    def training_step(self, batch: dict[str, dict[str, Tensor]]) -> StepOutput:
        images, labels = self.target(batch)
        feats = self.encoder.forward_train(images).embedding
        loss = info_nce_over_memory(feats, labels, self.memory.features, self.params.temperature)
        return StepOutput(losses={"contrast": loss}, features=feats)

    @torch.no_grad()
    def after_step(self, batch: dict[str, dict[str, Tensor]], output: StepOutput) -> None:
        if output.features is None:
            return
        feats = output.features.detach()
        labels = batch["target"]["label"].to(feats.device).long()
        feats, labels = gather_batch(feats, labels)
        self.memory.update(feats, labels)
