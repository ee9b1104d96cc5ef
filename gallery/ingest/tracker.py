"""Multi-object tracking of the detections: Roboflow's ``trackers`` (ByteTrack, SORT).

:class:`PersonTracker` turns per-frame :class:`~gallery.ingest.detector.Detections` into
``(local_track_id, box, score)`` triples; ids start at 1 for each tracker. The tracker
is a plain Python object, so its whole state (Kalman filters, id allocator) is pickled
into the ingestion checkpoint and a resumed run continues with the same ids.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from gallery.ingest.detector import Detections

TRACKERS = ("bytetrack", "sort")


@dataclass(frozen=True)
class Tracked:
    """One tracked box in one frame: pixel ``x1, y1, x2, y2`` and the detector's score."""

    track: int
    box: tuple[float, float, float, float]
    score: float


class PersonTracker:
    """``trackers.ByteTrackTracker`` (default) or ``SORTTracker`` at the sampled frame rate.

    ``lost_seconds``: how long a lost track is kept for re-association.
    """

    def __init__(
        self, kind: str = "bytetrack", fps: float = 5.0, lost_seconds: float = 2.0
    ) -> None:
        if kind not in TRACKERS:
            raise ValueError(f"unknown tracker {kind!r}; choose one of {', '.join(TRACKERS)}")
        import trackers

        self.kind, self.fps, self.lost_seconds = kind, float(fps), float(lost_seconds)
        # lost_track_buffer counts 30 FPS frames, scaled by frame_rate inside the library.
        buffer = max(1, round(lost_seconds * 30))
        if kind == "bytetrack":
            self._tracker = trackers.ByteTrackTracker(
                lost_track_buffer=buffer,
                frame_rate=self.fps,
                track_activation_threshold=0.5,
                minimum_consecutive_frames=2,
                high_conf_det_threshold=0.6,
            )
        else:
            self._tracker = trackers.SORTTracker(
                lost_track_buffer=buffer, frame_rate=self.fps, minimum_consecutive_frames=2
            )

    def update(self, detections: Detections) -> list[Tracked]:
        """Associate one sampled frame's detections; unconfirmed boxes are left out."""
        import supervision as sv

        if len(detections):
            frame = sv.Detections(
                xyxy=detections.boxes.astype(np.float64),
                confidence=detections.scores.astype(np.float64),
                class_id=np.zeros(len(detections), dtype=int),
            )
        else:
            frame = sv.Detections.empty()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self._tracker.update(frame)
        ids = out.tracker_id if out.tracker_id is not None else np.zeros(0, int)
        scores = out.confidence if out.confidence is not None else np.ones(len(out))
        return [
            Tracked(int(t), tuple(float(v) for v in box), float(score))  # type: ignore[arg-type]
            for t, box, score in zip(ids, out.xyxy, scores, strict=True)
            if t >= 0
        ]

    def describe(self) -> dict[str, object]:
        return {"tracker": self.kind, "tracker_fps": self.fps, "lost_seconds": self.lost_seconds}
