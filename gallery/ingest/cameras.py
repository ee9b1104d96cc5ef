"""``cameras.yaml``: the feeds one ``python -m gallery ingest --cameras FILE`` ingests.

    cameras:
      - id: 0                        # gallery camera id, 0..2^31-1, unique
        name: entrance               # optional, for logs and the entries' extra
        source: videos/entrance.mp4  # file, image folder, rtsp:// URL or device
        fps: 5                       # optional sampling rate (default: --fps); 0: every frame
        roi: [0, 100, 640, 380]      # optional x, y, w, h: keep people whose box centre is inside
        start_time: 2024-05-01T08:00:00Z   # optional: wall time of the file's frame 0

Relative sources are relative to the file's folder.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import yaml

from gallery.ingest.pipeline import CameraSpec
from gallery.ingest.sources import is_live

MAX_CAMERA = 2**31 - 1
KNOWN = {"id", "name", "source", "fps", "roi", "start_time"}


class CamerasError(ValueError):
    """A malformed cameras file or camera option; the message names the camera."""


def parse_time(value: object, where: str) -> float | None:
    """ISO 8601 (``2024-05-01T08:00:00Z``; no zone: UTC) or unix seconds -> unix seconds."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise CamerasError(f"{where}: start_time must be ISO 8601 or unix seconds, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        try:  # unix seconds given as text (the command line's --start-time 1700000000)
            seconds = float(text)
        except ValueError:
            pass
        else:
            if math.isfinite(seconds):
                return seconds
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise CamerasError(
                f"{where}: start_time must be ISO 8601 (e.g. 2024-05-01T08:00:00Z), got {value!r}"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def camera_spec(item: object, where: str, *, base: Path, default_fps: float | None) -> CameraSpec:
    """One camera entry (a mapping) checked into a :class:`CameraSpec`."""
    if not isinstance(item, dict):
        raise CamerasError(f"{where}: a camera must be a mapping with id and source")
    unknown = sorted(set(item) - KNOWN)
    camera_id = item.get("id")
    if (
        isinstance(camera_id, bool)
        or not isinstance(camera_id, int)
        or not 0 <= camera_id <= MAX_CAMERA
    ):
        raise CamerasError(f"{where}: id must be an integer 0..{MAX_CAMERA}, got {camera_id!r}")
    name = item.get("name") or ""
    label = f"camera {camera_id}" + (f" ({name})" if name else "")
    where = f"{where} ({label})"
    if unknown:
        raise CamerasError(f"{where}: unknown field(s) {unknown}; known: {sorted(KNOWN)}")
    source = item.get("source")
    if not isinstance(source, str | int) or isinstance(source, bool) or str(source).strip() == "":
        raise CamerasError(f"{where}: source must be a file, folder, URL or device")
    source = str(source).strip()
    if not is_live(source) and not Path(source).is_absolute():
        source = str(base / source)
    fps = item.get("fps", default_fps)
    if fps is not None and (
        isinstance(fps, bool)
        or not isinstance(fps, int | float)
        or not math.isfinite(fps)
        or fps < 0
    ):
        raise CamerasError(f"{where}: fps must be a number >= 0, got {fps!r}")
    roi = item.get("roi")
    if roi is not None:
        roi = parse_roi(roi, where)
    return CameraSpec(
        id=camera_id,
        source=source,
        name=str(name),
        fps=float(fps) if fps else None,
        roi=roi,
        start_time=parse_time(item.get("start_time"), where),
    )


def parse_roi(value: object, where: str) -> tuple[float, float, float, float]:
    """``[x, y, w, h]`` or ``"x,y,w,h"`` with w, h > 0."""
    items: Any = value.split(",") if isinstance(value, str) else value
    try:
        x, y, w, h = (float(v) for v in items)
    except (TypeError, ValueError):
        raise CamerasError(f"{where}: roi must be 4 numbers x, y, w, h, got {value!r}") from None
    if w <= 0 or h <= 0 or not all(math.isfinite(v) for v in (x, y, w, h)):
        raise CamerasError(f"{where}: roi width and height must be > 0, got {value!r}")
    return (x, y, w, h)


def load_cameras(path: Path, *, default_fps: float | None = 5.0) -> list[CameraSpec]:
    """The cameras of a YAML file; :class:`CamerasError` naming the file and camera."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CamerasError(f"{path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise CamerasError(f"{path}: not valid YAML ({exc})") from None
    items = data.get("cameras") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise CamerasError(f"{path}: expected a 'cameras:' list with at least one camera")
    base = path.resolve().parent
    specs = [
        camera_spec(item, f"{path}: cameras[{i}]", base=base, default_fps=default_fps)
        for i, item in enumerate(items)
    ]
    seen: dict[int, int] = {}
    for i, spec in enumerate(specs):
        if spec.id in seen:
            raise CamerasError(f"{path}: cameras[{i}] ({spec.label}): id {spec.id} is used twice")
        seen[spec.id] = i
    return specs
