"""``aff_scl``: symmetric contrast learning on the AFF encoder (AFF_SCL).

From Wu, Yang and Wang, "Unsupervised Person Re-Identification with Attention-Guided
Fine-Grained Features and Symmetric Contrast Learning" (Sensors 2022); equation
numbers below are that paper's.

Two memories per pseudo-identity (``trainer.memory``):

* mean memory ``c_i``: momentum update with the batch cluster mean (eq. (10));
* hard memory ``h_i``: momentum update with the batch instance least similar to
  ``c_i`` (eqs. (12)-(13)).

Losses (eq. (8)): ``L = w_hard * L_hard + w_mean * L_mean + L_b`` with ``L_mean`` /
``L_hard`` the InfoNCE of the embedding against the mean / hard slots (eqs. (9),
(11)), ``L_b`` the balance loss (eq. (14), ``trainer.losses.balance_loss``) and
``(w_hard, w_mean) = (0.75, 0.25)``. The ablation switch ``memories``:

* ``both``: the full loss above;
* ``mean``: ``L_mean`` alone (weight 1; the cluster-contrast loss);
* ``hard``: ``L_hard`` alone (weight 1; the mean memory is still kept, as the
  centre that picks the hard samples).

The encoder is whatever the config's ``model.name`` builds; the paper's is
``aff_resnet50`` (``aff_mobilenetv2`` / ``aff_resnet18`` for CPU runs).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from trainer.losses import balance_loss, info_nce_over_memory
from trainer.memory import ClusterMemory, HardSampleMemory
from trainer.methods._clustered import ClusteredMethod, ClusterParams, gather_batch
from trainer.methods.base import StepOutput, TrainInfo, register_method

__all__ = ["AffScl", "AffSclParams"]


class AffSclParams(ClusterParams):
    """AFF_SCL settings (defaults: the paper's, except ``eps``: chosen from the data by
    default, the paper's radii in the Market (0.65) and Duke (0.7) configs).

    ``memories``: ``mean`` | ``hard`` | ``both`` (the ablation); ``w_hard``/``w_mean``:
    eq. (8)'s lambda_1/lambda_2 (used with ``both``); ``balance_weight``: factor on
    ``L_b`` (1 in the paper); ``balance_alpha``/``balance_gamma``: eq. (14).
    """

    memories: Literal["mean", "hard", "both"] = "both"
    w_hard: float = Field(0.75, ge=0)
    w_mean: float = Field(0.25, ge=0)
    balance_weight: float = Field(1.0, ge=0)
    balance_alpha: float = Field(0.9, gt=0)
    balance_gamma: float = Field(1.5, gt=0)


@register_method
class AffScl(ClusteredMethod):
    """Symmetric contrast learning: mean memory + hard-sample memory + balance loss."""

    name = "aff_scl"
    params_cls = AffSclParams

    def __init__(self, encoder: nn.Module, params: AffSclParams, info: TrainInfo) -> None:
        super().__init__(encoder, params, info)
        self.mean_memory = ClusterMemory(info.embedding_dim, params.momentum, "batch_mean")
        self.hard_memory = HardSampleMemory(info.embedding_dim, params.momentum)

    def init_memories(self, features: Tensor, labels: Tensor, num_clusters: int) -> None:
        self.mean_memory.init_from(features, labels, num_clusters)
        self.hard_memory.init_from(features, labels, num_clusters)

    def training_step(self, batch: dict[str, dict[str, Tensor]]) -> StepOutput:
        images, labels = self.target(batch)
        feats = self.encoder.forward_train(images).embedding
        p, mode = self.params, self.params.memories
        mean_slots, hard_slots = self.mean_memory.features, self.hard_memory.features
        losses: dict[str, Tensor] = {}
        if mode in ("mean", "both"):
            weight = p.w_mean if mode == "both" else 1.0
            losses["mean"] = weight * info_nce_over_memory(feats, labels, mean_slots, p.temperature)
        if mode in ("hard", "both"):
            weight = p.w_hard if mode == "both" else 1.0
            losses["hard"] = weight * info_nce_over_memory(feats, labels, hard_slots, p.temperature)
        if mode == "both" and p.balance_weight > 0:
            balance = balance_loss(
                feats,
                labels,
                mean_slots,
                hard_slots,
                alpha=p.balance_alpha,
                gamma=p.balance_gamma,
            )
            losses["balance"] = p.balance_weight * balance
        return StepOutput(losses=losses, features=feats)

    @torch.no_grad()
    def after_step(self, batch: dict[str, dict[str, Tensor]], output: StepOutput) -> None:
        if output.features is None:
            return
        feats = output.features.detach()
        labels = batch["target"]["label"].to(feats.device).long()
        feats, labels = gather_batch(feats, labels)
        # Hard samples are picked against the centres the step used (before their update).
        self.hard_memory.update(feats, labels, self.mean_memory.features)
        self.mean_memory.update(feats, labels)
