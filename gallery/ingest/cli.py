"""``python -m gallery ingest``: camera feeds into the served gallery.

    python -m gallery ingest SOURCE --camera ID --server URL [--fps 5] [--start-time ISO8601]
    python -m gallery ingest --cameras cameras.yaml --server URL

Exit status: 0 when every camera finished (or stopped on SIGTERM after flushing), 2 on
errors (bad source or cameras file, server refusing writes, detector not built).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reid.clihelp import HelpFormatter

DESCRIPTION = (
    "Detect, track and crop the people of camera feeds (video files, image folders, "
    "streams, devices) and add the best crops of each track to the served gallery "
    "through the API, with camera, timestamp, track id, box and source. Files and "
    "folders are checkpointed: a run that is killed resumes where its last acknowledged "
    "add was, and replayed adds are not stored twice."
)


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "reid" / "ingest"


def add_ingest_parser(subparsers: argparse._SubParsersAction, fail: type[Exception]) -> None:
    """Register ``ingest`` and its options; ``fail`` is the CLI's user-facing error."""
    p = subparsers.add_parser(
        "ingest",
        help="camera feeds -> person crops -> the served gallery",
        description=DESCRIPTION,
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "source",
        nargs="?",
        help="one feed: a video file, an image folder, an rtsp:// URL or a device number",
    )
    p.add_argument("--camera", type=int, help="gallery camera id of SOURCE (0..2^31-1)")
    p.add_argument("--name", default="", help="camera name of SOURCE, for logs and extra")
    p.add_argument("--cameras", metavar="YAML", help="many feeds: a cameras.yaml file")
    p.add_argument("--server", required=True, help="HTTP base URL, e.g. http://127.0.0.1:8000")
    p.add_argument(
        "--fps",
        type=float,
        default=5.0,
        help="frames per second of stream time to process (0: every frame)",
    )
    p.add_argument(
        "--start-time",
        help="wall time of the file's first frame, ISO 8601 (2024-05-01T08:00:00Z; no zone: "
        "UTC) or unix seconds; entries get start time + stream time (default: stream time)",
    )
    p.add_argument("--roi", metavar="X,Y,W,H", help="keep people whose box centre is inside")
    p.add_argument(
        "--state-dir",
        default=str(default_state_dir()),
        help="where the checkpoints of files and folders are kept",
    )
    p.add_argument("--restart", action="store_true", help="ignore checkpoints, start over")
    p.add_argument("--api-key", help="X-API-Key for gallery writes (default: $REID_API_KEY)")
    p.add_argument("--batch", type=int, default=16, help="crops per add request")
    p.add_argument("--tracker", default="bytetrack", help="bytetrack or sort")
    p.add_argument("--min-score", type=float, default=0.5, help="lowest detector confidence")
    p.add_argument("--crops-per-track", type=int, default=3, help="best crops kept per track")
    p.add_argument(
        "--min-track-frames", type=int, default=3, help="shorter tracks are dropped as noise"
    )
    p.add_argument(
        "--max-delay",
        type=float,
        metavar="S",
        help="send a track's crops while it goes on, at most S seconds after each is first "
        "chosen (live search: people are searchable seconds after they appear); default: "
        "when the track ends (the best crops of its whole life)",
    )
    p.add_argument("--detector-threads", type=int, default=1, help="onnxruntime threads")
    p.add_argument(
        "--stream-timeout",
        type=float,
        default=10.0,
        help="seconds to open a live stream and to wait for each of its frames before reconnecting",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (0: a free port, logged)",
    )
    p.add_argument("--metrics-host", default="127.0.0.1", help="address of --metrics-port")
    p.add_argument("--progress-interval", type=float, default=10.0, help="seconds between lines")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for /readyz at start (0: wait as long as it takes)",
    )
    p.set_defaults(handler=lambda args: run_ingest(args, fail))


def _specs(args: argparse.Namespace, fail: type[Exception]) -> list[Any]:
    from gallery.ingest.cameras import CamerasError, camera_spec, load_cameras

    fps = args.fps or None
    try:
        if args.cameras:
            if args.source or args.camera is not None:
                raise fail("give either SOURCE --camera ID or --cameras FILE, not both")
            return load_cameras(Path(args.cameras), default_fps=fps)
        if not args.source or args.camera is None:
            raise fail("give SOURCE and --camera ID (one feed), or --cameras FILE (many)")
        item = {"id": args.camera, "source": args.source, "name": args.name, "fps": fps}
        if args.roi:
            item["roi"] = args.roi
        if args.start_time:
            item["start_time"] = args.start_time
        return [camera_spec(item, "ingest", base=Path.cwd(), default_fps=fps)]
    except CamerasError as exc:
        raise fail(str(exc)) from None


def run_ingest(args: argparse.Namespace, fail: type[Exception]) -> int:
    """The ``ingest`` subcommand; returns the exit status."""
    from gallery.ingest.detector import DetectorError, SSDLitePedestrianDetector
    from gallery.ingest.metrics import IngestMetrics
    from gallery.ingest.pipeline import CameraIngester, IngestError, IngestSettings, Sender, Stop
    from gallery.ingest.selection import CropSettings
    from gallery.ingest.sources import SourceError
    from gallery.ingest.tracker import TRACKERS
    from reid_client import ReIDClient

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    # RTSP over TCP: no frames corrupted by lost UDP packets (OpenCV reads this per open).
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
    log = logging.getLogger("gallery.ingest")
    if args.batch < 1 or args.crops_per_track < 1:
        raise fail("--batch and --crops-per-track must be >= 1")
    if args.max_delay is not None and args.max_delay < 0:
        raise fail("--max-delay must be >= 0")
    if args.stream_timeout <= 0:
        raise fail("--stream-timeout must be > 0")
    if args.tracker not in TRACKERS:
        raise fail(f"--tracker must be one of {', '.join(TRACKERS)}")
    specs = _specs(args, fail)
    sources = _open_sources(specs, args.stream_timeout, fail)
    try:
        detector = SSDLitePedestrianDetector(
            min_score=args.min_score, threads=args.detector_threads
        )
    except DetectorError as exc:
        raise fail(str(exc)) from None
    api_key = args.api_key or os.environ.get("REID_API_KEY")
    client = ReIDClient(args.server, api_key=api_key, timeout=args.timeout)
    _wait_ready(client, args.ready_timeout, log)
    limit = client.model_info().limits.max_images
    batch = min(args.batch, limit) if limit > 0 else args.batch
    crops = CropSettings(
        per_track=args.crops_per_track,
        min_track_frames=args.min_track_frames,
        max_delay_s=args.max_delay,
    )
    settings = IngestSettings(
        batch=batch, progress_s=args.progress_interval, tracker=args.tracker, crops=crops
    )
    stop = Stop()
    _install_signals(stop, log)
    metrics = IngestMetrics()
    # The live cameras' adds: one thread, batched across them (files add from their own).
    sender = Sender(client, settings, stop.abort) if any(s.live for s in sources.values()) else None
    ingesters = [
        CameraIngester(
            spec, sources[spec.id], detector, client, state_dir=Path(args.state_dir),
            settings=settings, stop=stop, metrics=metrics, sender=sender,
        )
        for spec in specs
    ]  # fmt: skip
    close_metrics = None
    if args.metrics_port is not None:
        try:
            url, close_metrics = metrics.serve(args.metrics_host, args.metrics_port)
        except OSError as exc:
            client.close()
            raise fail(
                f"cannot serve metrics on {args.metrics_host}:{args.metrics_port}: {exc}"
            ) from None
        log.info("metrics: %s", url)
    log.info("detector: %s", detector.describe())
    log.info("tracker: %s (lost tracks kept %g s); crops: %s; batch %d",
             args.tracker, crops.end_after_s, crops, batch)  # fmt: skip
    for ingester in ingesters:
        spec = ingester.spec
        log.info("%s: %s, sampling %s, roi %s, start time %s", spec.label,
                 ingester.source.describe(), f"{spec.fps:g} fps" if spec.fps else "every frame",
                 spec.roi, spec.start_time)  # fmt: skip
    failures: list[str] = []

    def run_one(ingester: CameraIngester) -> None:
        try:
            ingester.run(restart=args.restart)
        except IngestError as exc:  # its message names the camera
            failures.append(str(exc))
            log.error("%s", exc)
        except SourceError as exc:  # e.g. the file went away after the start
            failures.append(f"{ingester.spec.label}: {exc}")
            log.error("%s: %s", ingester.spec.label, exc)
        except Exception as exc:  # one camera's bug must not hide the others' work
            failures.append(f"{ingester.spec.label}: {exc}")
            log.exception("%s failed", ingester.spec.label)

    try:
        _run_all(ingesters, run_one)
    finally:
        if sender is not None:
            sender.close()
        client.close()
        if close_metrics is not None:
            close_metrics()
    if failures:
        print(f"python -m gallery ingest: error: {failures[0]}", file=sys.stderr)
        return 2
    return 0


def _open_sources(specs: list[Any], timeout: float, fail: type[Exception]) -> dict[int, Any]:
    """Every camera's source, opened (and live ones probed) at once; the first error in
    the cameras' order names its camera."""
    from concurrent.futures import ThreadPoolExecutor

    from gallery.ingest.sources import SourceError, open_source

    def one(spec: Any) -> Any:
        try:
            return open_source(spec.source, fps=spec.fps, stream_timeout_s=timeout)
        except SourceError as exc:
            return fail(f"{spec.label}: {exc}")

    with ThreadPoolExecutor(max_workers=min(16, len(specs))) as pool:
        opened = list(pool.map(one, specs))
    for source in opened:
        if isinstance(source, fail):
            raise source
    return {spec.id: source for spec, source in zip(specs, opened, strict=True)}


def _wait_ready(client: Any, timeout: float, log: logging.Logger) -> None:
    """Wait for ``/readyz``: ``timeout`` seconds, or with ``timeout <= 0`` until it is."""
    from reid_client import ServerUnreachableError

    if timeout > 0:
        client.wait_ready(timeout=timeout)
        return
    while True:
        try:
            client.wait_ready(timeout=30)
            return
        except ServerUnreachableError as exc:
            log.warning("waiting for the server: %s", exc)


def _run_all(ingesters: list[Any], run_one: Callable[[Any], None]) -> None:
    if len(ingesters) == 1:
        run_one(ingesters[0])
        return
    threads = [
        threading.Thread(target=run_one, args=(i,), name=i.spec.label, daemon=True)
        for i in ingesters
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)


def _install_signals(stop: Any, log: logging.Logger) -> None:
    """SIGTERM / SIGINT: finish gracefully (flush, checkpoint); a second one: stop now."""

    def handle(signum: int, frame: object) -> None:
        first = not stop.graceful.is_set()
        stop.request()
        what = "flushing pending crops, then stopping (again to stop now)"
        log.warning("%s: %s", signal.Signals(signum).name, what if first else "stopping now")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
