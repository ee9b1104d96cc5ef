"""``iics``: intra-inter camera similarity (Xuan and Zhang, CVPR 2021).

"Intra-Inter Camera Similarity for Unsupervised Person Re-Identification"; the
reference code is SY-Xuan/IICS (``example/iics.py``, ``reid/cluster_utils/cluster.py``).
A *round* of the reference has two stages; here a round is ``intra_epochs +
inter_epochs`` epochs of the loop, each stage clustering once at its first epoch:

* **intra-camera stage**: each camera's train images are clustered on their own
  (cosine distance -> k-reciprocal re-ranking -> average-linkage agglomerative
  clustering into ``intra_clusters`` clusters; a camera with fewer images than that
  gets half its image count), and one classifier per camera is trained:
  ``L_intra = sum_c CE(W^c f, m)`` over the batch images of camera ``c`` (mean per
  camera, summed over cameras, as the reference's per-camera loaders);
* **inter-camera stage**: the intra-inter camera similarity of two images of
  different cameras adds ``mu * J(p_i, p_j)`` to their cosine similarity, where
  ``p`` concatenates the softmax outputs of every camera's classifier and ``J`` is
  their (soft) Jaccard similarity ``sum min / sum max``; ``mu = mix_rate *
  (1 - round / rounds) ** mix_decay`` (eq. (5), 0.02 and 0.6 in the reference). The
  distance ``1 - sim`` is re-ranked and clustered (average linkage) into
  ``inter_clusters`` global pseudo-identities; a new classifier over them is trained
  with ``CE + a * triplet`` (batch-hard, margin 0.3, a = 1, on the pooled feature).

Each stage starts a fresh classifier (BN without a trained bias, then a bias-free
linear layer, weights ~ N(0, 0.001)) and the loop drops its optimiser state
(``EpochPlan.fresh_parameters``), as the reference builds a new model and optimiser
per stage. The reference trains the intra stage at half the inter stage's learning
rate (5e-3 vs 1e-2 for new layers, the backbone at 0.1x); with SGD, scaling the
intra loss by ``intra_loss_scale`` = 0.5 is the same step.

Deviations, ours: the classifiers read the L2-normalised inference embedding (the
loop's clustering feature, so the inter stage can score every train image from the
features the loop extracts), not the reference's pooled feature; the intra stage
shares one BN across the camera classifiers and draws P x K batches over the camera
clusters instead of 8 random images per camera; the re-ranked matrix is symmetrised
before clustering (the reference's clustering reads its upper triangle). The
reference's AIBN normalisation layers are not part of this method (they belong to
the backbone).
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from sklearn.cluster import AgglomerativeClustering
from torch import Tensor, nn

from reid.models.encoder import TrainOutput
from reid.rerank import re_rank_distance
from trainer.clustering import relabel
from trainer.config import Params
from trainer.losses import batch_hard_triplet
from trainer.methods.base import (
    EpochContext,
    EpochPlan,
    Method,
    StepOutput,
    TrainInfo,
    check_camera_ids,
    register_method,
)

__all__ = [
    "Iics",
    "IicsParams",
    "cluster_distance",
    "distribution_jaccard",
    "intra_inter_distance",
]

_JACCARD_CELLS = 1 << 24  # float32 cells of one block of the distribution Jaccard (64 MB)


class IicsParams(Params):
    """IICS settings (reference defaults; the Market-1501 values of SY-Xuan/IICS).

    ``intra_clusters``: clusters per camera; ``inter_clusters``: global clusters; each
    a count (the reference's Market-1501 values, 600 and 800, are in
    ``iics_market1501.yaml``) or ``auto``, the default: sized from the train set with
    the reference's images per cluster on Market-1501 (``images_per_intra_cluster`` 3.6:
    12,936 images, 6 cameras, 600 per camera; ``images_per_inter_cluster`` 16: 800
    global), so the counts follow the data instead of Market's size. ``linkage``:
    agglomerative linkage; ``k1``/``k2``/``lambda_value``: re-ranking of the distance
    before clustering (20, 6, 0.3); ``mix_rate``/``mix_decay``: mu and its decay power
    (eq. (5)); ``intra_epochs``/``inter_epochs``: loop epochs per stage;
    ``intra_loss_scale``: the intra stage's step relative to the inter stage's (0.5: its
    lr is half); ``triplet_margin``, ``triplet_weight`` (a).
    """

    intra_clusters: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", union_mode="left_to_right"
    )
    inter_clusters: Annotated[int, Field(ge=2)] | Literal["auto"] = Field(
        "auto", union_mode="left_to_right"
    )
    images_per_intra_cluster: float = Field(3.6, gt=0)
    images_per_inter_cluster: float = Field(16.0, gt=0)
    linkage: Literal["average", "complete", "single"] = "average"
    k1: int = Field(20, ge=1)
    k2: int = Field(6, ge=1)
    lambda_value: float = Field(0.3, ge=0, le=1)
    mix_rate: float = Field(0.02, ge=0)
    mix_decay: float = Field(0.6, ge=0)
    intra_epochs: int = Field(1, ge=1)
    inter_epochs: int = Field(1, ge=1)
    intra_loss_scale: float = Field(0.5, ge=0)
    triplet_margin: float = Field(0.3, ge=0)
    triplet_weight: float = Field(1.0, ge=0)


def cluster_counts(params: IicsParams, num_train: int, num_cameras: int) -> tuple[int, int]:
    """Clusters per camera and global clusters: the configured counts, or with ``auto``
    the train set's images (per camera) over the images per cluster."""
    intra, inter = params.intra_clusters, params.inter_clusters
    if intra == "auto":
        intra = max(1, round(num_train / max(num_cameras, 1) / params.images_per_intra_cluster))
    if inter == "auto":
        inter = max(2, round(num_train / params.images_per_inter_cluster))
    return int(intra), int(inter)


def cluster_distance(dist: np.ndarray, num_clusters: int, params: IicsParams) -> np.ndarray:
    """Re-rank a square distance, symmetrise it, cluster it: labels ``0..C-1`` ``[N]``."""
    n = len(dist)
    num_clusters = min(num_clusters, n)
    if num_clusters <= 1:
        return np.zeros(n, dtype=np.int64)
    k1 = min(params.k1, n - 1) if n > 1 else 1
    reranked = re_rank_distance(dist, k1=max(k1, 1), k2=params.k2, lambda_value=params.lambda_value)
    reranked = 0.5 * (reranked + reranked.T)
    np.fill_diagonal(reranked, 0.0)
    clustering = AgglomerativeClustering(
        n_clusters=num_clusters, metric="precomputed", linkage=params.linkage
    )
    return relabel(clustering.fit_predict(reranked))


def distribution_jaccard(p: Tensor) -> Tensor:
    """``J[i, j] = sum_k min(p_ik, p_jk) / sum_k max(p_ik, p_jk)`` for rows of ``p`` ``[N, K]``."""
    n, k = p.shape
    out = p.new_empty(n, n)
    rows = max(1, _JACCARD_CELLS // max(1, n * k))
    for start in range(0, n, rows):
        block = p[start : start + rows, None, :]
        smaller = torch.minimum(block, p[None]).sum(-1)
        larger = torch.maximum(block, p[None]).sum(-1)
        out[start : start + rows] = smaller / larger.clamp_min(1e-12)
    return out


def intra_inter_distance(
    features: Tensor, camids: Tensor, distributions: Tensor | None, mix: float
) -> Tensor:
    """``1 - cos - mix * J`` for pairs of different cameras, ``1 - cos`` within one (eq. (5))."""
    feats = F.normalize(features.float(), dim=1)
    dist = 1.0 - feats @ feats.t()
    if distributions is not None and mix > 0:
        cross = camids[:, None] != camids[None, :]
        dist -= mix * cross.to(dist) * distribution_jaccard(distributions.float())
    return dist


def _fresh_classifier(bn: nn.BatchNorm1d, weight: Tensor, seed: int) -> None:
    """The reference's classifier init: BN weight 1, bias 0 (frozen), weights ~ N(0, 0.001).

    Drawn from a generator keyed by ``seed`` (not the global RNG, which the loop seeds
    per rank), so every DDP process starts the same classifier.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.reset_parameters()
        bn.reset_running_stats()
        weight.copy_(torch.randn(weight.shape, generator=generator) * 0.001)


@register_method
class Iics(Method):
    """Per-camera clustering and classifiers, then intra-inter camera similarity clustering."""

    name = "iics"
    params_cls = IicsParams

    def __init__(self, encoder: nn.Module, params: IicsParams, info: TrainInfo) -> None:
        super().__init__(encoder, params, info)
        dim, cameras = info.embedding_dim, info.num_cameras
        self.intra_k, self.inter_k = cluster_counts(params, info.num_train, cameras)
        self.intra_bn = nn.BatchNorm1d(dim)
        self.intra_weight = nn.Parameter(torch.empty(cameras * self.intra_k, dim))
        self.inter_bn = nn.BatchNorm1d(dim)
        self.inter_weight = nn.Parameter(torch.empty(self.inter_k, dim))
        for bn, weight in ((self.intra_bn, self.intra_weight), (self.inter_bn, self.inter_weight)):
            _fresh_classifier(bn, weight, seed=0)
            bn.bias.requires_grad_(False)
        self.register_buffer("pseudo_labels", torch.full((info.num_train,), -1, dtype=torch.long))
        self.register_buffer("intra_sizes", torch.zeros(cameras, dtype=torch.long))
        self.stage: Literal["intra", "inter"] = "intra"

    # ------------------------------------------------------------------ schedule

    def stage_of(self, epoch: int) -> tuple[Literal["intra", "inter"], bool]:
        """The stage of loop epoch ``epoch`` and whether the stage starts there."""
        p = self.params
        position = epoch % (p.intra_epochs + p.inter_epochs)
        if position < p.intra_epochs:
            return "intra", position == 0
        return "inter", position == p.intra_epochs

    def mix_rate_at(self, epoch: int) -> float:
        """``mu`` of eq. (5) in the round of ``epoch``: decays to 0 over the run's rounds."""
        p = self.params
        per_round = p.intra_epochs + p.inter_epochs
        rounds = max(1, self.info.epochs // per_round)
        progress = min(epoch // per_round, rounds) / rounds
        return float(p.mix_rate * (1.0 - progress) ** p.mix_decay)

    # ------------------------------------------------------------------ clustering

    def camera_distributions(self, features: Tensor) -> Tensor:
        """Every camera classifier's softmax (over its used clusters), concatenated ``[N, C*K]``."""
        k = self.intra_k
        was_training = self.intra_bn.training
        self.intra_bn.eval()
        with torch.no_grad():
            logits = self.intra_bn(features.to(self.intra_weight)) @ self.intra_weight.t()
            logits = logits.view(len(features), -1, k)
            used = torch.arange(k, device=logits.device)[None, :] < self.intra_sizes[:, None]
            logits = logits.masked_fill(~used[None], float("-inf"))
            probs = torch.softmax(logits, dim=2).nan_to_num(0.0)
        self.intra_bn.train(was_training)
        return probs.flatten(1)

    def intra_labels(self, features: Tensor, camids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-camera clusters as labels ``camera * intra_clusters + m``, and the cluster counts."""
        k = self.intra_k
        labels = np.full(len(camids), -1, dtype=np.int64)
        sizes = np.zeros(self.info.num_cameras, dtype=np.int64)
        feats = F.normalize(features.float(), dim=1).cpu()
        for cam in np.unique(camids):
            members = np.flatnonzero(camids == cam)
            wanted = k if len(members) >= k else max(1, len(members) // 2)
            cam_feats = feats[members]
            dist = (1.0 - cam_feats @ cam_feats.t()).numpy()
            local = cluster_distance(dist, wanted, self.params)
            labels[members] = int(cam) * k + local
            sizes[int(cam)] = int(local.max()) + 1
        return labels, sizes

    def prepare_epoch(self, context: EpochContext) -> EpochPlan:
        """Cluster at the first epoch of each stage; keep the labels for its other epochs."""
        if context.features is None:
            raise ValueError("iics needs the train-set features in the EpochContext")
        stage, starts = self.stage_of(context.epoch)
        self.stage = stage
        if not starts and bool((self.pseudo_labels >= 0).any()):
            return EpochPlan(
                labels=self.pseudo_labels.cpu().numpy(), stats={"stage": float(stage == "inter")}
            )
        features, camids = context.features, np.asarray(context.camids)
        check_camera_ids(torch.from_numpy(camids), self.info.num_cameras)
        stats: dict[str, float] = {"stage": float(stage == "inter")}
        if stage == "intra":

            def compute() -> tuple[np.ndarray, np.ndarray]:
                return self.intra_labels(features, camids)

            labels, sizes = context.run_once(compute)
            self.intra_sizes.copy_(torch.from_numpy(sizes))
            fresh = (self.intra_weight, self.intra_bn.weight)
            _fresh_classifier(self.intra_bn, self.intra_weight, seed=context.epoch)
        else:
            mix = self.mix_rate_at(context.epoch)
            distributions = self.camera_distributions(features) if mix > 0 else None
            cams = torch.as_tensor(camids, device=features.device)

            def compute() -> np.ndarray:
                dist = intra_inter_distance(features, cams, distributions, mix)
                return cluster_distance(dist.cpu().numpy(), self.inter_k, self.params)

            labels = context.run_once(compute)
            fresh = (self.inter_weight, self.inter_bn.weight)
            _fresh_classifier(self.inter_bn, self.inter_weight, seed=context.epoch)
            stats["mix_rate"] = mix
        self.pseudo_labels.copy_(torch.from_numpy(labels))
        stats["num_clusters"] = float(len(np.unique(labels[labels >= 0])))
        return EpochPlan(labels=labels, stats=stats, fresh_parameters=fresh)

    # ------------------------------------------------------------------ training

    def step_outputs(self, batch: dict[str, dict[str, Tensor]]) -> tuple[TrainOutput, StepOutput]:
        """The encoder's forward pass and this stage's losses (subclasses add terms)."""
        stream = batch["target"]
        images, labels = stream["image"], stream["label"].long()
        out = self.encoder.forward_train(images)
        feats = out.embedding
        p = self.params
        if self.stage == "intra":
            camids = stream["camid"].to(feats.device).long()
            check_camera_ids(camids, self.info.num_cameras)
            k = self.intra_k
            logits = (self.intra_bn(feats) @ self.intra_weight.t()).view(len(feats), -1, k)
            own = logits[torch.arange(len(feats), device=feats.device), camids]
            per_image = F.cross_entropy(own, labels - camids * k, reduction="none")
            cams, inverse = torch.unique(camids, return_inverse=True)
            sums = per_image.new_zeros(len(cams)).index_add(0, inverse, per_image)
            counts = torch.bincount(inverse, minlength=len(cams)).to(per_image)
            losses = {"intra": p.intra_loss_scale * (sums / counts).sum()}
        else:
            logits = self.inter_bn(feats) @ self.inter_weight.t()
            losses = {
                "inter": F.cross_entropy(logits, labels),
                "triplet": p.triplet_weight
                * batch_hard_triplet(out.global_feat, labels, p.triplet_margin),
            }
        return out, StepOutput(losses=losses, features=feats)

    def training_step(self, batch: dict[str, dict[str, Tensor]]) -> StepOutput:
        return self.step_outputs(batch)[1]
