"""P x K identity samplers for metric and contrastive re-ID training.

Every consecutive block of ``batch_size`` indices holds ``P = batch_size / K``
distinct identities with ``K`` images each (use ``DataLoader(..., batch_size=
batch_size, sampler=sampler)``). Negative labels (``-1``, DBSCAN outliers) are
never sampled.

How an epoch is drawn: a *pass* gives every identity its *groups* of K images
(``balance="identity"``: one group per identity and pass, as in cluster-contrast's
sampler; ``"instance"``: ``ceil(n / K)`` groups covering all n images). Batches take
one group from each of P identities, chosen at random weighted by their remaining
groups, until fewer than P identities have groups left; the rest is dropped and a
new pass starts. Identities with fewer than K images repeat images, each image
appearing as evenly as possible. The stream of passes is endless and truncated to
``iters`` batches (or, by default, to about one pass).

Randomness depends only on ``(seed, epoch)``, so every rank of a distributed job
draws the same global stream and keeps batches ``rank, rank + world_size, ...``:
shares are disjoint and of equal length.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Literal

import numpy as np
from torch.utils.data import Sampler

Balance = Literal["identity", "instance"]


class PKSampler(Sampler[int]):
    """Yield dataset indices in batches of P identities x K instances.

    Args:
        labels: identity (or pseudo-) label per dataset index; negative = skip.
        num_instances: K, images per identity in a batch.
        batch_size: P * K.
        seed: base seed; the order depends only on ``(seed, epoch)``.
        iters: batches per epoch (and per rank); default about one pass of the data.
        balance: ``"identity"`` (every identity equally often) or ``"instance"``
            (every image equally often).
        rank, world_size: this process's share of the batches under DDP.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        num_instances: int = 4,
        batch_size: int = 64,
        seed: int = 0,
        iters: int | None = None,
        balance: Balance = "identity",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        labels = _int_array("labels", labels)
        _check_args(num_instances, batch_size, iters, balance, rank, world_size)
        self.num_instances, self.batch_size = num_instances, batch_size
        self.num_identities_per_batch = batch_size // num_instances
        self.seed, self.iters, self.balance = seed, iters, balance
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._identities = _group_by_identity(labels, self._camera_ids(len(labels)))
        self._check_enough_identities(len(labels))

    def _camera_ids(self, n: int) -> np.ndarray:
        """Camera of each index; the plain sampler treats all images as one camera."""
        return np.zeros(n, dtype=np.int64)

    @property
    def num_identities(self) -> int:
        """Identities that can be sampled (labels >= 0)."""
        return len(self._identities)

    @property
    def num_batches(self) -> int:
        """Batches this rank yields per epoch."""
        if self.iters is not None:
            return self.iters
        per_pass = sum(self._groups_per_pass(sum(map(len, cams))) for cams in self._identities)
        return max(1, math.ceil(per_pass // self.num_identities_per_batch / self.world_size))

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle reproducibly: the order depends only on ``(seed, epoch)``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def __iter__(self) -> Iterator[int]:
        total = self.num_batches * self.world_size
        batches = islice(self._stream(self.epoch), total)
        for batch in islice(batches, self.rank, None, self.world_size):
            yield from batch.tolist()

    def _stream(self, epoch: int) -> Iterator[np.ndarray]:
        """The endless global stream of batches, identical on every rank."""
        rng = np.random.default_rng([self.seed, epoch])
        while True:
            yield from self._one_pass(rng)

    def _one_pass(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        groups = [self._groups(cams, rng) for cams in self._identities]
        remaining = np.array([len(g) for g in groups], dtype=np.float64)
        p = self.num_identities_per_batch
        while np.count_nonzero(remaining) >= p:
            available = np.flatnonzero(remaining)
            weights = remaining[available] / remaining[available].sum()
            chosen = rng.choice(available, size=p, replace=False, p=weights)
            remaining[chosen] -= 1
            yield np.concatenate([groups[i].pop() for i in chosen])

    def _groups_per_pass(self, num_images: int) -> int:
        return 1 if self.balance == "identity" else math.ceil(num_images / self.num_instances)

    def _groups(self, cameras: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """This pass's groups of K indices for one identity, spread across its cameras."""
        num_groups = self._groups_per_pass(sum(len(c) for c in cameras))
        picks = _spread_over_cameras(cameras, num_groups * self.num_instances, rng)
        # Camera blocks dealt round-robin into groups: each group sees many cameras.
        return [picks[g::num_groups] for g in range(num_groups)]

    def _check_enough_identities(self, num_labels: int) -> None:
        if not self._identities:
            raise ValueError(
                f"no identity to sample: all {num_labels} labels are negative (outliers); "
                "need at least one label >= 0"
            )
        p = self.num_identities_per_batch
        if len(self._identities) < p:
            k = self.num_instances
            raise ValueError(
                f"a batch needs P = batch_size / num_instances = {p} distinct identities but "
                f"only {len(self._identities)} are labeled; lower batch_size to at most "
                f"{len(self._identities) * k} (or num_instances)"
            )


class PKCameraSampler(PKSampler):
    """:class:`PKSampler` whose K instances of an identity come from as many cameras
    as possible (round-robin over the identity's cameras), for cross-camera methods.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        camids: Sequence[int] | np.ndarray,
        num_instances: int = 4,
        batch_size: int = 64,
        seed: int = 0,
        iters: int | None = None,
        balance: Balance = "identity",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self._camids = _int_array("camids", camids)
        if len(self._camids) != len(labels):
            raise ValueError(
                f"camids has {len(self._camids)} entries but labels has {len(labels)}; "
                "need one camera per image"
            )
        super().__init__(labels, num_instances, batch_size, seed, iters, balance, rank, world_size)

    def _camera_ids(self, n: int) -> np.ndarray:
        return self._camids


class DistributedPKSampler(PKSampler):
    """:class:`PKSampler` taking rank and world size from ``torch.distributed`` when unset."""

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        num_instances: int = 4,
        batch_size: int = 64,
        seed: int = 0,
        iters: int | None = None,
        balance: Balance = "identity",
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        import torch.distributed as dist

        initialised = dist.is_available() and dist.is_initialized()
        if rank is None:
            rank = dist.get_rank() if initialised else 0
        if world_size is None:
            world_size = dist.get_world_size() if initialised else 1
        super().__init__(labels, num_instances, batch_size, seed, iters, balance, rank, world_size)


class ShuffleSampler(Sampler[int]):
    """Yield the usable indices in random order, pass after pass, in batches of ``batch_size``.

    The random-shuffle sampling of methods that draw images, not identities (MAR's
    target and reference halves). Indices with a negative label are never drawn. Each
    pass is one permutation of the usable indices; the passes are concatenated into an
    endless stream cut into batches (a batch may straddle two passes) and truncated to
    ``iters`` batches (default: about one pass). As for :class:`PKSampler`, the stream
    depends only on ``(seed, epoch)`` and a rank keeps batches ``rank, rank +
    world_size, ...``, so DDP shares are disjoint and equally long.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        batch_size: int = 64,
        seed: int = 0,
        iters: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        labels = _int_array("labels", labels)
        _check_args(1, batch_size, iters, "identity", rank, world_size)
        self.batch_size, self.seed, self.iters = batch_size, seed, iters
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._usable = np.flatnonzero(labels >= 0)
        if not self._usable.size:
            raise ValueError(
                f"no index to sample: all {len(labels)} labels are negative; "
                "need at least one label >= 0"
            )

    @property
    def num_batches(self) -> int:
        """Batches this rank yields per epoch."""
        if self.iters is not None:
            return self.iters
        return max(1, self._usable.size // self.batch_size // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle reproducibly: the order depends only on ``(seed, epoch)``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        total = self.num_batches * self.world_size
        stream = np.empty(0, dtype=np.int64)
        for b in range(total):
            while len(stream) < self.batch_size:
                stream = np.concatenate([stream, rng.permutation(self._usable)])
            batch, stream = stream[: self.batch_size], stream[self.batch_size :]
            if b % self.world_size == self.rank:
                yield from batch.tolist()


def _spread_over_cameras(
    cameras: list[np.ndarray], size: int, rng: np.random.Generator
) -> np.ndarray:
    """Pick ``size`` indices, one camera at a time in turn, returned in camera blocks.

    Each cycle uses every image once; further cycles (identities with too few
    images) reshuffle, so repeats are as even as possible.
    """
    order = rng.permutation(len(cameras))
    picks: list[list[int]] = [[] for _ in cameras]
    pools: list[list[int]] = [[] for _ in cameras]
    taken = 0
    while taken < size:
        if not any(pools):
            pools = [rng.permutation(c).tolist() for c in cameras]
        for cam in order:
            if pools[cam] and taken < size:
                picks[cam].append(pools[cam].pop())
                taken += 1
    return np.fromiter((i for cam in order for i in picks[cam]), dtype=np.int64, count=size)


def _group_by_identity(labels: np.ndarray, camids: np.ndarray) -> list[list[np.ndarray]]:
    """For each identity label >= 0 (sorted): its indices, split by camera."""
    identities = []
    for label in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == label)
        cams = camids[members]
        identities.append([members[cams == c] for c in np.unique(cams)])
    return identities


def _int_array(name: str, values: Sequence[int] | np.ndarray) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence, got shape {list(array.shape)}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {array.dtype}")
    return array.astype(np.int64)


def _check_args(
    num_instances: int,
    batch_size: int,
    iters: int | None,
    balance: str,
    rank: int,
    world_size: int,
) -> None:
    if num_instances < 1:
        raise ValueError(f"num_instances (K) must be >= 1, got {num_instances}")
    if batch_size < num_instances or batch_size % num_instances:
        raise ValueError(
            f"batch_size ({batch_size}) must be a positive multiple of num_instances "
            f"({num_instances}): batch_size = P identities x K instances"
        )
    if iters is not None and iters < 1:
        raise ValueError(f"iters must be >= 1 (or None for about one pass), got {iters}")
    if balance not in ("identity", "instance"):
        raise ValueError(f"balance must be 'identity' or 'instance', got {balance!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
