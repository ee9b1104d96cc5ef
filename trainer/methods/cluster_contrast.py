"""``cluster_contrast``: the cluster-contrast baseline (Dai et al., ACCV 2022).

Per epoch: DBSCAN pseudo-labels and a cluster memory initialised from the cluster
means (``ClusteredMethod``). Per step: InfoNCE of the L2-normalised BN-neck
embedding (``TrainOutput.embedding``, the cluster-contrast training feature)
against every cluster slot, temperature 0.05; after the optimiser step the memory
is updated explicitly (``after_step``): by default as the reference code
(alibaba/cluster-contrast-reid ``cm.py``) does, each batch instance in turn moving
its cluster's slot with momentum (``memory_update: instance``); ``batch_mean`` moves
each batch cluster once, towards its batch mean (our earlier rule, AFF_SCL's).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from reid.models.encoder import TrainOutput
from trainer.losses import info_nce_over_memory
from trainer.memory import ClusterMemory
from trainer.methods._clustered import ClusteredMethod, ClusterParams, gather_batch
from trainer.methods.base import StepOutput, TrainInfo, register_method

__all__ = ["ClusterContrast", "ClusterContrastParams"]


class ClusterContrastParams(ClusterParams):
    """Cluster-contrast settings: the shared clustering / memory ones and the memory rule.

    ``memory_update``: ``instance`` (the reference: per instance, in turn) or
    ``batch_mean`` (once per batch cluster with its batch mean).
    """

    memory_update: Literal["instance", "batch_mean"] = "instance"


@register_method
class ClusterContrast(ClusteredMethod):
    """InfoNCE against a momentum-updated cluster-centroid memory."""

    name = "cluster_contrast"
    params_cls = ClusterContrastParams

    def __init__(self, encoder: nn.Module, params: ClusterContrastParams, info: TrainInfo) -> None:
        super().__init__(encoder, params, info)
        self.memory = ClusterMemory(info.embedding_dim, params.momentum, params.memory_update)

    def init_memories(self, features: Tensor, labels: Tensor, num_clusters: int) -> None:
        self.memory.init_from(features, labels, num_clusters)

    def step_outputs(self, batch: dict[str, dict[str, Tensor]]) -> tuple[TrainOutput, StepOutput]:
        """The encoder's forward pass and the InfoNCE term (subclasses add terms)."""
        images, labels = self.target(batch)
        out = self.encoder.forward_train(images)
        feats = out.embedding
        loss = info_nce_over_memory(feats, labels, self.memory.features, self.params.temperature)
        return out, StepOutput(losses={"contrast": loss}, features=feats)

    def training_step(self, batch: dict[str, dict[str, Tensor]]) -> StepOutput:
        return self.step_outputs(batch)[1]

    @torch.no_grad()
    def after_step(self, batch: dict[str, dict[str, Tensor]], output: StepOutput) -> None:
        if output.features is None:
            return
        feats = output.features.detach()
        labels = batch["target"]["label"].to(feats.device).long()
        feats, labels = gather_batch(feats, labels)
        self.memory.update(feats, labels)
