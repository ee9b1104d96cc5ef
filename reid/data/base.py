"""The one record type every dataset format produces, and the dataset container.

Conventions (the Market-1501 ones, used by every loader):

* ``pid`` is the identity label. ``-1`` marks a *junk* image (never counts in
  evaluation), ``0`` a *distractor* (a valid negative), ``None`` an image with no
  label at all (unlabeled training data from a plain folder).
* ``camid`` is a 0-based camera index (Market's ``c1`` becomes ``0``).
* ``frame`` is the frame number when the format encodes one; ``timestamp`` is in
  seconds when the source provides it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

JUNK_PID = -1
DISTRACTOR_PID = 0
SPLITS = ("train", "query", "gallery")


class DatasetError(ValueError):
    """A dataset could not be read; the message names the file and what was expected."""


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image of a re-ID dataset."""

    path: Path
    pid: int | None
    camid: int
    frame: int | None = None
    timestamp: float | None = None

    @property
    def is_junk(self) -> bool:
        return self.pid == JUNK_PID

    @property
    def is_distractor(self) -> bool:
        return self.pid == DISTRACTOR_PID

    @property
    def is_labeled(self) -> bool:
        return self.pid is not None


@dataclass(frozen=True, slots=True)
class SplitSummary:
    """Counts for one split, as reported in re-ID papers."""

    split: str
    ids: int
    images: int
    cameras: int
    distractors: int
    junk: int
    unlabeled: int


def summarize_split(split: str, records: Sequence[ImageRecord]) -> SplitSummary:
    """Count identities (excluding junk/distractors/unlabeled), images and cameras."""
    ids = {r.pid for r in records if r.pid is not None and r.pid > 0}
    return SplitSummary(
        split=split,
        ids=len(ids),
        images=len(records),
        cameras=len({r.camid for r in records}),
        distractors=sum(r.is_distractor for r in records),
        junk=sum(r.is_junk for r in records),
        unlabeled=sum(not r.is_labeled for r in records),
    )


@dataclass
class ReIDDataset:
    """Train / query / gallery splits of one dataset.

    ``dropped`` counts images a loader left out of a split, keyed by a readable
    reason (for example ``"train: junk (pid -1)"``), so nothing disappears silently.
    """

    name: str
    root: Path
    train: list[ImageRecord] = field(default_factory=list)
    query: list[ImageRecord] = field(default_factory=list)
    gallery: list[ImageRecord] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)

    def split(self, name: str) -> list[ImageRecord]:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def summaries(self) -> list[SplitSummary]:
        return [summarize_split(s, self.split(s)) for s in SPLITS]

    def summary(self) -> str:
        """A plain-text table like the dataset tables in re-ID papers."""
        return format_summary(self.name, self.summaries(), self.dropped)

    @property
    def has_evaluation_splits(self) -> bool:
        return bool(self.query) and bool(self.gallery)


def format_summary(
    name: str, rows: Iterable[SplitSummary], dropped: dict[str, int] | None = None
) -> str:
    from reid.tables import render_table

    header = ("subset", "# ids", "# images", "# cameras", "# distractors", "# junk", "# unlabeled")
    body = [(r.split, r.ids, r.images, r.cameras, r.distractors, r.junk, r.unlabeled) for r in rows]
    table = render_table(header, body, indent=2)
    out = [f"Dataset {name}", table]
    for reason, count in sorted((dropped or {}).items()):
        out.append(f"  dropped {count} image(s): {reason}")
    return "\n".join(out)


def label_arrays(records: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    """``(pids, camids)`` as int64 arrays for evaluation; every record must be labeled."""
    unlabeled = [r.path for r in records if r.pid is None]
    if unlabeled:
        raise DatasetError(
            f"{len(unlabeled)} image(s) have no identity label (first: {unlabeled[0]}); "
            "evaluation needs labeled query and gallery images"
        )
    pids = np.fromiter((r.pid for r in records), dtype=np.int64, count=len(records))
    camids = np.fromiter((r.camid for r in records), dtype=np.int64, count=len(records))
    return pids, camids
