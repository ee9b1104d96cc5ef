"""Frame sources of one camera: a video file, an image folder, a stream or a device.

Every source yields :class:`Frame` values (index, stream time, BGR image) in order and
can start at a frame index (a resumed file). Frames are sampled to the target rate
from their stream time (:func:`sampled`), so a resumed run samples the same frames.

* a **video file**: OpenCV (FFmpeg) decoding; stream time = index / the file's frame rate;
* an **image folder**: the images in name order (unreadable ones skipped with a
  warning); times from ``timestamps.csv``
  (``name,seconds`` lines, seconds relative to the start time or unix times) or from
  numbers in the file names (``000123.jpg``: frame 123; ``1700000000.250.jpg``: unix
  seconds), else index / ``--fps``;
* **live** sources (``rtsp://``, ``http(s)://``, a device number or ``/dev/videoN``):
  :class:`LiveSource` opens them with open/read timeouts and reconnects with backoff;
  times are the wall clock.
"""

from __future__ import annotations

import csv
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

log = logging.getLogger("gallery.ingest")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
MANIFEST = "timestamps.csv"
LIVE_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")


class SourceError(RuntimeError):
    """A source cannot be opened or read; the message names it."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``index`` in the source, ``time`` in seconds (stream time for
    files and folders, unix time for live sources), ``image`` BGR ``uint8[H, W, 3]``."""

    index: int
    time: float
    image: np.ndarray


class Source(Protocol):
    name: str
    live: bool

    def frames(self, start: int = 0) -> Iterator[Frame]: ...

    def describe(self) -> dict[str, Any]: ...


def is_live(source: str) -> bool:
    """True for streams and capture devices (wall-clock times, no resume point)."""
    return source.startswith(LIVE_PREFIXES) or source.isdigit() or source.startswith("/dev/video")


def open_source(
    source: str, *, fps: float | None = None, probe: bool = True, stream_timeout_s: float = 10.0
) -> Source:
    """The source named by ``source`` (``fps``: the frame rate of an image folder without
    times); :class:`SourceError` when it cannot be read. A live source is probed once
    (``probe``): one that cannot be opened at start is an error, later losses are
    reconnected; ``stream_timeout_s`` is its open and its read timeout."""
    if is_live(source):
        live = LiveSource(source, open_timeout_s=stream_timeout_s, read_timeout_s=stream_timeout_s)
        if probe:
            live.probe()
        return live
    path = Path(source)
    if path.is_dir():
        return ImageFolderSource(path, fps=fps)
    if not path.exists():
        raise SourceError(f"{source}: no such file or directory")
    return VideoFileSource(path)


class VideoFileSource:
    """A video file, decoded in order by OpenCV."""

    live = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        capture = self._open()
        try:
            self.fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
            self.frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            ok, _ = capture.read()
        finally:
            capture.release()
        if not ok:
            raise SourceError(f"{path}: not a video OpenCV can decode (no frame could be read)")
        if not math.isfinite(self.fps) or self.fps <= 0:
            raise SourceError(f"{path}: the video reports no frame rate")

    def _open(self) -> cv2.VideoCapture:
        try:
            with self.path.open("rb"):
                pass
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot read it ({exc.strerror})") from None
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            raise SourceError(f"{self.path}: not a video OpenCV can open")
        return capture

    def frames(self, start: int = 0) -> Iterator[Frame]:
        capture = self._open()
        try:
            index = 0
            while index < start:  # decode-free skipping; exact for every codec, unlike seeking
                if not capture.grab():
                    return
                index += 1
            while True:
                ok, image = capture.read()
                if not ok:
                    return
                yield Frame(index, index / self.fps, image)
                index += 1
        finally:
            capture.release()

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "kind": "video file",
            "fps": self.fps,
            "frames": self.frame_count,
        }


class ImageFolderSource:
    """The images of a folder in name order, with times from a manifest or their names."""

    live = False

    def __init__(self, path: Path, *, fps: float | None = None) -> None:
        self.path = path
        self.name = str(path)
        self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(
                f"{path}: the folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        self.fps = fps or 1.0
        self.times, self.timing = self._times()
        self.label = str(path)  # the camera's name in log lines (set by the ingester)
        self.skipped = 0  # images that could not be read

    def _times(self) -> tuple[list[float], str]:
        manifest = self.path / MANIFEST
        if manifest.is_file():
            table: dict[str, float] = {}
            with manifest.open(newline="") as handle:
                for number, row in enumerate(csv.reader(handle), 1):
                    if not row or row[0].startswith("#") or row[0] == "name":
                        continue
                    try:
                        table[row[0].strip()] = float(row[1])
                    except (IndexError, ValueError):
                        raise SourceError(
                            f"{manifest}:{number}: expected 'name,seconds', got {','.join(row)!r}"
                        ) from None
            missing = [p.name for p in self.files if p.name not in table]
            if missing:
                raise SourceError(
                    f"{manifest} has no time for {missing[0]} ({len(missing)} missing)"
                )
            return [table[p.name] for p in self.files], MANIFEST
        numbers = [_name_number(p.stem) for p in self.files]
        if all(n is not None for n in numbers):
            values = [float(n) for n in numbers]  # type: ignore[arg-type]
            if values[0] > 1e8:  # unix seconds (after 1973)
                return values, "unix seconds in the file names"
            return [v / self.fps for v in values], "frame numbers in the file names"
        return [i / self.fps for i in range(len(self.files))], "file order"

    def frames(self, start: int = 0) -> Iterator[Frame]:
        for index in range(start, len(self.files)):
            image = cv2.imread(str(self.files[index]), cv2.IMREAD_COLOR)
            if image is None:  # one damaged frame does not stop the camera
                self.skipped += 1
                log.warning("%s: %s is not an image OpenCV can read; skipped",
                            self.label, self.files[index])  # fmt: skip
                continue
            yield Frame(index, self.times[index], image)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "kind": "image folder",
            "images": len(self.files),
            "times": self.timing,
        }


_NUMBER = re.compile(r"(\d+(?:\.\d+)?)$")


def _name_number(stem: str) -> float | None:
    match = _NUMBER.search(stem)
    return float(match.group(1)) if match else None


class LiveSource:
    """A stream or capture device, read with timeouts and reopened with backoff after a
    failure, until ``stop`` is set.

    A frame's time is the wall clock of its capture as far as the stream tells: its stream
    position (``CAP_PROP_POS_MSEC``) plus the least ``arrival - position`` seen on the
    connection, i.e. the frames that arrived closest to the live edge set the clock. A
    reader that falls behind the stream thus gets frames stamped when they were live, not
    when it read them, and ``now - time`` is how far behind live a frame is. Without
    stream positions (a device, a fake) the time is the arrival.

    ``capture_factory(source)`` opens the capture (tests pass a fake).
    """

    live = True

    def __init__(
        self,
        source: str,
        *,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        capture_factory: Callable[[str], Any] | None = None,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = source
        self.open_timeout_s, self.read_timeout_s = open_timeout_s, read_timeout_s
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.capture_factory = capture_factory or self._open_capture
        self.stop = stop or threading.Event()
        self.clock = clock
        self.sleep = sleep or (lambda s: self.stop.wait(s))
        self.monotonic = monotonic
        self.reconnects = 0  # connections lost or refused since the start
        self.label = source  # the camera's name in log lines (set by the ingester)
        self._gaps_s = 0.0  # seconds without frames of the outages that ended
        self._lost_at: float | None = None  # monotonic time of the last frame before an outage
        self._last_frame_at: float | None = None

    def _open_capture(self, source: str) -> Any:
        target: Any = int(source) if source.isdigit() else source
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000),
        ]  # fmt: skip
        api = cv2.CAP_ANY if isinstance(target, int) else cv2.CAP_FFMPEG
        return cv2.VideoCapture(target, api, params)

    def probe(self) -> None:
        """Open the stream and read one frame; :class:`SourceError` if that fails."""
        capture = self.capture_factory(self.name)
        try:
            if not capture.isOpened() or not capture.read()[0]:
                raise SourceError(
                    f"{self.name}: cannot open the stream or read a frame from it "
                    f"(open timeout {self.open_timeout_s:g} s, read timeout "
                    f"{self.read_timeout_s:g} s)"
                )
        finally:
            capture.release()

    @property
    def up(self) -> bool:
        """False from a lost (or refused) connection until the next frame arrives."""
        return self._lost_at is None

    @property
    def gap_s(self) -> float:
        """Seconds without frames because of lost connections (the current outage too),
        each outage counted from the last frame before it to the first one after it."""
        ongoing = 0.0 if self._lost_at is None else self.monotonic() - self._lost_at
        return self._gaps_s + ongoing

    def frames(self, start: int = 0) -> Iterator[Frame]:
        index, failures = start, 0
        while not self.stop.is_set():
            capture = self.capture_factory(self.name)
            clock = StreamClock()
            try:
                if not capture.isOpened():
                    raise SourceError(f"{self.name}: cannot open the stream")
                while not self.stop.is_set():
                    ok, image = capture.read()
                    if not ok:
                        raise SourceError(f"{self.name}: the stream stopped sending frames")
                    failures = 0
                    self._arrived()
                    yield Frame(index, clock.stamp(self.clock(), _position_s(capture)), image)
                    index += 1
            except SourceError as exc:
                failures += 1
                self.reconnects += 1
                if self._lost_at is None:
                    self._lost_at = self._last_frame_at or self.monotonic()
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1))
                log.warning("%s: %s; reconnecting in %.0f s (attempt %d)",
                            self.label, exc, delay, failures)  # fmt: skip
                self.sleep(delay)
            finally:
                capture.release()

    def _arrived(self) -> None:
        now = self.monotonic()
        if self._lost_at is not None:
            gap = now - self._lost_at
            self._gaps_s += gap
            self._lost_at = None
            log.info("%s: %s is back after a %.1f s gap (%d reconnect(s) so far)",
                     self.label, self.name, gap, self.reconnects)  # fmt: skip
        self._last_frame_at = now

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "kind": "live",
            "open_timeout_s": self.open_timeout_s,
            "read_timeout_s": self.read_timeout_s,
        }


class StreamClock:
    """Wall-clock capture times from stream positions: ``position + offset``, the offset
    being the least ``arrival - position`` seen (the frames closest to the live edge),
    allowed to creep up by ``drift`` seconds a second (a camera clock slower than ours
    by up to 100 ppm is followed) and reset when the positions go back (the stream
    restarted)."""

    def __init__(self, drift: float = 1e-4) -> None:
        self.drift = drift
        self.offset: float | None = None
        self.at = 0.0  # arrival time the offset was last updated
        self.position = -math.inf

    def stamp(self, now: float, position: float | None) -> float:
        if position is None:
            return now
        if self.offset is None or position < self.position:
            self.offset = now - position
        else:
            self.offset = min(self.offset + (now - self.at) * self.drift, now - position)
        self.at, self.position = now, position
        return position + self.offset


def _position_s(capture: Any) -> float | None:
    """The stream time of the frame just read, in seconds (None if the capture has none)."""
    get = getattr(capture, "get", None)
    if get is None:
        return None
    millis = get(cv2.CAP_PROP_POS_MSEC)
    return float(millis) / 1000 if math.isfinite(millis) and millis > 0 else None


def sampled(
    frames: Iterator[Frame], fps: float | None, *, after: float | None = None
) -> Iterator[Frame]:
    """The frames at about ``fps`` per second of their time (``None``: every frame).

    The first frame of each ``1/fps`` slot of time is kept; that depends only on the
    frames' own times, so a run resumed after the frame of time ``after`` keeps the
    frames the uninterrupted run would have kept.
    """
    if not fps:
        yield from frames
        return
    last_slot = None if after is None else math.floor(after * fps + 1e-6)
    for frame in frames:
        slot = math.floor(frame.time * fps + 1e-6)
        if last_slot is not None and slot <= last_slot:
            continue
        last_slot = slot
        yield frame
