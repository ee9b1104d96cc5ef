"""The labelled auxiliary ("reference") set some methods train on beside the target.

MAR ("Unsupervised Person Re-identification by Soft Multilabel Learning", Yu et al.,
CVPR 2019) learns one agent per reference identity from a labelled set (MSMT17 in
the paper) whose identities are disjoint from the unlabelled target's. This module
turns a loaded dataset into that set and refuses what cannot be one:

* an image without an identity label (``pid`` ``None``) or a split with no usable
  image (junk ``-1`` and distractors ``0`` are left out and counted);
* the target dataset itself, or any reference image that is the target's (same file
  name, which carries the identity in every supported format, and the same bytes).

Identity labels are ``0..C-1`` over ``(group, pid)`` where the train split is one
group and query + gallery the other: formats such as MSMT17 number their train and
test identities separately, so pid 5 of the train split is not pid 5 of the test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reid.data.base import DISTRACTOR_PID, JUNK_PID, DatasetError, ImageRecord, ReIDDataset

__all__ = ["ReferenceSet", "ReferenceSetError", "build_reference_set", "find_overlap"]

MAX_SHOWN = 5


class ReferenceSetError(DatasetError):
    """The reference set cannot be used (unlabelled, empty, or overlapping the target)."""


@dataclass(frozen=True)
class ReferenceSet:
    """Reference images with identity labels ``0..num_classes-1``."""

    name: str
    root: Path
    records: list[ImageRecord]
    labels: np.ndarray
    """``int64 [N]``, one identity label per record."""
    num_classes: int
    dropped: dict[str, int]

    @property
    def camids(self) -> np.ndarray:
        return np.array([r.camid for r in self.records], dtype=np.int64)

    def summary(self) -> str:
        """One line: name, images, identities, cameras, what was left out."""
        cams = len({r.camid for r in self.records})
        text = (
            f"reference set {self.name} ({self.root}): {len(self.records)} images, "
            f"{self.num_classes} identities, {cams} cameras"
        )
        if self.dropped:
            text += "; left out " + ", ".join(
                f"{n} {why}" for why, n in sorted(self.dropped.items())
            )
        return text


def build_reference_set(
    dataset: ReIDDataset, splits: Sequence[str], target: ReIDDataset | None = None
) -> ReferenceSet:
    """The reference set of ``dataset``'s ``splits``, checked against ``target``.

    Raises ``ReferenceSetError`` for unlabelled images, an empty result, the target
    itself or images shared with the target (see the module docstring).
    """
    records: list[ImageRecord] = []
    keys: list[tuple[int, int]] = []  # (0 train | 1 test, pid): train identities first
    dropped: dict[str, int] = {}
    for split in splits:
        split_records = dataset.split(split)
        unlabelled = [r.path for r in split_records if r.pid is None]
        if unlabelled:
            raise ReferenceSetError(
                f"the reference set must be labelled, but {len(unlabelled)} image(s) of "
                f"{dataset.name!r} split {split!r} have no identity (first: {unlabelled[0]}); "
                "give every reference image its identity (e.g. the pid column of a folder "
                "manifest)"
            )
        group = 0 if split == "train" else 1
        for r in split_records:
            if r.pid in (JUNK_PID, DISTRACTOR_PID):
                why = f"{split} {'junk' if r.pid == JUNK_PID else 'distractor'} images"
                dropped[why] = dropped.get(why, 0) + 1
                continue
            records.append(r)
            keys.append((group, int(r.pid)))
    if not records:
        counts = ", ".join(f"{s}: {len(dataset.split(s))}" for s in splits)
        raise ReferenceSetError(
            f"the reference set {dataset.name!r} ({dataset.root}) has no labelled image in "
            f"its split(s) {', '.join(splits)} ({counts} images before leaving out junk and "
            "distractors); choose other reference.splits or another --reference"
        )
    if target is not None:
        _check_disjoint(dataset, records, target)
    index = {key: i for i, key in enumerate(sorted(set(keys)))}
    labels = np.array([index[k] for k in keys], dtype=np.int64)
    return ReferenceSet(dataset.name, dataset.root, records, labels, len(index), dropped)


def find_overlap(
    reference: Sequence[ImageRecord], target: Sequence[ImageRecord]
) -> list[ImageRecord]:
    """Reference records whose image is a target image: same file name and same bytes."""
    by_name: dict[str, list[Path]] = {}
    for r in target:
        by_name.setdefault(r.path.name, []).append(r.path)
    shared = []
    for r in reference:
        for other in by_name.get(r.path.name, ()):
            if _same_file(r.path, other):
                shared.append(r)
                break
    return shared


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
        if a.stat().st_size != b.stat().st_size:
            return False
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def _check_disjoint(
    dataset: ReIDDataset, records: Sequence[ImageRecord], target: ReIDDataset
) -> None:
    if Path(dataset.root).resolve() == Path(target.root).resolve():
        raise ReferenceSetError(
            f"the reference set is the target dataset itself ({dataset.root}); MAR-style "
            "methods need a labelled set of other identities (e.g. MSMT17, or a second "
            "synthetic set: python -m reid.data.synthetic REF --seed 1 --pid-offset 5000)"
        )
    shared = find_overlap(records, [*target.train, *target.query, *target.gallery])
    if shared:
        pids = sorted({int(r.pid) for r in shared if r.pid is not None})
        shown = ", ".join(str(r.path) for r in shared[:MAX_SHOWN])
        pid_text = ", ".join(map(str, pids[:MAX_SHOWN])) + (
            ", ..." if len(pids) > MAX_SHOWN else ""
        )
        raise ReferenceSetError(
            f"the reference set shares {len(shared)} image(s) of {len(pids)} identities "
            f"(pids {pid_text}) "
            f"with the target {target.name!r} (same file names and bytes; first: {shown}); "
            "its identities must be disjoint from the target's"
        )
