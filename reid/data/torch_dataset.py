"""``torch.utils.data`` glue: image records -> batches of named tensors.

Reproducible augmentation with any ``num_workers``: every sample gets its own
``numpy.random.Generator`` seeded from ``(seed, epoch, index, draw)`` and handed to
the transform, so the result does not depend on which worker loads it or on global
random state. ``draw`` is the sample's position in the epoch's stream when the
loader iterates a :class:`KeyedSampler` (what :func:`make_train_loader` builds):
an image drawn twice in an epoch (P x K samplers upsample small identities, and
cluster-contrast's 200 iterations revisit every image several times) is then
augmented differently each time, and since the epoch travels inside the key,
``persistent_workers=True`` is safe. Plain integer indices use ``draw = 0`` and the
epoch set with :meth:`ImageDataset.set_epoch`.

Extra views (``views``, e.g. PAUL's surrogate positive) are further transforms of the
same image, each with its own generator ``(seed, epoch, index, draw, v)`` (``v = 1, 2,
...`` in the order given), so adding a view never changes the main image's draw.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from reid.data.base import DatasetError, ImageRecord
from reid.data.io import read_image_rgb
from reid.data.transforms import build_eval_transform
from reid.preprocess import PreprocessConfig, PreprocessError

Transform = Callable[..., torch.Tensor]


class SampleKey(NamedTuple):
    """What :class:`ImageDataset` needs to load and augment one draw reproducibly."""

    index: int
    epoch: int
    draw: int


class ImageDataset(Dataset[dict[str, Any]]):
    """Records -> ``{"image": float32[3, H, W], "index", "label", "camid"}``.

    ``labels`` (pseudo-labels, one per record) override the records' pids; without
    them the label is the record's pid, or ``-1`` for unlabeled records. The
    transform is called as ``transform(image, rng)`` when it takes an ``rng``
    argument (every transform of :mod:`reid.data.transforms` does), else
    ``transform(image)``. ``views`` (name -> transform) add one more tensor per name,
    made from the same decoded image (see the module docstring).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Transform,
        labels: Sequence[int] | np.ndarray | None = None,
        seed: int = 0,
        views: Mapping[str, Transform] | None = None,
    ) -> None:
        if labels is not None and len(labels) != len(records):
            raise ValueError(f"got {len(labels)} labels for {len(records)} records")
        self.views = dict(views or {})
        taken = {"image", "index", "label", "camid"} & set(self.views)
        if taken:
            raise ValueError(f"view names {sorted(taken)} are taken by the sample's own keys")
        self.records = list(records)
        self.transform = transform
        self.labels = (
            [int(v) for v in labels]
            if labels is not None
            else [-1 if r.pid is None else r.pid for r in self.records]
        )
        self.seed = seed
        self.epoch = 0
        self._takes_rng = {
            name: _accepts_rng(t) for name, t in [("image", transform), *self.views.items()]
        }

    def set_epoch(self, epoch: int) -> None:
        """Epoch used to seed augmentation of plain integer indices."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any]:
        if not isinstance(key, SampleKey):
            key = SampleKey(int(key), self.epoch, 0)
        if not 0 <= key.index < len(self.records):
            raise IndexError(f"index {key.index} out of range for {len(self.records)} records")
        record = self.records[key.index]
        image = read_image_rgb(record.path)
        seed = [self.seed, key.epoch, key.index, key.draw]
        try:
            tensor = _apply(self.transform, image, seed, self._takes_rng["image"])
            extra = {
                name: _apply(view, image, [*seed, number], self._takes_rng[name])
                for number, (name, view) in enumerate(self.views.items(), start=1)
            }
        except PreprocessError as exc:
            raise DatasetError(f"{record.path}: cannot preprocess image ({exc})") from exc
        return {
            "image": tensor,
            "index": key.index,
            "label": self.labels[key.index],
            "camid": record.camid,
            **extra,
        }


class KeyedSampler(Sampler[SampleKey]):
    """Wrap an index sampler so each draw carries its epoch and stream position.

    Under DDP the position is made global with the inner sampler's ``rank`` and
    ``world_size`` attributes, so ranks never share a key.
    """

    def __init__(self, sampler: Sampler[int] | Sequence[int]) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch here and on the inner sampler (when it has ``set_epoch``)."""
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[SampleKey]:
        epoch = getattr(self.sampler, "epoch", self.epoch)
        rank = getattr(self.sampler, "rank", 0)
        world_size = getattr(self.sampler, "world_size", 1)
        for position, index in enumerate(self.sampler):
            yield SampleKey(int(index), epoch, position * world_size + rank)


def make_train_loader(
    dataset: ImageDataset,
    sampler: Sampler[int],
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Training loader over ``sampler`` (e.g. a P x K sampler), keyed per draw.

    Call ``sampler.set_epoch(epoch)`` before each epoch; workers stay alive between
    epochs. Incomplete last batches are dropped.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=KeyedSampler(sampler),
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=num_workers > 0,
    )


def make_eval_loader(
    records: Sequence[ImageRecord],
    config: PreprocessConfig,
    batch_size: int = 128,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Feature-extraction loader: records in order, inference preprocessing, no drops."""
    return DataLoader(
        ImageDataset(records, build_eval_transform(config)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=False,
    )


def _apply(
    transform: Transform, image: np.ndarray, seed: list[int], takes_rng: bool
) -> torch.Tensor:
    """``transform(image, rng)`` with a generator from ``seed``, or ``transform(image)``."""
    if takes_rng:
        return transform(image, np.random.default_rng(seed))
    return transform(image)


def _accepts_rng(transform: Transform) -> bool:
    try:
        return "rng" in inspect.signature(transform).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
