"""A re-ID dataset cut from one real video: detection -> tracking -> crops, tracks as
identities, strips of the frame as pseudo-cameras, written in the Market-1501 layout.

    python -m gallery dataset vtest.avi --out runs/vtest_set [--cameras 4] [--fps 10]

What it is for: a real-image evaluation (and small retraining) set where no labelled
one exists, e.g. the pedestrian clip ``vtest.avi`` of OpenCV's samples. The frame is
cut into ``cameras`` vertical strips; a crop belongs to the strip holding its box centre,
so a person walking across the scene appears in several pseudo-cameras under one track.
Identities seen in at least two pseudo-cameras are split between train and test (by a
seeded shuffle); identities seen in one only go to train. For each test identity, the
best crop (detector confidence x size x sharpness) of each pseudo-camera where it has at
least two crops is a query; all its other crops are gallery images, so every query has a
match in another pseudo-camera.

Labels come from the tracker, so they are noisy in two known ways, counted in
``meta.json`` (``label_noise``): a person whose track broke (occlusion, a missed
detection) carries several identities, and a track that switched people merges two.
The first shows as tracks that start or end away from the frame's edges while the video
runs (``tracks_starting_inside`` / ``tracks_ending_inside``); the second is rarer with
ByteTrack and is not measured here. Pseudo-cameras share one real viewpoint, so this is
an easier cross-camera problem than a real camera network: use it to compare methods and
recipes on real crops, not as a stand-in for Market-1501 numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gallery.ingest.detector import Detector
from gallery.ingest.selection import Crop, CropSelector, CropSettings
from gallery.ingest.sources import Source, sampled
from gallery.ingest.tracker import PersonTracker, Tracked

log = logging.getLogger("gallery.dataset")

FORMAT_VERSION = 1
FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


@dataclass(frozen=True)
class DatasetSettings:
    """How the set is cut. ``crops_per_camera``: best crops kept per track and strip, at
    least ``min_gap_s`` apart; ``edge_px``: how close to the frame border a box must come
    for its track to count as entering or leaving the scene there."""

    cameras: int = 4
    fps: float = 10.0
    crops_per_camera: int = 6
    min_gap_s: float = 0.6
    min_track_frames: int = 5
    test_fraction: float = 0.5
    seed: int = 0
    edge_px: float = 24.0


@dataclass
class _TrackLife:
    first_time: float
    last_time: float
    first_box: tuple[float, ...]
    last_box: tuple[float, ...]
    frames: int = 0


@dataclass
class DatasetSummary:
    """What was written (also saved as ``meta.json`` beside the three folders)."""

    source: dict
    settings: dict
    detector: dict
    tracker: dict
    frames: int
    duration_s: float
    frame_size: tuple[int, int]
    tracks: int
    identities: dict[str, int]
    images: dict[str, int]
    label_noise: dict[str, float | int]
    format_version: int = FORMAT_VERSION
    files_sha256: str = ""
    notes: list[str] = field(default_factory=list)


def build_dataset(
    source: Source,
    detector: Detector,
    tracker: PersonTracker,
    out: Path,
    settings: DatasetSettings | None = None,
) -> DatasetSummary:
    """Run the source through detection and tracking and write the dataset to ``out``."""
    s = settings or DatasetSettings()
    if s.cameras < 2:
        raise ValueError("a cross-camera set needs at least 2 pseudo-cameras (--cameras)")
    if not 0 < s.test_fraction < 1:
        raise ValueError("the test fraction must be between 0 and 1 (--test-fraction)")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new --out")
    crop_settings = CropSettings(
        per_track=s.crops_per_camera, min_gap_s=s.min_gap_s, min_track_frames=s.min_track_frames
    )
    selectors = [CropSelector(crop_settings) for _ in range(s.cameras)]
    lives: dict[int, _TrackLife] = {}
    frames, first_time, last_time, size = 0, None, 0.0, (0, 0)
    for frame in sampled(source.frames(), s.fps):
        height, width = frame.image.shape[:2]
        size = (width, height)
        first_time = frame.time if first_time is None else first_time
        last_time = frame.time
        frames += 1
        tracked = tracker.update(detector.detect(frame.image))
        for item in tracked:
            _observe_life(lives, item, frame.time)
        for camera, items in enumerate(_strips(tracked, width, s.cameras)):
            selectors[camera].observe(frame.index, frame.time, frame.image, items)
    if frames == 0:
        raise ValueError(f"{source.name}: no frames could be read")
    crops = {camera: selector.finish_all() for camera, selector in enumerate(selectors)}
    counts, written = _write_split(crops, out, s)
    start = first_time or 0.0
    summary = DatasetSummary(
        source=source.describe(),
        settings=asdict(s),
        detector=detector.describe(),
        tracker=tracker.describe(),
        frames=frames,
        duration_s=round(last_time - start, 3),
        frame_size=size,
        tracks=len(lives),
        identities=counts["identities"],
        images=counts["images"],
        label_noise=_label_noise(lives, size, start, last_time, s),
        files_sha256=_digest(written),
        notes=[
            f"pseudo-cameras: {s.cameras} vertical strips of the frame; a crop belongs to "
            "the strip of its box centre",
            "identities are tracker ids: broken tracks split a person (see label_noise)",
        ],
    )
    (out / "meta.json").write_text(json.dumps(asdict(summary), indent=2, default=str) + "\n")
    log.info(
        "%s: %d frames, %d tracks -> identities %s, images %s in %s",
        source.name, frames, len(lives), counts["identities"], counts["images"], out,
    )  # fmt: skip
    return summary


def _strips(tracked: list[Tracked], width: int, cameras: int) -> list[list[Tracked]]:
    """The tracked boxes of each pseudo-camera (vertical strip of the box centre)."""
    strips: list[list[Tracked]] = [[] for _ in range(cameras)]
    for item in tracked:
        centre = (item.box[0] + item.box[2]) / 2
        strips[min(cameras - 1, max(0, int(centre / width * cameras)))].append(item)
    return strips


def _observe_life(lives: dict[int, _TrackLife], item: Tracked, time: float) -> None:
    life = lives.get(item.track)
    if life is None:
        lives[item.track] = life = _TrackLife(time, time, item.box, item.box)
    life.frames += 1
    life.last_time, life.last_box = time, item.box


def _write_split(
    crops: dict[int, list[Crop]], out: Path, s: DatasetSettings
) -> tuple[dict[str, dict[str, int]], list[Path]]:
    """Assign identities to train / test, pick queries and write the images."""
    by_track: dict[int, dict[int, list[Crop]]] = defaultdict(lambda: defaultdict(list))
    for camera, items in crops.items():
        for crop in items:
            by_track[crop.track][camera].append(crop)
    cross = sorted(t for t, cameras in by_track.items() if query_cameras(cameras))
    random.Random(s.seed).shuffle(cross)
    test = set(cross[: max(1, round(len(cross) * s.test_fraction))]) if cross else set()
    pids = {track: number + 1 for number, track in enumerate(sorted(by_track))}
    for folder in FOLDERS.values():
        (out / folder).mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    images = dict.fromkeys(FOLDERS, 0)
    for track in sorted(by_track):
        cameras = by_track[track]
        queries = query_cameras(cameras) if track in test else set()
        for camera, items in sorted(cameras.items()):
            for rank, crop in enumerate(sorted(items, key=lambda c: (-c.quality, c.frame))):
                if track not in test:
                    split = "train"
                elif rank == 0 and camera in queries:
                    split = "query"
                else:
                    split = "gallery"
                name = f"{pids[track]:04d}_c{camera + 1}s1_{crop.frame:06d}_00.jpg"
                path = out / FOLDERS[split] / name
                path.write_bytes(crop.jpeg)
                written.append(path)
                images[split] += 1
    identities = {
        "train": len(by_track) - len(test),
        "test": len(test),
        "cross_camera": len(cross),
    }
    return {"identities": identities, "images": images}, written


def query_cameras(cameras: dict[int, list[Crop]]) -> set[int]:
    """The pseudo-cameras where a track can give a query: it has two crops there (one
    stays in the gallery for the other cameras' queries) and is seen in another camera
    (whose crops, past its own query, are gallery matches)."""
    seen = [camera for camera, items in cameras.items() if items]
    if len(seen) < 2:
        return set()
    return {camera for camera in seen if len(cameras[camera]) >= 2}


def _label_noise(
    lives: dict[int, _TrackLife],
    size: tuple[int, int],
    first_time: float,
    last_time: float,
    s: DatasetSettings,
) -> dict[str, float | int]:
    """Proxies for broken tracks: lives that begin or end inside the frame mid-video."""
    width, height = size
    slack = 2.0 / s.fps  # the first / last sampled frames: people already there

    def inside(box: tuple[float, ...]) -> bool:
        x1, y1, x2, y2 = box
        return (
            x1 > s.edge_px and y1 > s.edge_px and x2 < width - s.edge_px
            and y2 < height - s.edge_px
        )  # fmt: skip

    kept = [life for life in lives.values() if life.frames >= s.min_track_frames]
    starts = sum(inside(x.first_box) and x.first_time > first_time + slack for x in kept)
    ends = sum(inside(x.last_box) and x.last_time < last_time - slack for x in kept)
    durations = np.array([x.last_time - x.first_time for x in kept]) if kept else np.zeros(1)
    return {
        "tracks_kept": len(kept),
        "tracks_starting_inside": int(starts),
        "tracks_ending_inside": int(ends),
        "fraction_starting_inside": round(starts / max(1, len(kept)), 3),
        "median_track_seconds": round(float(np.median(durations)), 2),
    }


def _digest(paths: list[Path]) -> str:
    """One SHA-256 over the written files' names and bytes (same input and settings,
    same digest on one machine)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(f"{path.parent.name}/{path.name}".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
