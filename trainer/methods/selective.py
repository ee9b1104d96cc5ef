"""``selective``: selective contrastive learning with global + local memory banks.

Pang et al., "Fully Unsupervised Person Re-Identification via Selective Contrastive
Learning" (ACM TOMM 2022). The paper's text we hold is its abstract; the method here
is its public reference code (pangbo1997/Unsup_ReID: ``engine/trainer.py``,
``engine/memory_bank.py``, ``engine/loss.py``, ``configs/test.yml``). Names in
parentheses are the reference's config keys.

Encoder: ``reid.models.part`` (``part_resnet50``; a global feature ``g`` and ``P = 8``
stripe features ``l_p``, all unit vectors), with the global dimension set to
``P x 256 = 2048`` so that both branches fit one mixture bank.

Memories (``trainer.memory``), one slot per train image, ``N`` images:

* global bank ``G [N, D]`` and local bank ``L [N, P, d]``: filled by one pass over the
  train set, then ``G_i <- L2(m G_i + (1 - m) g_i)`` (each stripe alike) for the
  batch's images after each step, ``m = bank_momentum`` = 0.5;
* mixture bank ``M [N, D]``: each anchor ``i`` writes itself into each of its
  positive slots ``j``: ``M_j <- L2((M_j + x_i) / 2)``, once per branch (``x = g``
  and ``x = [l_1; ...; l_P]``, the plain concatenation, norm ``sqrt(P)``). The
  reference starts it at zero (``mixture_init: zero``); by default it starts as if
  every image had written itself once with the fill pass's features (``banks``, see
  the deviations).

Selection (from epoch ``warmup_epochs`` on; 0-based, the reference's ``epoch <= 3``)::

    D_ij = lambda_g |g_i - G_j|^2 + (1 - lambda_g) mean_p |l_ip - L_pj|^2 + lambda_c [cam_i = cam_j]

sorted ascending, self left out: the first ``num_positives`` (7) are positives, the
next ``num_negatives`` (500) negatives. During warm-up: self and ``num_positives +
num_negatives`` random other images (one permutation per step, the anchor's own index
removed, as the reference). Counts are clamped to the train set (``N - 1`` others).

Loss per branch over the ``K = 1 + k + n`` entries, logits ``scale * x . M[idx]``
(``scale`` = 10: temperature 0.1)::

    L = sum_{j=0..k} c_j CE(logits, j),   c_0 = self_weight (LAMBDA_T 0.5),
                                          c_j = neighbour_factor (ALPHA 1.75) * (1 - c_0) / k

(the ``k`` neighbours share 0.875, not 0.5; ``k`` = 0 during warm-up: self only), and
``total = local_weight * L_local + (1 - local_weight) * L_global``.

``local_weight`` (LAMBDA_P) defaults to 0.3: the value of the reference's
``config/defaults.py`` and of the configuration echoed in every reference log whose
numbers are reported (Market, epoch 40); ``configs/test.yml`` has 0.5, a shipped
example no logged run used.

Evaluation. The reference ranks by ``0.5 |g - g'| + 0.5 mean_p |l_p - l_p'| + lambda_c
[same camera]``. The exported embedding (``reid.models.part``) ranks by cosine:
``1 - cos(e, e') = 0.25 |g - g'|^2 + 0.25 mean_p |l_p - l_p'|^2``, the squared form of
the first two terms (half the selection distance's); the unsquared sum is not an inner
product of any one vector. The camera term is not part of an encoder: ``python -m
trainer eval --camera-prior 0.05`` (``eval.camera_prior`` during training) adds it to
the cosine distance. The scales agree where it matters: ``d |a - b| / d(1 - cos) =
1 / sqrt(2 (1 - cos))`` is 1 at ``1 - cos = 0.5``, so 0.05 there is 0.05 here; closer
pairs (cos 0.8) see it about 1.6 times larger here.

Deviations, ours:

* ``mixture_init: banks`` (the default): a zero slot gives a zero logit and no
  gradient, so with the reference's zero start the first step has no gradient at all
  and each image's first visit contrasts against mostly empty slots; starting from the
  fill pass changes only that first pass of the warm-up (a slot halves its old content
  at every write). ``zero`` is the reference's start;
* the banks are filled from the loop's train-set features (eval mode, no flip; the
  encoder's ``split_embedding`` recovers ``g`` and the ``l_p`` from the embedding),
  the reference from a train-mode pass over its flipped training loader;
  ``wants_features`` asks the loop for them only while the banks are empty;
* gradients use the mixture bank as it was before the step; the reference writes it
  inside autograd's backward, between the gradients of its per-positive terms, in
  autograd's order; here the writes follow the step (global branch, then local; self,
  then the neighbours in rank order; anchors in batch order);
* only the branches in the loss write the mixture bank (``local_weight`` 0 or 1 leaves
  one out; the reference still runs the zero-weighted branch's backward, and writes);
* with an encoder without stripes (``split_embedding``) the method trains the global
  branch alone (``L = L_global``) and warns: use a ``part_*`` encoder.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from trainer.config import Params
from trainer.memory import InstanceMemory, MixtureMemory
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
    "Selective",
    "SelectiveParams",
    "multi_positive_loss",
    "positive_weights",
    "random_negatives",
    "select_entries",
    "selection_distance",
]


class SelectiveParams(Params):
    """Selective-contrast settings (defaults: the reference code's, see the module doc).

    ``warmup_epochs``: epochs of self-positive + random negatives (3); ``num_positives``
    / ``num_negatives``: selected neighbours and negatives (7, 500); ``negatives``:
    after warm-up, ``selected`` (the next ranks after the positives, the reference) or
    ``random`` (the ablation "+ multiple positives" without selected negatives);
    ``camera_weight``: lambda_c, added to same-camera distances in the selection
    (0.05); ``global_weight``: lambda_g, the global share of the selection distance
    (0.5); ``self_weight``: lambda_t, ``c_0`` (0.5); ``neighbour_factor``: alpha (1.75);
    ``scale``: 1 / temperature (10); ``local_weight``: lambda_p, the local branch's share
    of the loss (0.3, the logged runs'; 0.5 in ``configs/test.yml``);
    ``bank_momentum``: ``m`` of the global/local bank update (0.5); ``mixture_init``:
    ``banks`` (ours: each image written once into its own slot at the fill) or
    ``zero`` (the reference).
    """

    warmup_epochs: int = Field(3, ge=0)
    num_positives: int = Field(7, ge=0)
    num_negatives: int = Field(500, ge=1)
    negatives: Literal["selected", "random"] = "selected"
    camera_weight: float = Field(0.05, ge=0)
    global_weight: float = Field(0.5, ge=0, le=1)
    self_weight: float = Field(0.5, ge=0, le=1)
    neighbour_factor: float = Field(1.75, ge=0)
    scale: float = Field(10.0, gt=0)
    local_weight: float = Field(0.3, ge=0, le=1)
    bank_momentum: float = Field(0.5, ge=0, le=1)
    mixture_init: Literal["banks", "zero"] = "banks"


# ----------------------------------------------------------------------------- pieces


def _squared_distance(a: Tensor, b: Tensor) -> Tensor:
    """``|a_i - b_j|^2`` for rows of ``a [B, D]`` and ``b [N, D]``, ``[B, N]``."""
    a, b = a.float(), b.float()
    dist = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * a @ b.t()
    return dist.clamp_min_(0.0)


def selection_distance(
    global_feats: Tensor,
    global_bank: Tensor,
    *,
    parts: Tensor | None = None,
    local_bank: Tensor | None = None,
    camids: Tensor | None = None,
    bank_camids: Tensor | None = None,
    global_weight: float = 0.5,
    camera_weight: float = 0.0,
) -> Tensor:
    """``D [B, N]``: ``w |g_i - G_j|^2 + (1 - w) mean_p |l_ip - L_jp|^2 + c [cam_i = cam_j]``.

    ``global_feats [B, D]`` against ``global_bank [N, D]``; ``parts [B, P, d]`` against
    ``local_bank [N, P, d]`` (left out when ``None`` or ``w = 1``); the camera term when
    both camera arrays are given and ``c > 0``.
    """
    dist = global_weight * _squared_distance(global_feats, global_bank)
    if parts is not None and local_bank is not None and global_weight < 1:
        stripes = parts.shape[1]
        local = _squared_distance(parts.flatten(1), local_bank.flatten(1)) / stripes
        dist = dist + (1.0 - global_weight) * local  # mean over stripes of |l_p - L_p|^2
    if camera_weight > 0 and camids is not None and bank_camids is not None:
        same = camids.to(dist.device)[:, None] == bank_camids.to(dist.device)[None, :]
        dist = dist + camera_weight * same.to(dist)
    return dist


def select_entries(
    distance: Tensor, index: Tensor, num_positives: int, num_negatives: int
) -> tuple[Tensor, Tensor]:
    """``(positives [B, 1 + k], negatives [B, n])`` from a selection distance ``[B, N]``.

    Each row is sorted ascending (ties by slot index) with the anchor's own slot
    ``index[i]`` left out; ``positives[:, 0]`` is the anchor itself, then its ``k``
    nearest, then the ``n`` next ones are the negatives. ``k`` and ``n`` are clamped
    to the ``N - 1`` other slots.
    """
    n_slots = distance.shape[1]
    k = min(num_positives, n_slots - 1)
    n = min(num_negatives, n_slots - 1 - k)
    index = index.to(distance.device).long()
    masked = distance.clone()
    masked[torch.arange(len(index), device=distance.device), index] = float("inf")
    order = masked.argsort(dim=1, stable=True)[:, : n_slots - 1]
    positives = torch.cat([index[:, None], order[:, :k]], dim=1)
    return positives, order[:, k : k + n]


def random_negatives(index: Tensor, num_slots: int, count: int) -> Tensor:
    """``[B, count]`` random other slots per anchor: one permutation of the ``num_slots``
    slots (torch's global generator), each anchor taking its first ``count`` entries
    after removing its own index (the reference's warm-up). ``count`` is clamped to
    ``num_slots - 1``."""
    count = min(count, num_slots - 1)
    index = index.long()
    head = torch.randperm(num_slots, device=index.device)[: count + 1]
    keep = head[None, :] != index[:, None]
    keep &= keep.cumsum(dim=1) <= count
    return head.expand(len(index), -1)[keep].view(len(index), count)


def positive_weights(num_neighbours: int, self_weight: float, neighbour_factor: float) -> Tensor:
    """``[c_0, c_1, ..., c_k]``: ``c_0 = self_weight``, ``c_j = factor * (1 - c_0) / k``."""
    weights = torch.full((1 + num_neighbours,), 0.0)
    weights[0] = self_weight
    if num_neighbours:
        weights[1:] = neighbour_factor * (1.0 - self_weight) / num_neighbours
    return weights


def multi_positive_loss(
    features: Tensor, memory: Tensor, entries: Tensor, weights: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    """``sum_j c_j CE(scale * x . M[entries]^T, j)`` (batch mean), and the logits.

    ``features [B, D]``, ``memory [N, D]``, ``entries [B, K]`` (the positives first),
    ``weights [k + 1]`` (one per positive column, :func:`positive_weights`).
    """
    slots = memory[entries.to(memory.device)].to(features.device).float()  # [B, K, D]
    logits = scale * torch.einsum("bd,bkd->bk", features.float(), slots)
    log_probs = F.log_softmax(logits, dim=1)
    weights = weights.to(log_probs)
    loss = -(log_probs[:, : len(weights)] * weights[None, :]).sum(dim=1).mean()
    return loss, logits


# ----------------------------------------------------------------------------- method


@register_method
class Selective(Method):
    """Per-image global/local banks, selected positives and negatives, a mixture bank."""

    name = "selective"
    params_cls = SelectiveParams
    needs_features = True

    def __init__(self, encoder: nn.Module, params: SelectiveParams, info: TrainInfo) -> None:
        super().__init__(encoder, params, info)
        p = params
        self.has_parts = callable(getattr(encoder, "split_embedding", None))
        if self.has_parts:
            self.global_dim = int(encoder.global_dim)
            self.num_stripes, self.part_dim = int(encoder.num_stripes), int(encoder.part_dim)
        else:
            self.global_dim, self.num_stripes, self.part_dim = int(info.embedding_dim), 0, 0
            if p.local_weight > 0 or p.global_weight < 1:
                warnings.warn(
                    f"selective: encoder {type(encoder).__name__} has no stripe features "
                    "(split_embedding); training the global branch alone (use a part_* model)",
                    stacklevel=2,
                )
        self.use_local = self.has_parts and p.local_weight > 0
        self.use_global = not self.has_parts or p.local_weight < 1
        local_distance = self.has_parts and p.global_weight < 1
        if self.use_local and self.num_stripes * self.part_dim != self.global_dim:
            raise ValueError(
                f"selective: one mixture bank serves both branches, so the global dimension "
                f"({self.global_dim}) must equal stripes x part_dim ({self.num_stripes} x "
                f"{self.part_dim}); set model.kwargs.embedding_dim="
                f"{self.num_stripes * self.part_dim}"
            )
        n = info.num_train
        self.global_bank = InstanceMemory(n, self.global_dim, p.bank_momentum)
        self.local_bank: InstanceMemory | None = None
        if self.use_local or local_distance:
            self.local_bank = InstanceMemory(n, (self.num_stripes, self.part_dim), p.bank_momentum)
        self.mixture = MixtureMemory(n, self.global_dim)
        self.register_buffer("camids", torch.zeros(n, dtype=torch.long))
        self.selecting = False
        self._last_positives: Tensor | None = None

    # ------------------------------------------------------------------ epochs

    def wants_features(self, epoch: int) -> bool:
        """The train-set features only while the banks are empty (once per run)."""
        return not bool(self.global_bank.ready)

    def split(self, embeddings: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(g, parts)`` of the encoder's embeddings (``parts`` ``None`` without stripes)."""
        if not self.has_parts:
            return F.normalize(embeddings.float(), dim=1), None
        g, parts = self.encoder.split_embedding(embeddings.float())
        return g, parts

    @torch.no_grad()
    def init_banks(self, features: Tensor) -> None:
        """Fill the global (and local) bank from the train-set embeddings ``[N, D]``;
        with ``mixture_init: banks`` every image also writes itself into its own
        mixture slot (global branch, then local), as an anchor does after a step."""
        g, parts = self.split(features)
        self.global_bank.reset(g)
        if self.local_bank is not None and parts is not None:
            self.local_bank.reset(parts)
        self.mixture.features.zero_()
        if self.params.mixture_init == "banks":
            own = torch.arange(len(g), device=self.mixture.features.device)[:, None]
            if self.use_global:
                self.mixture.write(own, g)
            if self.use_local and parts is not None:
                self.mixture.write(own, parts.flatten(1))

    def prepare_epoch(self, context: EpochContext) -> EpochPlan:
        """Every image is its own class (``labels = arange(N)``); the banks are filled
        once; selection starts at epoch ``warmup_epochs``."""
        camids = torch.as_tensor(np.asarray(context.camids), dtype=torch.long)
        check_camera_ids(camids, self.info.num_cameras)
        self.camids.copy_(camids.to(self.camids.device))
        stats: dict[str, float] = {}
        if not bool(self.global_bank.ready):
            if context.features is None:
                raise ValueError("selective needs the train-set features to fill its banks")
            self.init_banks(context.features.to(self.global_bank.features.device))
            stats["banks_filled"] = 1.0
        self.selecting = context.epoch >= self.params.warmup_epochs
        stats["selection"] = float(self.selecting)
        return EpochPlan(labels=np.arange(self.info.num_train, dtype=np.int64), stats=stats)

    # ------------------------------------------------------------------ steps

    @torch.no_grad()
    def entries(
        self, index: Tensor, camids: Tensor, g: Tensor, parts: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``(positives [B, 1 + k], negatives [B, n])`` of this step: warm-up or selection."""
        p, n_slots = self.params, self.info.num_train
        if not self.selecting:
            count = p.num_positives + p.num_negatives
            return index[:, None], random_negatives(index, n_slots, count)
        local_bank = self.local_bank.features if self.local_bank is not None else None
        distance = selection_distance(
            g.detach(),
            self.global_bank.features,
            parts=None if parts is None else parts.detach(),
            local_bank=local_bank,
            camids=camids,
            bank_camids=self.camids,
            global_weight=p.global_weight if self.has_parts else 1.0,
            camera_weight=p.camera_weight,
        )
        positives, negatives = select_entries(distance, index, p.num_positives, p.num_negatives)
        if p.negatives == "random":
            negatives = _random_excluding(positives, n_slots, negatives.shape[1])
        return positives, negatives

    def training_step(self, batch: dict[str, dict[str, Tensor]]) -> StepOutput:
        stream = batch["target"]
        out = self.encoder.forward_train(stream["image"])
        if self.has_parts:
            g, parts = out.aux["global_embedding"], out.part_feats
        else:
            g, parts = out.embedding, None
        device = g.device
        index = stream["index"].to(device).long()
        camids = stream["camid"].to(device).long()
        positives, negatives = self.entries(index, camids, g, parts)
        entries = torch.cat([positives, negatives], dim=1)
        p = self.params
        weights = positive_weights(positives.shape[1] - 1, p.self_weight, p.neighbour_factor)
        memory = self.mixture.features
        losses: dict[str, Tensor] = {}
        extras: dict[str, Tensor] = {}
        branches = []
        if self.use_global:
            branches.append(("global", g, 1.0 - p.local_weight if self.use_local else 1.0))
        if self.use_local and parts is not None:
            branches.append(("local", parts.flatten(1), p.local_weight))
        for name, x, weight in branches:
            loss, logits = multi_positive_loss(x, memory, entries, weights, p.scale)
            losses[name] = weight * loss
            extras[f"acc_{name}"] = (logits.detach().argmax(dim=1) == 0).float().mean()
        self._last_positives = positives.detach()
        feats = g if parts is None else torch.cat([g, parts.flatten(1)], dim=1)
        return StepOutput(losses=losses, features=feats, extras=extras)

    @torch.no_grad()
    def after_step(self, batch: dict[str, dict[str, Tensor]], output: StepOutput) -> None:
        """Mixture-bank writes (each anchor into its positives), then the bank momentum update."""
        if output.features is None or self._last_positives is None:
            return
        feats, positives = gather_batch(output.features.detach().float(), self._last_positives)
        self._last_positives = None
        index = positives[:, 0]
        g = feats[:, : self.global_dim]
        parts = None
        if self.has_parts:
            parts = feats[:, self.global_dim :].reshape(len(feats), self.num_stripes, -1)
        if self.use_global:
            self.mixture.write(positives, g)
        if self.use_local and parts is not None:
            self.mixture.write(positives, parts.flatten(1))
        self.global_bank.update(index, g)
        if self.local_bank is not None and parts is not None:
            self.local_bank.update(index, parts)


def _random_excluding(positives: Tensor, num_slots: int, count: int) -> Tensor:
    """``[B, count]`` random slots per anchor outside its positives (one permutation)."""
    count = min(count, num_slots - positives.shape[1])
    perm = torch.randperm(num_slots, device=positives.device)
    keep = (perm[None, :, None] != positives[:, None, :]).all(dim=2)
    keep &= keep.cumsum(dim=1) <= count
    return perm.expand(len(positives), -1)[keep].view(len(positives), count)
