"""``mar``: soft multilabel learning against the agents of a labelled reference set.

Yu et al., "Unsupervised Person Re-identification by Soft Multilabel Learning" (CVPR
2019; code KovenYu/MAR: ``src/trainers.py``, ``src/utils.py``, ``runs/debug/args.yaml``),
as the seed paper uses it with multi-layer feature fusion: Zhang et al., "Soft
multilabel learning and deep feature fusion for unsupervised person
re-identification" (Opto-Electronic Engineering 2020). The loss and schedule details below
follow the paper, checked against the reference code.

Encoder: any registered one; the configs use the fusion head (``reid.models.se_fusion``,
``neck: none``): ``f = L2([GAP(layer1); GAP(layer3); GAP(layer4)])``. Everything else
is method state: the agents ``a_i = L2(W_i)`` (a bias-free FC over the ``C`` reference
identities, the method's one trainable parameter), the per-image multilabel memory, the
agreement threshold ``T`` and the running statistics of the log-multilabels.

Soft multilabel of an image: ``y = softmax(s f . a^T)``, ``s = scale`` = 30 (the seed's
eq. 1 has no scale; the code uses 30). The agents are detached everywhere but in AL.

Stages (``stage``):

* ``pretrain``: the reference set alone, ``L = AL`` (the seed's step 1; the loop loads
  no target batch). Its checkpoint starts the joint stage (``--init``): the encoder
  and the agents carry over.
* ``joint``: batches of target + reference images (MAR: 184 + 184),
  ``L = MDL + 2e-4 CML + 50 (AL + 0.2 RJ)``, with

  - **AL** (agent learning, eq. 9): ``CE(s f(z) . a^T, w)`` on the reference images;
  - **MDL** (multilabel-guided discriminative embedding, eqs. 2-7) on the target images:
    of the batch's pairs ``i < j`` the ``mining_ratio`` (0.5 %) with the smallest
    ``|f_i - f_j|^2`` are mined; those with agreement ``A = 1 - |y_i - y_j|_1 / 2 > T``
    are positives, the rest hard negatives; ``L = -log(P / (P + N))`` with ``P``, ``N``
    the means of ``exp(-|f_i - f_j|^2)`` (no positive: ``P = 1``; no negative:
    ``N = 0.5``). ``y`` comes from the multilabel memory: an image's first multilabel,
    then ``0.9 old + 0.1 new`` at each visit. ``T`` starts at the agreement of the top
    0.5 % of all target pairs and follows ``T <- 0.9 T + 0.1 t`` with ``t`` the same
    statistic over the batch's pairs. Off before epoch ``mdl_start_epoch`` (1);
  - **CML** (cross-view consistent multilabel, eq. 8) on ``l = log y`` of the target
    images: for each camera with at least 2 batch images ``|mu_v - mu|^2 +
    |sigma_v - sigma|^2`` (per-dimension mean and standard deviation) against running
    global statistics, initialised from the whole target set and updated after each step
    with momentum ``batch / 10000``; the mean over those cameras;
  - **RJ** (reference agent-based joint embedding, eq. 10, margin ``m`` = 1 on squared
    distances, i.e. cosine > 0.5 for unit vectors): the pull ``|f(z) - a_w|^2`` of each
    reference image to its own agent; for each reference image the mean hinge
    ``[m - |f(z) - a_k|^2]_+`` over the other agents closer than ``m`` (a code-only
    term), and for each target image the same over every agent closer than ``m``;
    the mean over those terms.

Ablations (the seed's Table 3): ``cml: false`` drops CML; ``ral: false`` drops AL and
RJ (the agents stay as initialised, the reference stream is not loaded).

Our choices where the sources leave a detail open: the threshold update runs while
MDL does (from ``mdl_start_epoch``); ``t`` and ``T`` use the same top-``ratio`` rule;
the per-camera and per-image terms of CML and RJ are averaged (each term weighs the
same); the target and reference images pass the encoder as one batch (shared
BatchNorm statistics); standard deviations are the unbiased ones. Deviation: the code's
ResNet-50 has no ReLU after its last block; our backbones keep it.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from trainer.config import Params
from trainer.methods._clustered import gather_batch
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
    "Mar",
    "MarParams",
    "agent_loss",
    "agreement",
    "agreement_threshold",
    "cml_loss",
    "mdl_loss",
    "rj_loss",
    "soft_multilabels",
]

_CHUNK = 1024


class MarParams(Params):
    """MAR settings (defaults: the paper's and its code's, see the module docstring).

    ``stage``: ``pretrain`` (AL on the reference set alone) or ``joint``; ``scale``: s of
    the soft multilabel and of AL (30); ``mining_ratio``: share of the batch's pairs
    MDL mines (0.005); ``mdl_start_epoch``: first epoch with MDL (1: off in epoch 0);
    ``memory_momentum``: weight of the old multilabel in the memory (0.9);
    ``threshold_momentum``: weight of the old T (0.9); ``stats_images``: the CML running
    statistics move by ``batch / stats_images`` per step (10000); ``margin``: RJ's margin
    on squared distances (1); ``mdl`` / ``cml`` / ``ral``: the ablation switches (``mdl``
    false with ``cml`` false leaves the reference supervision alone, RAL, the control of
    how much the target losses add); ``cml_weight``
    (2e-4), ``ral_weight`` (50) and ``rj_weight`` (beta, 0.2): ``L = MDL + cml_weight CML
    + ral_weight (AL + rj_weight RJ)``.
    """

    stage: Literal["pretrain", "joint"] = "joint"
    scale: float = Field(30.0, gt=0)
    mining_ratio: float = Field(0.005, gt=0, le=1)
    mdl_start_epoch: int = Field(1, ge=0)
    memory_momentum: float = Field(0.9, ge=0, le=1)
    threshold_momentum: float = Field(0.9, ge=0, le=1)
    stats_images: int = Field(10000, ge=1)
    margin: float = Field(1.0, gt=0)
    mdl: bool = True
    cml: bool = True
    ral: bool = True
    cml_weight: float = Field(2.0e-4, ge=0)
    ral_weight: float = Field(50.0, ge=0)
    rj_weight: float = Field(0.2, ge=0)


# ----------------------------------------------------------------------------- pieces


def soft_multilabels(features: Tensor, agents: Tensor, scale: float) -> Tensor:
    """``softmax(scale * features . agents^T)``: ``[B, D]`` x ``[C, D]`` -> ``[B, C]``."""
    return F.softmax(scale * features.float() @ agents.float().t(), dim=1)


def agreement(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise multilabel agreement ``1 - |a_i - b_j|_1 / 2`` (= sum_k min), ``[A, B]``."""
    return 1.0 - torch.cdist(a.float(), b.float(), p=1) / 2.0


def _num_mined(num_pairs: int, ratio: float) -> int:
    return max(1, round(ratio * num_pairs))


def agreement_threshold(multilabels: Tensor, ratio: float) -> float:
    """The agreement at the top ``ratio`` of all pairs ``i < j`` of ``multilabels [N, C]``:
    the ``k``-th largest pairwise agreement, ``k = max(1, round(ratio * N (N - 1) / 2))``.

    Computed in row chunks (``N x N`` agreements never held at once beyond one chunk).
    """
    n = len(multilabels)
    if n < 2:
        raise ValueError(f"the agreement threshold needs at least 2 multilabels, got {n}")
    values = []
    for start in range(0, n - 1, _CHUNK):
        rows = multilabels[start : start + _CHUNK]
        block = agreement(rows, multilabels)
        cols = torch.arange(n, device=block.device)[None, :]
        upper = cols > torch.arange(start, start + len(rows), device=block.device)[:, None]
        values.append(block[upper])
    flat = torch.cat(values)
    k = _num_mined(len(flat), ratio)
    return float(torch.topk(flat, k).values[-1])


def _squared_distances(x: Tensor) -> Tensor:
    x = x.float()
    sq = (x * x).sum(1)
    return (sq[:, None] + sq[None, :] - 2.0 * x @ x.t()).clamp_min(0.0)


def mdl_loss(
    features: Tensor, multilabels: Tensor, threshold: float, ratio: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """MDL on one batch (see the module docstring) and its facts.

    ``features [B, D]`` (with gradient), ``multilabels [B, C]`` (no gradient needed).
    Returns ``(loss, {"positives", "negatives", "batch_threshold"})``; the batch
    threshold is the agreement at the top ``ratio`` of the batch's pairs.
    """
    b = len(features)
    if b < 2:
        zero = features.sum() * 0.0
        return zero, {}
    dist = _squared_distances(features)
    i, j = torch.triu_indices(b, b, offset=1, device=features.device)
    pair_dist = dist[i, j]
    k = _num_mined(len(pair_dist), ratio)
    mined = torch.argsort(pair_dist.detach(), stable=True)[:k]
    agree = agreement(multilabels, multilabels).to(features.device)[i, j]
    positive = agree[mined] > threshold
    similarity = torch.exp(-pair_dist[mined])
    ones = similarity.new_ones(())
    p = similarity[positive].mean() if bool(positive.any()) else ones
    n = similarity[~positive].mean() if bool((~positive).any()) else 0.5 * ones
    loss = -torch.log(p / (p + n))
    k_batch = _num_mined(len(agree), ratio)
    facts = {
        "positives": positive.sum().float(),
        "negatives": (~positive).sum().float(),
        "batch_threshold": torch.topk(agree.detach(), k_batch).values[-1],
    }
    return loss, facts


def cml_loss(log_labels: Tensor, camids: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """CML: mean over the cameras with >= 2 images of ``|mu_v - mean|^2 + |sigma_v - std|^2``.

    ``log_labels [B, C]`` (log-multilabels, with gradient), ``camids [B]``, ``mean`` and
    ``std [C]`` the global statistics (treated as constants). Zero without such a camera.
    """
    terms = []
    mean, std = mean.to(log_labels).detach(), std.to(log_labels).detach()
    for cam in torch.unique(camids):
        rows = log_labels[camids == cam]
        if len(rows) < 2:
            continue
        mu, sigma = rows.mean(0), rows.std(0)
        terms.append((mu - mean).pow(2).sum() + (sigma - std).pow(2).sum())
    if not terms:
        return log_labels.sum() * 0.0
    return torch.stack(terms).mean()


def agent_loss(features: Tensor, agents: Tensor, labels: Tensor, scale: float) -> Tensor:
    """AL: ``CE(scale * features . agents^T, labels)`` (agents with gradient)."""
    logits = scale * features.float() @ agents.float().t()
    return F.cross_entropy(logits, labels.long())


def _hinge_rows(dist: Tensor, hard: Tensor, margin: float) -> Tensor:
    """Per row with any ``hard`` entry: the mean of ``[margin - dist]_+`` over them."""
    has = hard.any(dim=1)
    hinge = (margin - dist).clamp_min(0.0) * hard
    return hinge[has].sum(1) / hard[has].sum(1)


def rj_loss(
    reference: Tensor,
    labels: Tensor,
    target: Tensor | None,
    agents: Tensor,
    margin: float = 1.0,
) -> Tensor:
    """RJ: the mean over the pull terms ``|f(z) - a_w|^2`` of the reference images and the
    per-image mean hinges ``[margin - |f - a_k|^2]_+`` over the agents closer than
    ``margin`` (for a reference image: the agents other than its own; for a target
    image: all). ``agents`` are detached here."""
    agents = agents.detach().float()
    ref_dist = torch.cdist(reference.float(), agents).pow(2)
    own = F.one_hot(labels.long(), len(agents)).bool()
    terms = [ref_dist[own], _hinge_rows(ref_dist, ~own & (ref_dist < margin), margin)]
    if target is not None and len(target):
        tgt_dist = torch.cdist(target.float(), agents).pow(2)
        terms.append(_hinge_rows(tgt_dist, tgt_dist < margin, margin))
    return torch.cat(terms).mean()


def _all_mean(value: Tensor) -> Tensor:
    """The mean of ``value`` over DDP ranks (itself in one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    total = value.clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


# ----------------------------------------------------------------------------- method


@register_method
class Mar(Method):
    """Reference agents, soft multilabels, MDL + CML + AL + RJ (see the module docstring)."""

    name = "mar"
    params_cls = MarParams
    needs_features = True
    uses_reference = True

    def __init__(self, encoder: nn.Module, params: MarParams, info: TrainInfo) -> None:
        super().__init__(encoder, params, info)
        classes = info.num_reference_classes
        if classes < 1:
            raise ValueError(
                "mar needs a labelled reference set (its identities are the agents): "
                "pass --reference FORMAT:PATH"
            )
        p = params
        self.joint = p.stage == "joint"
        self.agents = nn.Linear(int(info.embedding_dim), classes, bias=False)
        self.agents.weight.requires_grad_(not self.joint or p.ral)
        rows = info.num_train if self.joint else 0
        self.register_buffer("multilabels", torch.zeros(rows, classes))
        self.register_buffer("seen", torch.zeros(rows, dtype=torch.bool))
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("log_mean", torch.zeros(classes))
        self.register_buffer("log_std", torch.zeros(classes))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.mdl_active = False
        self._pending: tuple[Tensor, Tensor, Tensor | None] | None = None

    # ------------------------------------------------------------------ contract

    def streams(self) -> tuple[str, ...]:
        if not self.joint:
            return ("reference",)
        return ("target", "reference") if self.params.ral else ("target",)

    def wants_features(self, epoch: int) -> bool:
        """The target features once, to initialise T and the CML statistics."""
        return self.joint and not bool(self.initialised)

    def agent_vectors(self) -> Tensor:
        """The agents ``a = L2(W)``, ``[C, D]`` (with gradient)."""
        return F.normalize(self.agents.weight, dim=1)

    @torch.no_grad()
    def initialise(self, features: Tensor) -> None:
        """T and the global log-multilabel statistics from the whole target set ``[N, D]``."""
        agents = self.agent_vectors().detach()
        labels = torch.cat(
            [
                soft_multilabels(chunk.to(agents.device), agents, self.params.scale)
                for chunk in features.split(_CHUNK)
            ]
        )
        logs = labels.clamp_min(torch.finfo(labels.dtype).tiny).log()
        self.log_mean.copy_(logs.mean(0))
        self.log_std.copy_(logs.std(0))
        self.threshold.fill_(agreement_threshold(labels, self.params.mining_ratio))
        self.initialised.fill_(True)

    def prepare_epoch(self, context: EpochContext) -> EpochPlan:
        """Every target image is its own label (the random sampler draws images); the
        first joint epoch initialises T and the statistics from the loop's features."""
        stats: dict[str, float] = {}
        if self.joint:
            check_camera_ids(torch.as_tensor(np.asarray(context.camids)), self.info.num_cameras)
            if not bool(self.initialised):
                if context.features is None:
                    raise ValueError("mar needs the target features to initialise T and CML")
                self.initialise(context.features.to(self.threshold.device, torch.float32))
                stats["initialised"] = 1.0
            self.mdl_active = self.params.mdl and context.epoch >= self.params.mdl_start_epoch
            stats["threshold"] = float(self.threshold)
            stats["mdl_on"] = float(self.mdl_active)
        return EpochPlan(labels=np.arange(self.info.num_train, dtype=np.int64), stats=stats)

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: dict[str, dict[str, Tensor]]) -> StepOutput:
        p = self.params
        agents = self.agent_vectors()
        if not self.joint:
            ref = batch["reference"]
            feats = self.encoder.forward_train(ref["image"]).embedding.float()
            logits = p.scale * feats @ agents.t()
            loss = F.cross_entropy(logits, ref["label"].long())
            acc = (logits.detach().argmax(1) == ref["label"]).float().mean()
            return StepOutput(losses={"al": loss}, extras={"acc_agents": acc})

        target = batch["target"]
        images = [target["image"]]
        if p.ral:
            images.append(batch["reference"]["image"])
        feats = self.encoder.forward_train(torch.cat(images)).embedding.float()
        f_t, f_r = feats[: len(target["image"])], feats[len(target["image"]) :]
        fixed = agents.detach()
        log_y = F.log_softmax(p.scale * f_t @ fixed.t(), dim=1)
        y = log_y.detach().exp()
        index = target["index"].to(self.multilabels.device).long()
        old, seen = self.multilabels[index], self.seen[index, None]
        y_memory = torch.where(seen, p.memory_momentum * old + (1 - p.memory_momentum) * y, y)

        losses: dict[str, Tensor] = {}
        extras: dict[str, Tensor] = {"threshold": self.threshold.detach().clone()}
        batch_threshold = None
        if self.mdl_active:
            mdl, facts = mdl_loss(f_t, y_memory, float(self.threshold), p.mining_ratio)
            losses["mdl"] = mdl
            batch_threshold = facts.get("batch_threshold")
            extras.update({k: v for k, v in facts.items() if k != "batch_threshold"})
        else:
            losses["mdl"] = f_t.sum() * 0.0  # off in the first epoch(s), or switched off
        if p.cml:
            camids = target["camid"].to(f_t.device).long()
            check_camera_ids(camids, self.info.num_cameras)
            losses["cml"] = p.cml_weight * cml_loss(log_y, camids, self.log_mean, self.log_std)
        if p.ral:
            ref = batch["reference"]
            al = agent_loss(f_r, agents, ref["label"].to(f_r.device), p.scale)
            rj = rj_loss(f_r, ref["label"].to(f_r.device), f_t, fixed, p.margin)
            losses["al"] = p.ral_weight * al
            losses["rj"] = p.ral_weight * p.rj_weight * rj
        self._pending = (index, torch.cat([y, log_y.detach()], dim=1), batch_threshold)
        return StepOutput(losses=losses, features=f_t.detach(), extras=extras)

    @torch.no_grad()
    def after_step(self, batch: dict[str, dict[str, Tensor]], output: StepOutput) -> None:
        """Multilabel memory, CML statistics and T from the (all-gathered) target batch."""
        if self._pending is None:
            return
        index, labels, batch_threshold = self._pending
        self._pending = None
        p = self.params
        labels, index = gather_batch(labels, index)
        classes = self.multilabels.shape[1]
        y, log_y = labels[:, :classes], labels[:, classes:]
        old, seen = self.multilabels[index], self.seen[index, None]
        self.multilabels[index] = torch.where(
            seen, p.memory_momentum * old + (1 - p.memory_momentum) * y, y
        )
        self.seen[index] = True
        if p.cml and len(log_y) >= 2:
            m = min(1.0, len(log_y) / p.stats_images)
            self.log_mean.mul_(1 - m).add_(m * log_y.mean(0))
            self.log_std.mul_(1 - m).add_(m * log_y.std(0))
        if batch_threshold is not None:
            t = _all_mean(batch_threshold.reshape(1).to(self.threshold)).reshape(())
            self.threshold.mul_(p.threshold_momentum).add_((1 - p.threshold_momentum) * t)

    def init_from_state(self, state: dict) -> list[str]:
        """The agents (and any other trainable parameter) of a ``pretrain`` run."""
        taken = super().init_from_state(state)
        if "agents.weight" not in taken:
            warnings.warn(
                "mar --init: the checkpoint holds no agents (not a mar run?); the agents "
                "start from random values",
                stacklevel=2,
            )
        return taken
