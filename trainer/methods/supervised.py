"""``supervised``: identity cross-entropy + batch-hard triplet on the true labels.

The strong re-ID baseline (Luo et al., "Bag of Tricks"): a bias-free linear
classifier owned by the method on the BN-neck feature, trained with label-smoothed
cross-entropy (epsilon 0.1), plus a batch-hard triplet loss (margin 0.3) on the
pre-neck global feature. It is the upper bound of the unsupervised comparisons and
the reference-set pre-training later methods start from. Needs a labelled train
split (``TrainInfo.num_classes``) and no train-set features.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from trainer.config import Params
from trainer.losses import batch_hard_triplet, cross_entropy_label_smooth
from trainer.methods.base import (
    EpochContext,
    EpochPlan,
    Method,
    StepOutput,
    TrainInfo,
    register_method,
)

__all__ = ["Supervised", "SupervisedParams"]


class SupervisedParams(Params):
    """Loss settings. ``triplet_margin: null`` uses the soft margin; weight 0 drops a term."""

    label_smoothing: float = Field(0.1, ge=0, lt=1)
    triplet_margin: float | None = Field(0.3, ge=0)
    ce_weight: float = Field(1.0, ge=0)
    triplet_weight: float = Field(1.0, ge=0)


@register_method
class Supervised(Method):
    """ID loss on the BN feature through the method's classifier + triplet on the global one."""

    name = "supervised"
    params_cls = SupervisedParams
    needs_features = False
    needs_labels = True

    def __init__(self, encoder: nn.Module, params: SupervisedParams, info: TrainInfo) -> None:
        super().__init__(encoder, params, info)
        if not info.num_classes:
            raise ValueError(
                "method 'supervised' trains on identity labels, but the train split has none "
                "(unlabeled dataset?); use an unsupervised method such as cluster_contrast"
            )
        self.classifier = nn.Linear(_classifier_dim(encoder), info.num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def prepare_epoch(self, context: EpochContext) -> EpochPlan:
        """The true labels, unchanged every epoch."""
        if context.true_labels is None:
            raise ValueError("method 'supervised' needs the dataset's identity labels")
        labels = context.true_labels
        return EpochPlan(labels=labels, stats={"num_classes": float(labels.max(initial=-1) + 1)})

    def training_step(self, batch: dict[str, dict[str, Tensor]]) -> StepOutput:
        stream = batch["target"]
        labels = stream["label"].long()
        out = self.encoder.forward_train(stream["image"])
        neck = out.bn_feat if out.bn_feat is not None else out.embedding
        p = self.params
        losses: dict[str, Tensor] = {}
        if p.ce_weight:
            logits = self.classifier(neck)
            ce = cross_entropy_label_smooth(logits.float(), labels, p.label_smoothing)
            losses["ce"] = p.ce_weight * ce
        if p.triplet_weight:
            triplet = batch_hard_triplet(out.global_feat.float(), labels, p.triplet_margin)
            losses["triplet"] = p.triplet_weight * triplet
        if not losses:
            raise ValueError("method 'supervised' has both loss weights at 0: nothing to train")
        return StepOutput(losses=losses, features=out.embedding)


def _classifier_dim(encoder: nn.Module) -> int:
    """Width of the classifier input: the BN-neck feature (or the embedding without one).

    Found with one tiny forward in eval mode (no state changes), so any encoder of
    ``reid.models`` works whatever its head.
    """
    height, width = getattr(encoder, "input_size", (256, 128))
    param = next(encoder.parameters())
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            out = encoder.forward_train(torch.zeros(2, 3, height, width, device=param.device))
    finally:
        encoder.train(was_training)
    neck = out.bn_feat if out.bn_feat is not None else out.embedding
    return int(neck.shape[1])
