"""Value types of the gallery API: entry metadata, search filters, matches and errors."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class GalleryError(ValueError):
    """Bad input (wrong dimension, NaN, count mismatch, unknown kind...); the message says what."""


class GalleryClosedError(RuntimeError):
    """The gallery was used after ``close()``."""


def _optional_int(name: str, value: object, *, non_negative: bool = False) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer or None, got {value!r}")
    if non_negative and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def _optional_float(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number or None, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def _optional_box(value: object) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"box must be a sequence of 4 numbers (x, y, w, h), got {value!r}")
    items = list(value)
    if len(items) != 4:
        raise ValueError(f"box must have 4 numbers (x, y, w, h), got {len(items)}")
    x, y, w, h = (_optional_float("box value", item) for item in items)
    if None in (x, y, w, h):
        raise ValueError(f"box values must be numbers, got {value!r}")
    return (x, y, w, h)  # type: ignore[return-value]


@dataclass(frozen=True)
class EntryMetadata:
    """Where and when a gallery entry was seen. Every field is optional.

    Values are checked on construction (``ValueError`` naming the field); integers are
    accepted for ``timestamp`` and ``box`` and stored as floats.
    """

    camera: int | None = None  # 0-based camera id
    timestamp: float | None = None  # seconds (unix or video time)
    track: int | None = None
    box: tuple[float, float, float, float] | None = None  # x, y, w, h in the source frame
    source: str | None = None  # file / stream / video name
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable user data

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "camera", _optional_int("camera", self.camera, non_negative=True))
        set_(self, "timestamp", _optional_float("timestamp", self.timestamp))
        set_(self, "track", _optional_int("track", self.track))
        set_(self, "box", _optional_box(self.box))
        if self.source is not None and not isinstance(self.source, str):
            raise ValueError(f"source must be a string or None, got {self.source!r}")
        extra = {} if self.extra is None else self.extra
        if not isinstance(extra, Mapping):
            raise ValueError(f"extra must be a dict, got {type(extra).__name__}")
        try:
            # Round trip: a copy the caller cannot mutate behind our back, JSON types only.
            extra = json.loads(json.dumps(dict(extra), allow_nan=False))
        except (TypeError, ValueError) as error:
            raise ValueError(f"extra must be JSON-serialisable: {error}") from None
        set_(self, "extra", extra)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``box`` as a list), the inverse of ``from_dict``."""
        return {
            "camera": self.camera,
            "timestamp": self.timestamp,
            "track": self.track,
            "box": None if self.box is None else list(self.box),
            "source": self.source,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EntryMetadata:
        """Build from a dict with any subset of the fields; ``ValueError`` on bad keys or types."""
        if not isinstance(data, Mapping):
            raise ValueError(f"metadata must be a dict, got {type(data).__name__}")
        known = {"camera", "timestamp", "track", "box", "source", "extra"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown metadata field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


@dataclass(frozen=True)
class SearchFilters:
    """Which entries a search may return; all conditions must hold.

    Entries without a camera pass ``exclude_cameras`` but fail ``include_cameras``;
    entries without a timestamp fail any time bound. ``min_score`` drops matches whose
    score is below it. The time window is inclusive at both ends.
    """

    exclude_cameras: frozenset[int] = frozenset()
    include_cameras: frozenset[int] | None = None  # None = all
    time_from: float | None = None
    time_to: float | None = None
    min_score: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "exclude_cameras", _camera_set("exclude_cameras", self.exclude_cameras))
        if self.include_cameras is not None:
            set_(self, "include_cameras", _camera_set("include_cameras", self.include_cameras))
        for name in ("time_from", "time_to", "min_score"):
            set_(self, name, _optional_float(name, getattr(self, name)))

    @property
    def selects_all(self) -> bool:
        """True when no entry is filtered out before scoring (``min_score`` aside)."""
        return (
            not self.exclude_cameras
            and self.include_cameras is None
            and self.time_from is None
            and self.time_to is None
        )


def _camera_set(name: str, values: Iterable[int]) -> frozenset[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a set of camera ids, got {values!r}")
    return frozenset(_optional_int(f"{name} item", v) for v in values)  # type: ignore[misc]


@dataclass(frozen=True)
class Match:
    """One search result."""

    id: int
    score: float  # inner product of L2-normalised vectors (cosine), higher = closer
    metadata: EntryMetadata
    has_thumbnail: bool


@dataclass(frozen=True)
class Entry:
    """One stored gallery entry (without its embedding)."""

    id: int
    metadata: EntryMetadata
    has_thumbnail: bool
    created: float  # unix time of the add


@dataclass(frozen=True)
class EntryPage:
    """One page of the gallery's entries in id order (``Gallery.page``)."""

    entries: list[Entry]
    total: int  # entries matching the filters, on every page together
    offset: int
    limit: int
