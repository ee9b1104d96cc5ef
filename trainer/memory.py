"""Memories: one L2-normalised slot per pseudo-identity, or per train image.

Every memory is a plain buffer updated explicitly (``torch.no_grad``) from the
method's ``after_step``; nothing happens inside autograd, and checkpoints carry the
buffers, so a resumed run restores them exactly. The cluster memories are resized
each epoch to the new cluster count, and ``load_state_dict`` accepts a checkpoint of
any size (the buffer takes the saved shape).

* :class:`ClusterMemory`: the cluster memory. Initialised from the normalised
  cluster means; per step either
  - ``"instance"`` (cluster-contrast's reference code, ``cm.py``): each batch
    instance in turn moves its cluster's slot, ``c <- normalise(m * c + (1 - m) * x)``,
    so a slot follows its latest instances; or
  - ``"batch_mean"`` (AFF_SCL eq. (10)): each cluster in the batch moves once, towards
    the mean of its batch features, ``c <- normalise(m * c + (1 - m) * mean_batch(c))``.
* :class:`HardSampleMemory`: the hard-sample memory of AFF_SCL. Per step and per
  cluster ``i`` in the batch, the hard sample is the batch instance least similar
  to the cluster centre ``c_i`` (eq. (12), dot product), and
  ``h_i <- normalise(m * h_i + (1 - m) * hard_i)`` (eq. (13)).

* :class:`InstanceMemory`: one slot per train image (selective contrast's global bank
  ``[N, D]`` and local bank ``[N, P, d]``, normalised over the last axis), set from a
  pass over the train set, then ``slot_i <- normalise(m * slot_i + (1 - m) * x_i)``
  for the batch's images.
* :class:`MixtureMemory`: selective contrast's mixture bank ``[N, D]``, zero at the
  start, written by every anchor ``i`` into each of its positive slots ``j``:
  ``M_j <- normalise((M_j + x_i) / 2)``.
* :class:`PatchMemory`: PAUL's per-image memories ``[N, P, d]`` (patch features, or the
  per-patch projections of IPFL's centres): an image's first value is stored as it is,
  then ``w <- m w + (1 - m) x`` (``m`` = 0.9), never renormalised; ``seen`` marks the
  slots written so far. :meth:`PatchMemory.updated` gives the values a batch would
  leave without writing them, so a method can use them in its loss ("updated before
  the loss") and write the same rule in ``after_step``.

AFF_SCL: Wu, Yang and Wang, "Unsupervised Person Re-Identification with
Attention-Guided Fine-Grained Features and Symmetric Contrast Learning" (Sensors
2022); equation numbers are that paper's. Selective contrast: Pang et al., "Fully
Unsupervised Person Re-Identification via Selective Contrastive Learning" (ACM TOMM
2022), as its reference code (pangbo1997/Unsup_ReID ``engine/memory_bank.py``,
``engine/loss.py``). PAUL: Yang et al., "Patch-based Discriminative Feature Learning for
Unsupervised Person Re-identification" (CVPR 2019), eq. (1), as its reference code
(QizeYang/PAUL ``src/loss/smooth.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MEMORY_UPDATES",
    "ClusterMemory",
    "HardSampleMemory",
    "InstanceMemory",
    "MixtureMemory",
    "PatchMemory",
    "cluster_means",
]

MEMORY_UPDATES = ("instance", "batch_mean")
"""The :class:`ClusterMemory` update rules (see the module docstring)."""


def cluster_means(features: Tensor, labels: Tensor, num_clusters: int) -> Tensor:
    """L2-normalised mean feature of each cluster ``0..num_clusters-1`` (``-1`` ignored).

    Returns ``[num_clusters, D]``; a cluster without members gets a zero row.
    """
    labels = labels.to(features.device).long()
    keep = labels >= 0
    sums = features.new_zeros(num_clusters, features.shape[1])
    sums.index_add_(0, labels[keep], features[keep])
    return F.normalize(sums, dim=1)


class _SlotMemory(nn.Module):
    """A ``[C, D]`` buffer of unit-norm slots, resizable, that loads any saved size."""

    def __init__(self, dim: int, momentum: float) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.dim = int(dim)
        self.momentum = float(momentum)
        self.register_buffer("features", torch.zeros(0, self.dim))

    @property
    def num_slots(self) -> int:
        return int(self.features.shape[0])

    @torch.no_grad()
    def reset(self, slots: Tensor) -> None:
        """Replace the memory by ``slots`` ``[C, D]`` (normalised), e.g. a new epoch."""
        if slots.ndim != 2 or slots.shape[1] != self.dim:
            raise ValueError(f"slots must be [C, {self.dim}], got {list(slots.shape)}")
        self.features = F.normalize(slots.detach().to(self.features), dim=1).contiguous()

    @torch.no_grad()
    def _blend(self, rows: Tensor, targets: Tensor) -> None:
        """``slot <- normalise(m * slot + (1 - m) * target)`` for the given rows."""
        mixed = self.momentum * self.features[rows] + (1.0 - self.momentum) * targets
        self.features[rows] = F.normalize(mixed, dim=1)

    def _check_batch(self, features: Tensor, labels: Tensor) -> Tensor:
        labels = labels.to(self.features.device).long()
        if features.ndim != 2 or features.shape[1] != self.dim or len(features) != len(labels):
            raise ValueError(
                f"expected features [B, {self.dim}] and labels [B], "
                f"got {list(features.shape)} and {list(labels.shape)}"
            )
        if labels.numel() and int(labels.max()) >= self.num_slots:
            raise ValueError(f"label {int(labels.max())} >= memory size {self.num_slots}")
        return labels

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        saved = state_dict.get(prefix + "features")
        if isinstance(saved, Tensor) and saved.ndim == 2 and saved.shape[1] == self.dim:
            # The cluster count changes every epoch: take the saved size, then copy.
            self.features = self.features.new_empty(saved.shape)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        rule = getattr(self, "rule", None)
        return f"slots={self.num_slots}, dim={self.dim}, momentum={self.momentum}" + (
            f", update={rule}" if rule else ""
        )


class ClusterMemory(_SlotMemory):
    """Cluster-centroid memory (cluster contrast; AFF_SCL eqs. (9)-(10)).

    ``update``: ``"instance"`` (per instance, in batch order; the cluster-contrast
    reference) or ``"batch_mean"`` (once per cluster with its batch mean; AFF_SCL).
    """

    def __init__(self, dim: int, momentum: float, update: str = "instance") -> None:
        super().__init__(dim, momentum)
        if update not in MEMORY_UPDATES:
            raise ValueError(f"update must be one of {', '.join(MEMORY_UPDATES)}, got {update!r}")
        self.rule = update

    @torch.no_grad()
    def init_from(self, features: Tensor, labels: Tensor, num_clusters: int) -> None:
        """Slots = normalised cluster means of the epoch's train features."""
        self.reset(cluster_means(features.to(self.features.device), labels, num_clusters))

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """Momentum update of the batch's clusters by this memory's rule (outliers skipped)."""
        labels = self._check_batch(features, labels)
        keep = labels >= 0
        if not bool(keep.any()):
            return
        features, labels = features[keep].to(self.features), labels[keep]
        if self.rule == "instance":
            m = self.momentum
            for row, feature in zip(labels.tolist(), features, strict=True):
                self.features[row] = F.normalize(m * self.features[row] + (1 - m) * feature, dim=0)
            return
        rows, inverse = torch.unique(labels, return_inverse=True)
        sums = features.new_zeros(len(rows), self.dim).index_add_(0, inverse, features)
        counts = torch.bincount(inverse, minlength=len(rows)).to(features.dtype)
        self._blend(rows, sums / counts[:, None])


class HardSampleMemory(_SlotMemory):
    """Hard-sample memory (AFF_SCL eqs. (11)-(13))."""

    @torch.no_grad()
    def init_from(self, features: Tensor, labels: Tensor, num_clusters: int) -> None:
        """Slots = normalised cluster means, as in HHCL; they turn hard after one step.

        The AFF_SCL paper does not say how the slots start; the cluster mean is the safe
        choice (the hardest member of a noisy cluster is often a wrong member).
        """
        self.reset(cluster_means(features.to(self.features.device), labels, num_clusters))

    @staticmethod
    def hardest(features: Tensor, labels: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
        """Per cluster in the batch, the index of its instance least similar to its centre.

        Returns ``(clusters, batch_indices)``: the distinct labels (``>= 0``) in
        ascending order and, for each, the batch row with the smallest dot product
        with ``centres[label]`` (the first such row on ties).
        """
        labels = labels.long()
        valid = torch.nonzero(labels >= 0).squeeze(1)
        sims = (features[valid] * centres[labels[valid]].to(features)).sum(dim=1)
        clusters, inverse = torch.unique(labels[valid], return_inverse=True)
        lowest = torch.full((len(clusters),), float("inf"), dtype=sims.dtype, device=sims.device)
        lowest = lowest.scatter_reduce(0, inverse, sims, reduce="amin")
        is_min = sims == lowest[inverse]
        big = torch.iinfo(torch.long).max
        candidate = torch.where(is_min, valid, torch.full_like(valid, big))
        first = torch.full((len(clusters),), big, dtype=torch.long, device=valid.device)
        first = first.scatter_reduce(0, inverse, candidate, reduce="amin")
        return clusters, first

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor, centres: Tensor) -> None:
        """Move each batch cluster's slot towards its hardest instance (w.r.t. ``centres``)."""
        labels = self._check_batch(features, labels)
        if not bool((labels >= 0).any()):
            return
        features = features.to(self.features)
        clusters, rows = self.hardest(features, labels, centres.to(self.features))
        self._blend(clusters, features[rows])


def _distinct(rows: Tensor) -> bool:
    return int(torch.unique(rows).numel()) == int(rows.numel())


class InstanceMemory(nn.Module):
    """One unit slot per train image: ``features [N, *shape]``, normalised over the last axis.

    ``shape`` is ``D`` (a global bank) or ``(P, d)`` (a bank of ``P`` stripe features
    per image, each normalised on its own). ``ready`` records whether :meth:`reset` has
    filled the bank (it is a buffer, so a resumed run knows too).
    """

    def __init__(self, num_slots: int, shape: int | Sequence[int], momentum: float) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
        self.momentum = float(momentum)
        self.register_buffer("features", torch.zeros(int(num_slots), *self.shape))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))

    @property
    def num_slots(self) -> int:
        return int(self.features.shape[0])

    def _check(self, features: Tensor, rows: int | None = None) -> None:
        expected = [self.num_slots if rows is None else rows, *self.shape]
        if list(features.shape) != expected:
            raise ValueError(f"expected features {expected}, got {list(features.shape)}")

    @torch.no_grad()
    def reset(self, features: Tensor) -> None:
        """Fill every slot (``[N, *shape]``, normalised here) and mark the bank ready."""
        self._check(features)
        self.features.copy_(F.normalize(features.detach().to(self.features), dim=-1))
        self.ready.fill_(True)

    @torch.no_grad()
    def update(self, indices: Tensor, features: Tensor) -> None:
        """``slot_i <- normalise(m * slot_i + (1 - m) * x_i)`` for the batch's images.

        An image that occurs twice in the batch moves twice, in batch order.
        """
        indices = indices.to(self.features.device).long().reshape(-1)
        self._check(features, len(indices))
        features = features.detach().to(self.features)
        m = self.momentum
        if _distinct(indices):
            mixed = m * self.features[indices] + (1.0 - m) * features
            self.features[indices] = F.normalize(mixed, dim=-1)
            return
        for row, x in zip(indices.tolist(), features, strict=True):
            self.features[row] = F.normalize(m * self.features[row] + (1.0 - m) * x, dim=-1)

    def extra_repr(self) -> str:
        return f"slots={self.num_slots}, shape={self.shape}, momentum={self.momentum}"


class MixtureMemory(nn.Module):
    """Selective contrast's mixture bank: ``features [N, D]``, zero until written.

    :meth:`write` moves each anchor's positive slots halfway towards the anchor:
    ``M_j <- normalise((M_j + x_i) / 2)`` (the reference's ``Exclusive.backward``).
    """

    def __init__(self, num_slots: int, dim: int) -> None:
        super().__init__()
        self.dim = int(dim)
        self.register_buffer("features", torch.zeros(int(num_slots), self.dim))

    @property
    def num_slots(self) -> int:
        return int(self.features.shape[0])

    @torch.no_grad()
    def write(self, positives: Tensor, features: Tensor) -> None:
        """Write anchor ``i`` (``features[i]``, ``[B, D]``) into slots ``positives[i]`` ``[B, K]``.

        Order: column by column (self first, then the neighbours in rank order), the
        anchors in batch order within a column; a slot written twice moves twice.
        """
        positives = positives.to(self.features.device).long()
        if positives.ndim != 2 or features.shape != (len(positives), self.dim):
            raise ValueError(
                f"expected positives [B, K] and features [B, {self.dim}], "
                f"got {list(positives.shape)} and {list(features.shape)}"
            )
        features = features.detach().to(self.features)
        for column in positives.t():
            if _distinct(column):
                mixed = (self.features[column] + features) / 2
                self.features[column] = F.normalize(mixed, dim=1)
                continue
            for row, x in zip(column.tolist(), features, strict=True):
                self.features[row] = F.normalize((self.features[row] + x) / 2, dim=0)

    def extra_repr(self) -> str:
        return f"slots={self.num_slots}, dim={self.dim}"


class PatchMemory(nn.Module):
    """One running average per train image: ``features [N, *shape]`` and ``seen [N]``.

    ``momentum`` is the weight of the old value (PAUL: 0.9, the code's ``1 - mm``). A
    slot's first write stores the value; later writes blend it in; nothing is
    renormalised (the paper's eq. (1)). :meth:`fill` writes every slot at once (PAUL's
    pass over the train set before training).
    """

    def __init__(self, num_slots: int, shape: int | Sequence[int], momentum: float) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
        self.momentum = float(momentum)
        self.register_buffer("features", torch.zeros(int(num_slots), *self.shape))
        self.register_buffer("seen", torch.zeros(int(num_slots), dtype=torch.bool))

    @property
    def num_slots(self) -> int:
        return int(self.features.shape[0])

    @property
    def ready(self) -> bool:
        """Whether every slot has been written."""
        return bool(self.seen.all())

    def _check(self, indices: Tensor, values: Tensor) -> Tensor:
        indices = indices.to(self.features.device).long().reshape(-1)
        if list(values.shape) != [len(indices), *self.shape]:
            expected = [len(indices), *self.shape]
            raise ValueError(f"expected values {expected}, got {list(values.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_slots):
            raise ValueError(f"slot indices must be in [0, {self.num_slots})")
        return indices

    @torch.no_grad()
    def fill(self, values: Tensor) -> None:
        """Write every slot (``[N, *shape]``) and mark all seen."""
        if list(values.shape) != [self.num_slots, *self.shape]:
            expected = [self.num_slots, *self.shape]
            raise ValueError(f"expected values {expected}, got {list(values.shape)}")
        self.features.copy_(values.detach().to(self.features))
        self.seen.fill_(True)

    @torch.no_grad()
    def updated(self, indices: Tensor, values: Tensor) -> Tensor:
        """``[B, *shape]``: each batch row's slot after writing ``values`` in batch order
        (an image twice in the batch gets its final value in both rows); nothing is
        written."""
        indices = self._check(indices, values)
        values = values.detach().to(self.features)
        m = self.momentum
        if int(torch.unique(indices).numel()) == len(indices):
            old, seen = self.features[indices], self.seen[indices]
            seen = seen.view(-1, *([1] * len(self.shape)))
            return torch.where(seen, m * old + (1.0 - m) * values, values)
        state: dict[int, Tensor] = {}
        for row, value in zip(indices.tolist(), values, strict=True):
            if row in state:
                state[row] = m * state[row] + (1.0 - m) * value
            elif bool(self.seen[row]):
                state[row] = m * self.features[row] + (1.0 - m) * value
            else:
                state[row] = value
        return torch.stack([state[row] for row in indices.tolist()])

    @torch.no_grad()
    def update(self, indices: Tensor, values: Tensor) -> None:
        """Write ``values`` ``[B, *shape]`` into the slots ``indices`` (the rule above)."""
        indices = self._check(indices, values)
        new = self.updated(indices, values)
        self.features[indices] = new  # duplicates carry the same final value
        self.seen[indices] = True

    def extra_repr(self) -> str:
        return f"slots={self.num_slots}, shape={self.shape}, momentum={self.momentum}"
