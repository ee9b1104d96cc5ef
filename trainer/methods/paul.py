"""``paul``: patch-based unsupervised learning with a supervised patch pre-training.

Yang, Yu, Wu and Zheng, "Patch-based Discriminative Feature Learning for Unsupervised
Person Re-identification" (CVPR 2019), as its reference code (QizeYang/PAUL:
``src/models/patchnet.py``, ``src/train/supervised_train.py``,
``src/unsupervised/unsupervised_train.py``, ``src/loss/myloss.py``, ``src/loss/smooth.py``).
docs/METHODS.md, section 5, holds the details this file follows.

Encoder: ``reid.models.patchnet`` (``patchnet_*``): a patch generation network (PGN)
regressing ``P`` = 6 affine transforms, initialised to six horizontal stripes; per patch
``x_m = L2(BN(conv1x1(GAP(patch))))``, ``d`` = 256; the exported embedding is the
renormalised concatenation. Method state: ``P`` embedding layers ``256 -> 128`` (both
stages), ``P`` identity classifiers (pre-training only) and the two per-image memories of
the unsupervised stage (``trainer.memory.PatchMemory``).

Stages (``stage``):

* ``pretrain`` on the labelled reference set alone (``--reference``; the paper: MSMT17),
  the checkpoint the unsupervised stage starts from (``--init``; the embedding layers
  carry over). With ``h_m = ReLU(BN(conv1x1(GAP(patch_m))))`` (the code's supervised
  PatchNet has a ReLU there; our encoder's ``aux["patch_raw"]`` is the BN output):
  ``L = sum_m CE(fc_m(h_m), y) + 0.1 * triplet(L2([g_1(h_1); ...; g_P(h_P)]), y)``, the
  triplet with margin 1 on Euclidean distances between each image's nearest positive and
  nearest negative in the batch (the code's ``TripletHard``; with two images per identity,
  as the code's identity pairs, the nearest positive is the only one). The PGN has its own
  optimiser group: ``optim.lr * generator_lr_mult`` (the schedule's factor included)
  within ``generator_epochs = [start, stop)``, 0 outside (the code: 0 before epoch 25,
  1e-5 for epochs 25-39 while the new layers train at 0.1, 0 from epoch 40).
  ``generator_lr_mult: 0`` never trains it (fixed patches: the paper's Table 4 "Equally",
  or "Randomly" with ``model.kwargs.patch_init=random``).
* ``unsupervised`` on the target set: the PGN is frozen (out of the optimiser) and so are
  the embedding layers. Each target image comes with a surrogate positive (``positive``,
  ``reid.data.transforms.build_surrogate_transform``: colour jitter 0.2/0.2/0.2/0.1,
  rotation within 10 degrees, a crop of 70-95 % of the area). Losses, total
  ``2 * PEDAL + 1 * IPFL``:

  - **PEDAL** (patch-based discriminative feature learning, eq. (2)) on the original
    views, per patch ``m`` against the patch memory ``W^m`` (``[N, d]`` per patch)::

        L_m(i) = -log( sum_{j in top-k(i)} exp(-s |x_i - w_j|^2)
                       / sum_{j != i} exp(-s |x_i - w_j|^2) )

    the ``k`` = 10 nearest slots other than the image's own, averaged over the batch and
    the patches; ``s`` = 15 (Market) / 5 (Duke) multiplies the squared distance directly
    (the code's convention: the paper's ``s / 2``).
  - **IPFL** (image-level feature learning, eq. (3)) on ``e = [x_1 . W_1^T; ...; x_P .
    W_P^T]`` (the frozen embedding weights with unit rows, no bias: ``P * 128``-d): for
    every view (original and surrogate) ``max(0, margin + |e - c_i| - |e - c_n|)``, margin
    2, with ``c_i`` the image's centre (the mean of its two views in the centre memory)
    and ``c_n`` the hard negative of cyclic ranking (:func:`cyclic_hard_negatives`);
    without one the negative distance is 0.

  The patch memory holds the original views' ``x_m``, filled from the loop's pass over
  the target set before the first step (the code's initialisation pass); the centre
  memory stores an image's first two-view mean, then both follow ``w <- 0.9 w + 0.1 x``
  without renormalisation. Both are "updated before the loss": the loss sees the batch's
  slots as they will be after this step (``PatchMemory.updated``), and ``after_step``
  writes the same rule from the all-gathered batch.

Ablations (the paper's Table 3): ``pedal: false`` (``PatchNet + L_v``), ``ipfl: false``
(``PatchNet + L_c``); both off is the pre-trained PatchNet itself (direct transfer: score
the pretrain checkpoint). Table 4: ``generator_lr_mult: 0`` in the pre-training (equal
stripes), ``model.kwargs.patch_init=random`` with it (random patches) and
``model.kwargs.num_patches=4|8``.

Our choices where the sources leave a detail open: in cyclic ranking a candidate's
top-3 among the batch centres includes the candidate itself (at distance 0, as the code
ranks); the patch memory is filled from the loop's eval-mode features (the code: a
train-mode pass without gradients, flip augmentation); the PGN's BatchNorm keeps
updating its running statistics in the unsupervised stage (train mode, as the code,
whose frozen PGN has learning rate 0). With an encoder without patches (not
``patchnet_*``) the embedding is treated as one patch, with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from reid.data.transforms import Compose, build_surrogate_transform
from trainer.config import Params
from trainer.memory import PatchMemory
from trainer.methods._clustered import gather_batch
from trainer.methods.base import (
    EpochContext,
    EpochPlan,
    Method,
    StepOutput,
    TrainInfo,
    register_method,
)

__all__ = [
    "Paul",
    "PaulParams",
    "cyclic_hard_negatives",
    "ipfl_loss",
    "nearest_triplet_loss",
    "pedal_loss",
    "squared_distances",
]


class PaulParams(Params):
    """PAUL settings (defaults: the paper's and its code's, see the module docstring).

    ``stage``: ``pretrain`` (supervised, reference set) or ``unsupervised`` (target set).
    Pre-training: ``triplet_weight`` (0.1), ``triplet_margin`` (1), ``generator_lr_mult``
    (the PGN's lr as a multiple of ``optim.lr``: the code's 1e-5 / 0.1 = 1e-4; 0: never
    trained) and ``generator_epochs`` (``[start, stop)`` of its training: 25, 40).
    Unsupervised: ``pedal`` / ``ipfl`` (the ablation switches), ``pedal_weight`` (2),
    ``ipfl_weight`` (1), ``scale`` (PEDAL's s on squared distances: 15 Market, 5 Duke),
    ``neighbours`` (k, 10), ``memory_momentum`` (weight of the old value, 0.9),
    ``margin`` (IPFL, 2), ``ranking_candidates`` (batch centres cyclic ranking walks, 15),
    ``ranking_nearest`` (the top-n a candidate must keep the anchor out of, 3), the
    surrogate positive: ``positive_jitter`` (brightness, contrast, saturation, hue),
    ``positive_rotation`` (degrees), ``positive_area`` (crop area range).
    ``embedding_dim``: the per-patch projection (128), both stages.
    """

    stage: Literal["pretrain", "unsupervised"] = "unsupervised"
    triplet_weight: float = Field(0.1, ge=0)
    triplet_margin: float = Field(1.0, ge=0)
    generator_lr_mult: float = Field(1.0e-4, ge=0)
    generator_epochs: list[float] = Field(default_factory=lambda: [25.0, 40.0])
    pedal: bool = True
    ipfl: bool = True
    pedal_weight: float = Field(2.0, ge=0)
    ipfl_weight: float = Field(1.0, ge=0)
    scale: float = Field(15.0, gt=0)
    neighbours: int = Field(10, ge=1)
    memory_momentum: float = Field(0.9, ge=0, le=1)
    margin: float = Field(2.0, ge=0)
    ranking_candidates: int = Field(15, ge=1)
    ranking_nearest: int = Field(3, ge=1)
    positive_jitter: list[float] = Field(default_factory=lambda: [0.2, 0.2, 0.2, 0.1])
    positive_rotation: float = Field(10.0, ge=0, le=180)
    positive_area: list[float] = Field(default_factory=lambda: [0.70, 0.95])
    embedding_dim: int = Field(128, ge=1)

    @field_validator("generator_epochs")
    @classmethod
    def _ordered_window(cls, window: list[float]) -> list[float]:
        if len(window) != 2 or not 0 <= window[0] <= window[1]:
            raise ValueError(f"expected [start, stop] with 0 <= start <= stop, got {window}")
        return window

    @field_validator("positive_area")
    @classmethod
    def _area_range(cls, area: list[float]) -> list[float]:
        if len(area) != 2 or not 0 < area[0] <= area[1] <= 1:
            raise ValueError(f"expected [low, high] with 0 < low <= high <= 1, got {area}")
        return area

    @field_validator("positive_jitter")
    @classmethod
    def _jitter(cls, jitter: list[float]) -> list[float]:
        if len(jitter) != 4 or not all(0 <= v < 1 for v in jitter[:3]) or not 0 <= jitter[3] <= 0.5:
            raise ValueError(
                "expected [brightness, contrast, saturation, hue] with the first three in "
                f"[0, 1) and hue in [0, 0.5], got {jitter}"
            )
        return jitter

    @model_validator(mode="after")
    def _something_to_learn(self) -> PaulParams:
        if self.stage == "unsupervised" and not (self.pedal or self.ipfl):
            raise ValueError(
                "pedal and ipfl are both off: the unsupervised stage would train nothing "
                "(the pre-trained PatchNet alone is the pretrain run's checkpoint)"
            )
        return self


# ----------------------------------------------------------------------------- pieces


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """``|a_i - b_j|^2`` over the last axis: ``[..., A, D] x [..., B, D] -> [..., A, B]``."""
    a, b = a.float(), b.float()
    sq = (a * a).sum(-1)[..., :, None] + (b * b).sum(-1)[..., None, :]
    return (sq - 2.0 * a @ b.transpose(-1, -2)).clamp_min(0.0)


def _euclidean(a: Tensor, b: Tensor) -> Tensor:
    return squared_distances(a, b).clamp_min(1e-12).sqrt()


def pedal_loss(
    features: Tensor,
    memory: Tensor,
    index: Tensor,
    scale: float,
    neighbours: int = 10,
    valid: Tensor | None = None,
) -> Tensor:
    """PEDAL, averaged over the batch and the patches.

    ``features [B, P, d]`` (with gradient), ``memory [N, P, d]`` (constants; the batch's
    own slots already updated), ``index [B]`` the images' own slots (left out), ``valid
    [N]`` the slots that hold a value (default all). Per image and patch:
    ``-log(sum_{k nearest} exp(-scale d^2) / sum_{all} exp(-scale d^2))`` over the other
    valid slots (``k`` clamped to their number).
    """
    feats = features.float().transpose(0, 1)  # [P, B, d]
    slots = memory.to(feats).detach().transpose(0, 1)  # [P, N, d]
    dist = squared_distances(feats, slots)  # [P, B, N]
    b, n = dist.shape[1], dist.shape[2]
    excluded = torch.zeros(b, n, dtype=torch.bool, device=dist.device)
    excluded[torch.arange(b, device=dist.device), index.to(dist.device).long()] = True
    if valid is not None:
        excluded |= ~valid.to(dist.device).bool()[None, :]
    available = int((~excluded).sum(1).min())
    if available < 1:
        raise ValueError("PEDAL needs at least one other memory slot per image")
    logits = (-scale * dist).masked_fill(excluded[None], float("-inf"))
    k = min(neighbours, available)
    nearest = logits.topk(k, dim=2).values
    loss = torch.logsumexp(logits, dim=2) - torch.logsumexp(nearest, dim=2)  # [P, B]
    return loss.mean()


def cyclic_hard_negatives(
    distances: Tensor, owner: Tensor, centres: Tensor, candidates: int = 15, nearest: int = 3
) -> Tensor:
    """Cyclic ranking: a hard negative batch centre per view, or -1.

    ``distances [R, B]``: each view's distance to the ``B`` batch centres ``centres [B,
    D]``; ``owner [R]``: its own centre. For a view of image ``a``, walk the other centres
    in ascending distance (at most ``candidates``) and accept the first ``j`` whose own
    ``nearest`` closest batch centres (``j`` itself included) do not contain ``c_a``; -1
    when none qualifies. Selection only: no gradient.
    """
    with torch.no_grad():
        b = len(centres)
        owner = owner.to(distances.device).long()
        rows = torch.arange(len(owner), device=distances.device)
        if b < 2:
            return torch.full_like(owner, -1)
        between = squared_distances(centres, centres)
        top = between.argsort(dim=1, stable=True)[:, : min(nearest, b)]  # [B, n]
        near = torch.zeros(b, b, dtype=torch.bool, device=distances.device)
        near[torch.arange(b, device=near.device)[:, None], top] = True  # near[j, a]: a in top(j)
        ranked = distances.detach().float().clone()
        ranked[rows, owner] = float("inf")
        order = ranked.argsort(dim=1, stable=True)[:, : min(candidates, b - 1)]  # [R, K]
        accepted = ~near[order, owner[:, None]]
        first = accepted.float().argmax(dim=1)
        found = accepted.any(dim=1)
        return torch.where(found, order[rows, first], torch.full_like(owner, -1))


def ipfl_loss(
    embeddings: Tensor,
    owner: Tensor,
    centres: Tensor,
    margin: float = 2.0,
    candidates: int = 15,
    nearest: int = 3,
) -> tuple[Tensor, Tensor]:
    """IPFL: the mean over views of ``max(0, margin + |e - c_own| - |e - c_neg|)``.

    ``embeddings [R, D]`` (every view, with gradient), ``owner [R]`` its image's row in
    ``centres [B, D]`` (constants). ``c_neg`` from :func:`cyclic_hard_negatives`; without
    one its distance is 0. Returns ``(loss, negatives [R])`` (-1: none found).
    """
    owner = owner.to(embeddings.device).long()
    centres = centres.to(embeddings.device).float().detach()
    dist = _euclidean(embeddings, centres)  # [R, B]
    negatives = cyclic_hard_negatives(dist, owner, centres, candidates, nearest)
    rows = torch.arange(len(owner), device=dist.device)
    own = dist[rows, owner]
    neg = torch.where(negatives >= 0, dist[rows, negatives.clamp_min(0)], torch.zeros_like(own))
    return (margin + own - neg).clamp_min(0.0).mean(), negatives


def nearest_triplet_loss(features: Tensor, labels: Tensor, margin: float = 1.0) -> Tensor:
    """``mean_i max(0, margin + d(i, nearest positive) - d(i, nearest negative))``.

    Euclidean distances between the rows of ``features [B, D]`` (normalised by the
    caller); images without a positive or a negative in the batch are left out (zero
    when none has both).
    """
    labels = labels.to(features.device).long()
    dist = _euclidean(features, features)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=dist.device)
    inf = torch.full_like(dist, float("inf"))
    positive = torch.where(same & ~eye, dist, inf).min(dim=1).values
    negative = torch.where(~same, dist, inf).min(dim=1).values
    usable = torch.isfinite(positive) & torch.isfinite(negative)
    if not bool(usable.any()):
        return features.sum() * 0.0
    return (margin + positive[usable] - negative[usable]).clamp_min(0.0).mean()


# ----------------------------------------------------------------------------- method


@register_method
class Paul(Method):
    """Patch classifiers + triplet (pretrain), then PEDAL + IPFL (see the module docstring)."""

    name = "paul"
    params_cls = PaulParams
    needs_features = True  # once, for the patch memory (wants_features)
    uses_reference = True

    def __init__(self, encoder: nn.Module, params: PaulParams, info: TrainInfo) -> None:
        super().__init__(encoder, params, info)
        p = params
        self.pretraining = p.stage == "pretrain"
        self.num_patches = int(getattr(encoder, "num_patches", 0) or 1)
        if not hasattr(encoder, "num_patches"):
            warnings.warn(
                f"paul: encoder {type(encoder).__name__} has no patches; its embedding is "
                "treated as one patch (use a patchnet_* model)",
                stacklevel=2,
            )
        self.patch_dim = int(getattr(encoder, "patch_dim", 0) or info.embedding_dim)
        d, e = self.patch_dim, p.embedding_dim
        self.embeddings = nn.ModuleList(nn.Linear(d, e) for _ in range(self.num_patches))
        generator = getattr(encoder, "generator", None)
        self.generator_params = [] if generator is None else list(generator.parameters())
        if self.pretraining:
            classes = info.num_reference_classes
            if classes < 1:
                raise ValueError(
                    "paul's pretrain stage trains identity classifiers on a labelled "
                    "reference set: pass --reference FORMAT:PATH"
                )
            self.classifiers = nn.ModuleList(nn.Linear(d, classes) for _ in range(self.num_patches))
            if p.generator_lr_mult == 0:
                self._freeze(self.generator_params)
        else:
            self.classifiers = nn.ModuleList()
            self._freeze(self.generator_params)
            self._freeze(list(self.embeddings.parameters()))
        n = 0 if self.pretraining else info.num_train
        shape = (self.num_patches, d)
        self.patch_memory = PatchMemory(n if p.pedal else 0, shape, p.memory_momentum)
        centre_shape = (self.num_patches, e)
        self.centre_memory = PatchMemory(n if p.ipfl else 0, centre_shape, p.memory_momentum)
        self._pending: tuple[Tensor, Tensor, Tensor] | None = None

    @staticmethod
    def _freeze(params: list[nn.Parameter]) -> None:
        for param in params:
            param.requires_grad_(False)

    # ------------------------------------------------------------------ contract

    @classmethod
    def needs_reference(cls, params: Params) -> bool:
        """Only the pre-training reads the reference set."""
        return getattr(params, "stage", "unsupervised") == "pretrain"

    def streams(self) -> tuple[str, ...]:
        return ("reference",) if self.pretraining else ("target",)

    def wants_features(self, epoch: int) -> bool:
        """The target features once, to fill the patch memory (PEDAL only)."""
        return not self.pretraining and self.params.pedal and not self.patch_memory.ready

    def view_transforms(self, base: Compose) -> dict[str, Callable[..., Tensor]]:
        """The surrogate positive of each target image (unsupervised stage)."""
        if self.pretraining:
            return {}
        p = self.params
        return {
            "positive": build_surrogate_transform(
                base,
                jitter=tuple(p.positive_jitter),  # type: ignore[arg-type]
                degrees=p.positive_rotation,
                area=(p.positive_area[0], p.positive_area[1]),
            )
        }

    def encoder_param_groups(self) -> dict[str, tuple[list[nn.Parameter], float]]:
        """The PGN in its own group while it trains (pre-training, ``generator_lr_mult > 0``)."""
        trainable = [q for q in self.generator_params if q.requires_grad]
        if not trainable:
            return {}
        return {"generator": (trainable, self.params.generator_lr_mult)}

    def lr_factor(self, group: str, epoch: float) -> float:
        """The PGN's lr is on within ``generator_epochs = [start, stop)`` only."""
        if group != "generator":
            return 1.0
        start, stop = self.params.generator_epochs
        return 1.0 if start <= int(epoch) < stop else 0.0

    def prepare_epoch(self, context: EpochContext) -> EpochPlan:
        """Every target image is its own label (a random sampler draws images); the first
        unsupervised epoch fills the patch memory from the loop's features."""
        stats: dict[str, float] = {}
        if self.wants_features(context.epoch):
            if context.features is None:
                raise ValueError("paul needs the target features to fill its patch memory")
            self.patch_memory.fill(self.split(context.features.to(self.patch_memory.features)))
            stats["memory_filled"] = 1.0
        return EpochPlan(labels=np.arange(self.info.num_train, dtype=np.int64), stats=stats)

    def split(self, embeddings: Tensor) -> Tensor:
        """``[N, P * d]`` encoder embeddings -> the unit patch features ``[N, P, d]``."""
        patches = embeddings.float().reshape(len(embeddings), self.num_patches, -1)
        return F.normalize(patches, dim=-1)

    def _patches(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(unit patch features [B, P, d], pre-normalisation features [B, P, d])``."""
        out = self.encoder.forward_train(images)
        if out.patch_feats is not None:
            patches = out.patch_feats.float()
            raw = out.aux.get("patch_raw", patches).float()
            return patches, raw
        patches = self.split(out.embedding)
        return patches, patches

    def projections(self, patches: Tensor) -> Tensor:
        """IPFL's ``e``: ``x_m . L2rows(W_m)^T`` per patch, concatenated, ``[B, P * e]``."""
        weights = torch.stack([F.normalize(g.weight, dim=1) for g in self.embeddings])
        return torch.einsum("bpd,ped->bpe", patches, weights.to(patches)).flatten(1)

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: dict[str, dict[str, Tensor]]) -> StepOutput:
        if self.pretraining:
            return self._pretrain_step(batch["reference"])
        return self._unsupervised_step(batch["target"])

    def _pretrain_step(self, stream: dict[str, Tensor]) -> StepOutput:
        p = self.params
        labels = stream["label"].long()
        _, raw = self._patches(stream["image"])
        hidden = F.relu(raw)
        logits = [fc(hidden[:, m]) for m, fc in enumerate(self.classifiers)]
        ce = torch.stack([F.cross_entropy(z, labels.to(z.device)) for z in logits]).sum()
        losses = {"ce": ce}
        if p.triplet_weight:
            emb = torch.cat([g(hidden[:, m]) for m, g in enumerate(self.embeddings)], dim=1)
            triplet = nearest_triplet_loss(F.normalize(emb, dim=1), labels, p.triplet_margin)
            losses["triplet"] = p.triplet_weight * triplet
        acc = (logits[0].detach().argmax(1) == labels.to(logits[0].device)).float().mean()
        return StepOutput(losses=losses, extras={"acc_patch0": acc})

    def _unsupervised_step(self, stream: dict[str, Tensor]) -> StepOutput:
        p = self.params
        if "positive" not in stream:
            raise ValueError("paul's unsupervised stage needs the surrogate positive view")
        b = len(stream["image"])
        patches, _ = self._patches(torch.cat([stream["image"], stream["positive"]]))
        original = patches[:b]
        index = stream["index"].to(patches.device).long()
        losses: dict[str, Tensor] = {}
        extras: dict[str, Tensor] = {}
        rows = patches.new_zeros(b, 0)
        centre_values = patches.new_zeros(b, 0)
        if p.pedal:
            memory = self.patch_memory
            slots = memory.updated(index, original.detach())
            bank = memory.features.index_copy(0, index.to(memory.features.device), slots)
            valid = memory.seen.clone()
            valid[index.to(valid.device)] = True
            pedal = pedal_loss(original, bank, index, p.scale, p.neighbours, valid)
            losses["pedal"] = p.pedal_weight * pedal
            rows = original.detach().flatten(1)
        if p.ipfl:
            e = self.projections(patches)  # [2B, P * e]
            mean = 0.5 * (e[:b] + e[b:]).detach()
            centres = self.centre_memory.updated(index, mean.view(b, self.num_patches, -1))
            owner = torch.arange(b, device=e.device).repeat(2)
            ipfl, negatives = ipfl_loss(
                e, owner, centres.flatten(1), p.margin, p.ranking_candidates, p.ranking_nearest
            )
            losses["ipfl"] = p.ipfl_weight * ipfl
            extras["negatives_found"] = (negatives >= 0).float().mean()
            centre_values = mean
        self._pending = (index, rows, centre_values)
        return StepOutput(losses=losses, features=original.detach().flatten(1), extras=extras)

    @torch.no_grad()
    def after_step(self, batch: dict[str, dict[str, Tensor]], output: StepOutput) -> None:
        """Both memories from the (all-gathered) batch: the rule the loss already saw."""
        if self._pending is None:
            return
        index, rows, centres = self._pending
        self._pending = None
        width = rows.shape[1]
        values, index = gather_batch(torch.cat([rows, centres], dim=1), index)
        if self.params.pedal:
            patch = values[:, :width].view(len(index), self.num_patches, -1)
            self.patch_memory.update(index, patch)
        if self.params.ipfl:
            centre = values[:, width:].view(len(index), self.num_patches, -1)
            self.centre_memory.update(index, centre)

    def init_from_state(self, state: Mapping[str, Any]) -> list[str]:
        """The embedding layers (and classifiers, for a pretrain run) of another run."""
        taken = super().init_from_state(state)
        if not self.pretraining and not any(name.startswith("embeddings.") for name in taken):
            warnings.warn(
                "paul --init: the checkpoint holds no patch embedding layers (not a paul "
                "pretrain run?); IPFL projects with random weights",
                stacklevel=2,
            )
        return taken
