"""Value types of the gallery API: entry metadata, search filters, matches and errors."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_CAMERA = 2**31 - 1
"""Largest camera id: cameras are ``0..MAX_CAMERA`` (the gRPC API's ``int32``)."""
MAX_ID = 2**63 - 1
"""Largest entry id (ids are ``1..MAX_ID``: SQLite's ``INTEGER``, gRPC's ``uint64``)."""
TRACK_RANGE = (-(2**63), 2**63 - 1)
"""Track ids are 64-bit signed integers (SQLite's ``INTEGER``, gRPC's ``int64``)."""
MAX_SOURCE_CHARS = 4096
"""Longest ``source`` string."""
MAX_EXTRA_DEPTH = 32
"""Deepest nesting of lists and objects in ``extra``."""
MAX_EXTRA_BYTES = 64 * 1024
"""Largest ``extra`` once encoded as JSON."""
MAX_KEY_CHARS = 256
"""Longest entry ``key`` (the client-chosen idempotency key of an add)."""


class GalleryError(ValueError):
    """Bad input (wrong dimension, NaN, count mismatch, unknown kind...); the message says what."""


class GalleryClosedError(RuntimeError):
    """The gallery was used after ``close()``."""


class GalleryUnavailableError(RuntimeError):
    """The gallery's backend cannot be reached (a Milvus server down or restarting).

    Nothing is known to have changed: a write that raised this was not acknowledged and
    may be retried (with a ``key``, a retry never duplicates). The gallery reconnects by
    itself on the next call once the backend answers again.
    """


class GalleryStorageError(RuntimeError):
    """The gallery's storage refused a write (disk full, read-only, I/O error).

    Nothing of the failed write is kept (the transaction is rolled back and its files
    removed); the gallery stays open and readable. ``reason`` is ``"full"``,
    ``"read-only"`` or ``"io"``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _optional_int(
    name: str, value: object, *, low: int = TRACK_RANGE[0], high: int = TRACK_RANGE[1]
) -> int | None:
    """``value`` as an int in ``low..high``, or None; ``ValueError`` naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer or None, got {_short(value)}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {_short(value)}")
    return int(value)


def _short(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (an int of 5,000 digits is not echoed)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return f"an integer of more than {limit} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _optional_float(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number or None, got {_short(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        raise ValueError(f"{name} must be a finite number, got {_short(value)}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


def _check_text(name: str, text: str) -> None:
    """Text the gallery can store and every API can send back: valid Unicode (no lone
    UTF-16 surrogate, which no UTF-8 encoder accepts)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{name} is not valid Unicode (a lone surrogate at position {error.start})"
        ) from None


def _check_json(name: str, value: object, depth: int = 0) -> None:
    """JSON values only (dicts with string keys, lists, strings, finite numbers, bools,
    None), nested at most ``MAX_EXTRA_DEPTH`` deep, with valid Unicode strings."""
    if depth > MAX_EXTRA_DEPTH:
        raise ValueError(f"{name} is nested more than {MAX_EXTRA_DEPTH} levels deep")
    if isinstance(value, str):
        _check_text(name, value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{name} keys must be strings, got {_short(key)}")
            _check_text(f"{name} key", key)
            _check_json(name, item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_json(name, item, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must not contain NaN or infinite numbers")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**100:
        raise ValueError(f"{name} integers must have at most 100 digits")
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise ValueError(f"{name} must be JSON-serialisable, got {type(value).__name__}")


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
    accepted for ``timestamp`` and ``box`` and stored as floats. The ranges are those
    every API can carry: ``camera`` ``0..MAX_CAMERA``, ``track`` a signed 64-bit
    integer, ``source`` and the strings of ``extra`` valid Unicode, ``extra`` JSON at
    most ``MAX_EXTRA_DEPTH`` deep and ``MAX_EXTRA_BYTES`` long.

    ``key`` (1..``MAX_KEY_CHARS`` characters) is a client-chosen idempotency key, unique
    in the gallery: adding an entry whose key is already stored adds nothing and answers
    the stored entry's id (a retried or replayed add is not a duplicate).
    """

    camera: int | None = None  # 0-based camera id
    timestamp: float | None = None  # seconds (unix or video time)
    track: int | None = None
    box: tuple[float, float, float, float] | None = None  # x, y, w, h in the source frame
    source: str | None = None  # file / stream / video name
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable user data
    key: str | None = None  # idempotency key, unique in the gallery

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.key is not None:
            if not isinstance(self.key, str) or not 1 <= len(self.key) <= MAX_KEY_CHARS:
                raise ValueError(
                    f"key must be a string of 1 to {MAX_KEY_CHARS} characters or None, "
                    f"got {_short(self.key)}"
                )
            _check_text("key", self.key)
        set_(self, "camera", _optional_int("camera", self.camera, low=0, high=MAX_CAMERA))
        set_(self, "timestamp", _optional_float("timestamp", self.timestamp))
        set_(self, "track", _optional_int("track", self.track))
        set_(self, "box", _optional_box(self.box))
        if self.source is not None:
            if not isinstance(self.source, str):
                raise ValueError(f"source must be a string or None, got {_short(self.source)}")
            if len(self.source) > MAX_SOURCE_CHARS:
                raise ValueError(f"source must be at most {MAX_SOURCE_CHARS} characters")
            _check_text("source", self.source)
        extra = {} if self.extra is None else self.extra
        if not isinstance(extra, Mapping):
            raise ValueError(f"extra must be a dict, got {type(extra).__name__}")
        _check_json("extra", extra)
        try:
            # Round trip: a copy the caller cannot mutate behind our back, JSON types only.
            text = json.dumps(dict(extra), allow_nan=False)
        except (TypeError, ValueError, RecursionError) as error:
            raise ValueError(f"extra must be JSON-serialisable: {error}") from None
        if len(text) > MAX_EXTRA_BYTES:
            raise ValueError(f"extra is {len(text)} bytes as JSON; the limit is {MAX_EXTRA_BYTES}")
        set_(self, "extra", json.loads(text))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``box`` as a list), the inverse of ``from_dict``."""
        return {
            "camera": self.camera,
            "timestamp": self.timestamp,
            "track": self.track,
            "box": None if self.box is None else list(self.box),
            "source": self.source,
            "extra": dict(self.extra),
            "key": self.key,
        }

    @classmethod
    def stored(
        cls,
        camera: int | None,
        timestamp: float | None,
        track: int | None,
        box: tuple[float, float, float, float] | None,
        source: str | None,
        extra: dict[str, Any],
        key: str | None = None,
    ) -> EntryMetadata:
        """Metadata read back from storage, as it was stored: not checked again, so a
        gallery written under older, looser checks stays readable."""
        meta = object.__new__(cls)
        values = {"camera": camera, "timestamp": timestamp, "track": track}
        values.update(box=None if box is None else tuple(box), source=source, extra=extra)
        values["key"] = key
        for name, value in values.items():
            object.__setattr__(meta, name, value)
        return meta

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EntryMetadata:
        """Build from a dict with any subset of the fields; ``ValueError`` on bad keys or types."""
        if not isinstance(data, Mapping):
            raise ValueError(f"metadata must be a dict, got {type(data).__name__}")
        known = {"camera", "timestamp", "track", "box", "source", "extra", "key"}
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
    """Camera ids ``0..MAX_CAMERA`` (-1, the index's "no camera" marker, is refused)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a set of camera ids, got {_short(values)}")
    cameras = (_optional_int(f"{name} item", v, low=0, high=MAX_CAMERA) for v in values)
    return frozenset(cameras)  # type: ignore[arg-type]


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
