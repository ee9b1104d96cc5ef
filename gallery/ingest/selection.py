"""Per-track crop selection: keep the few best crops of each track.

A crop's quality is the detector's confidence times a size factor (box height against
``good_height``) times a sharpness factor (variance of the Laplacian against
``good_sharpness``). Boxes cut by the frame border or covered by another box more than
``max_overlap`` are not candidates. Each track keeps its ``per_track`` best candidates at
least ``min_gap_s`` apart in time; they are emitted when the track ends (not seen for
``end_after_s``) or when the source ends. With ``max_delay_s`` (live search) a candidate
is emitted once it is due instead: ``max_delay_s`` after the frame of the first candidate
it replaced, so a better crop a moment later still wins but a person is searchable at
most ``max_delay_s`` after their first usable crop; a track's ``per_track`` crops are
then the best of its first moments rather than of its whole life. Only the kept
candidates are JPEG-encoded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from gallery.ingest.tracker import Tracked


@dataclass(frozen=True)
class CropSettings:
    per_track: int = 3
    min_gap_s: float = 1.0
    min_track_frames: int = 3
    border_px: float = 2.0
    max_overlap: float = 0.3
    good_height: float = 128.0
    good_sharpness: float = 100.0
    end_after_s: float = 2.0
    jpeg_quality: int = 90
    pad: float = 0.05  # context added around the box, as a fraction of its size
    max_delay_s: float | None = None  # emit candidates this old (None: at the track's end)


@dataclass
class Crop:
    """One selected crop: where it was seen and its JPEG bytes."""

    track: int
    frame: int
    time: float
    box: tuple[float, float, float, float]  # x, y, w, h in the frame (the detector's box)
    score: float  # the detector's confidence
    quality: float
    jpeg: bytes
    due: float = math.inf  # with max_delay_s: the time at which it is emitted


@dataclass
class _Track:
    crops: list[Crop] = field(default_factory=list)
    frames: int = 0
    last_time: float = 0.0
    sent: list[float] = field(default_factory=list)  # times of the crops already emitted


class CropSelector:
    """Collects candidates per track and emits each finished track's best crops."""

    def __init__(self, settings: CropSettings | None = None) -> None:
        self.settings = settings or CropSettings()
        self.tracks: dict[int, _Track] = {}

    def observe(self, index: int, time: float, image: np.ndarray, tracked: list[Tracked]) -> None:
        """Score this frame's tracked boxes and keep the good ones."""
        s = self.settings
        height, width = image.shape[:2]
        boxes = np.array([t.box for t in tracked], np.float64).reshape(-1, 4)
        for number, item in enumerate(tracked):
            state = self.tracks.setdefault(item.track, _Track())
            state.frames += 1
            state.last_time = time
            x1, y1, x2, y2 = item.box
            if (
                x1 < s.border_px
                or y1 < s.border_px
                or x2 > width - s.border_px
                or y2 > height - s.border_px
            ):
                continue
            if _covered(boxes, number) > s.max_overlap:
                continue
            crop = _cut(image, item.box, s.pad)
            if crop is None:
                continue
            quality = item.score * min(1.0, (y2 - y1) / s.good_height)
            quality *= min(1.0, _sharpness(crop) / s.good_sharpness)
            self._offer(state, index, time, item, crop, quality)

    def _offer(
        self,
        state: _Track,
        index: int,
        time: float,
        item: Tracked,
        crop: np.ndarray,
        quality: float,
    ) -> None:
        s = self.settings
        room = s.per_track - len(state.sent)
        if room <= 0 or any(abs(t - time) < s.min_gap_s for t in state.sent):
            return
        near = [c for c in state.crops if abs(c.time - time) < s.min_gap_s]
        if near and all(c.quality >= quality for c in near):
            return
        kept = [c for c in state.crops if c not in near]
        if len(kept) >= room and min(c.quality for c in kept) >= quality:
            return
        ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, s.jpeg_quality])
        if not ok:
            return
        x1, y1, x2, y2 = item.box
        box = (round(x1, 1), round(y1, 1), round(x2 - x1, 1), round(y2 - y1, 1))
        due = math.inf if s.max_delay_s is None else time + s.max_delay_s
        due = min([due, *(c.due for c in near)])  # a replacement keeps the first deadline
        kept.append(Crop(item.track, index, time, box, item.score, quality, jpeg.tobytes(), due))
        kept.sort(key=lambda c: (-c.quality, c.frame))
        state.crops = kept[:room]

    def finished(self, time: float) -> list[Crop]:
        """The crops to send at ``time``: those of tracks not seen for ``end_after_s``,
        and with ``max_delay_s`` the candidates that old of the tracks still going."""
        ended = [
            t for t, st in self.tracks.items() if time - st.last_time > self.settings.end_after_s
        ]
        out = self._emit(ended)
        if self.settings.max_delay_s is not None:
            out.extend(self._due(time))
        return sorted(out, key=lambda c: (c.frame, c.track))

    def _due(self, time: float) -> list[Crop]:
        out: list[Crop] = []
        for state in self.tracks.values():
            if state.frames < self.settings.min_track_frames:
                continue
            due = [c for c in state.crops if c.due <= time]
            state.crops = [c for c in state.crops if c.due > time]
            state.sent.extend(c.time for c in due)
            out.extend(due)
        return out

    def finish_all(self) -> list[Crop]:
        """The crops of every track (the source ended, or a graceful stop)."""
        return self._emit(list(self.tracks))

    def _emit(self, tracks: list[int]) -> list[Crop]:
        out: list[Crop] = []
        for track in sorted(tracks):
            state = self.tracks.pop(track)
            if state.frames >= self.settings.min_track_frames:
                out.extend(sorted(state.crops, key=lambda c: c.frame))
        return sorted(out, key=lambda c: (c.frame, c.track))

    @property
    def active(self) -> int:
        return len(self.tracks)


def _covered(boxes: np.ndarray, number: int) -> float:
    """The largest fraction of box ``number`` covered by any other box of the frame."""
    if len(boxes) < 2:
        return 0.0
    box = boxes[number]
    others = np.delete(boxes, number, axis=0)
    w = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-6)
    return float((w * h).max() / area)


def _cut(
    image: np.ndarray, box: tuple[float, float, float, float], pad: float
) -> np.ndarray | None:
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * pad, (y2 - y1) * pad
    left, top = max(0, int(x1 - dx)), max(0, int(y1 - dy))
    right, bottom = min(width, round(x2 + dx)), min(height, round(y2 + dy))
    if right - left < 8 or bottom - top < 16:
        return None
    return image[top:bottom, left:right]


def _sharpness(crop: np.ndarray) -> float:
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    grey = cv2.resize(grey, (64, 128), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())
