"""One camera's ingestion: decode -> sample -> detect -> track -> select crops -> add.

Entries are written through the served API (``reid_client.ReIDClient.add``), each with
an idempotency key derived from camera, source, frame, track and box, so a replayed
add stores nothing twice. For files and folders the state after the last acknowledged
add (next frame, the tracker, the crop candidates) is checkpointed atomically: a run
killed at any point and started again resumes from the checkpoint, re-sends at most
the adds made after it (answered with the stored ids) and loses none.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gallery.ingest.detector import Detections, Detector
from gallery.ingest.metrics import IngestMetrics, Progress
from gallery.ingest.selection import Crop, CropSelector, CropSettings
from gallery.ingest.sources import Frame, Source, sampled
from gallery.ingest.tracker import PersonTracker
from reid_client import ReIDClient, ServerError, ServerUnreachableError

log = logging.getLogger("gallery.ingest")

CHECKPOINT_VERSION = 2  # 2: crop selection with max_delay_s
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class IngestError(RuntimeError):
    """A camera cannot be ingested (bad source, refused writes, stale checkpoint)."""


@dataclass(frozen=True)
class CameraSpec:
    """One feed: gallery camera id, name, source, sampling rate and region of interest."""

    id: int
    source: str
    name: str = ""
    fps: float | None = 5.0
    roi: tuple[float, float, float, float] | None = None  # x, y, w, h: box centres inside
    start_time: float | None = None  # unix seconds of the stream's time 0 (files, folders)

    @property
    def label(self) -> str:
        return f"camera {self.id}" + (f" ({self.name})" if self.name else "")


@dataclass(frozen=True)
class IngestSettings:
    batch: int = 16  # images per add request (lowered to the server's max_images)
    flush_s: float = 2.0  # longest wait before pending crops are sent (0 with max_delay_s)
    checkpoint_s: float = 5.0  # checkpoint at least this often when nothing is pending
    progress_s: float = 10.0
    queue_frames: int = 8  # decoded frames buffered ahead of detection (files: no drops)
    live_queue_frames: int = 2  # live: fresher frames replace older ones beyond this
    outbox_crops: int = 256  # live: crops waiting for the server before detection waits
    gather_s: float = 0.1  # live: how long an add waits for more crops (of any camera)
    retry_initial_s: float = 1.0  # first delay before an add is retried, doubling
    retry_max_s: float = 30.0
    tracker: str = "bytetrack"
    crops: CropSettings = field(default_factory=CropSettings)


@dataclass
class Stats:
    frames: int = 0  # sampled frames processed
    detections: int = 0
    tracks: int = 0
    entries: int = 0  # entries acknowledged by the server
    last_frame: int = -1


@dataclass
class Checkpoint:
    fingerprint: dict[str, Any]
    tracker: PersonTracker
    selector: CropSelector
    next_frame: int = 0
    last_time: float | None = None
    stats: Stats = field(default_factory=Stats)
    seen_tracks: set[int] = field(default_factory=set)
    done: bool = False
    version: int = CHECKPOINT_VERSION


def track_id(camera: int, source: str, local: int, session: str = "") -> int:
    """A camera's global track id: stable for a file or folder across restarts and runs,
    distinct between sources and (live) sessions; a positive 60-bit integer."""
    digest = hashlib.sha256(f"{camera}|{source}|{session}|{local}".encode()).hexdigest()
    return int(digest[:15], 16)


def entry_key(camera: int, source: str, frame: int, track: int, box: tuple[float, ...]) -> str:
    """The idempotency key of one crop: the same crop always gets the same key."""
    where = hashlib.sha256(source.encode()).hexdigest()[:16]
    return f"ingest:{camera}:{where}:{frame}:{track}:" + ",".join(f"{v:.0f}" for v in box)


class Stop:
    """``graceful``: finish (flush pending crops, checkpoint); ``abort``: stop now."""

    def __init__(self) -> None:
        self.graceful = threading.Event()
        self.abort = threading.Event()

    def request(self) -> None:
        if self.graceful.is_set():
            self.abort.set()
        self.graceful.set()


class CameraIngester:
    """Ingests one camera's source into the served gallery."""

    def __init__(
        self,
        spec: CameraSpec,
        source: Source,
        detector: Detector,
        client: ReIDClient,
        *,
        state_dir: Path,
        settings: IngestSettings | None = None,
        stop: Stop | None = None,
        detector_settings: dict[str, Any] | None = None,
        metrics: IngestMetrics | None = None,
        sender: Sender | None = None,
    ) -> None:
        self.spec, self.source, self.detector, self.client = spec, source, detector, client
        self.settings = settings or IngestSettings()
        self.stop = stop or Stop()
        self.state_dir = Path(state_dir)
        self.detector_settings = detector_settings or detector.describe()
        if source.live and hasattr(source, "stop"):
            source.stop = self.stop.graceful  # a stop also ends reconnect waits
        if hasattr(source, "label"):
            source.label = spec.label  # its warnings name the camera
        # Live track ids restart with each run, so a live session is part of the global id.
        self.session = f"{time.time():.6f}" if source.live else ""
        self.checkpoint_path = self.state_dir / (
            f"camera{spec.id}-{hashlib.sha256(source.name.encode()).hexdigest()[:12]}.ckpt"
        )
        self._last_flush = time.monotonic()
        self._last_checkpoint = time.monotonic()
        self._last_progress = time.monotonic()
        self._started = time.monotonic()
        self._frames_at_start = 0
        # Crops due after max_delay_s have waited already: send them with the next frame.
        delayed = self.settings.crops.max_delay_s is not None
        self._flush_s = 0.0 if delayed else self.settings.flush_s
        self.metrics = metrics
        self.state: Checkpoint | None = None
        self.pending: list[Crop] = []
        self.sender = sender  # live sources: the adds' thread (shared by cameras, or own)
        self.add_failures = 0
        self.dropped = 0  # live frames dropped because processing fell behind
        self.lag_s: float | None = None
        self._rate = 0.0  # frames/s over the last progress interval
        self._frames_at_progress = 0
        if metrics is not None:
            metrics.track(self)

    # -- checkpoint ----------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint is only valid for: the source file and every setting that
        changes which crops are chosen."""
        spec = asdict(self.spec)
        source: dict[str, Any] = {"name": self.source.name}
        path = Path(self.source.name)
        if not self.source.live and path.is_file():
            info = path.stat()
            source.update(size=info.st_size, mtime_ns=info.st_mtime_ns)
        return {
            "camera": spec,
            "source": source,
            "detector": self.detector_settings,
            "tracker": self.settings.tracker,
            "crops": asdict(self.settings.crops),
        }

    def _fresh(self) -> Checkpoint:
        fps = self.spec.fps or getattr(self.source, "fps", 5.0)
        end = self.settings.crops.end_after_s
        tracker = PersonTracker(self.settings.tracker, fps=fps, lost_seconds=end)
        return Checkpoint(self.fingerprint(), tracker, CropSelector(self.settings.crops))

    def load(self, restart: bool = False) -> Checkpoint:
        """The saved state of this camera's source, or a fresh one."""
        if self.source.live or restart or not self.checkpoint_path.exists():
            return self._fresh()
        try:
            with self.checkpoint_path.open("rb") as handle:
                state = pickle.load(handle)
        except Exception as exc:
            raise IngestError(
                f"{self.spec.label}: cannot read the checkpoint {self.checkpoint_path} ({exc}); "
                "delete it or pass --restart"
            ) from None
        if getattr(state, "version", None) != CHECKPOINT_VERSION:
            raise IngestError(
                f"{self.spec.label}: {self.checkpoint_path} is from another version; pass --restart"
            )
        if state.fingerprint != self.fingerprint():
            raise IngestError(
                f"{self.spec.label}: the checkpoint {self.checkpoint_path} was made for another "
                "file or other settings; pass --restart to ingest from the beginning "
                "(entries already added are not duplicated)"
            )
        return state

    def save(self, state: Checkpoint) -> None:
        """Write the checkpoint atomically (temporary file, fsync, rename)."""
        if self.source.live:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            pickle.dump(state, handle, protocol=pickle.HIGHEST_PROTOCOL)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.checkpoint_path)
        self._last_checkpoint = time.monotonic()

    # -- the loop ------------------------------------------------------------------------

    def run(self, restart: bool = False) -> Stats:
        """Ingest until the source ends or a stop is requested; returns the counters."""
        state = self.load(restart)
        if state.done:
            log.info("%s: %s was already ingested (pass --restart to do it again)",
                     self.spec.label, self.source.name)  # fmt: skip
            return state.stats
        if state.next_frame:
            log.info("%s: resuming at frame %d from %s", self.spec.label, state.next_frame,
                     self.checkpoint_path)  # fmt: skip
        self._frames_at_start = self._frames_at_progress = state.stats.frames
        self.state, pending = state, self.pending
        frames = sampled(
            self.source.frames(start=state.next_frame), self.spec.fps, after=state.last_time
        )
        halt = threading.Event()  # ends the reader however the loop ends
        if self.source.live:  # never wait for the detector: replace the oldest frame
            ahead = prefetch(frames, self.settings.live_queue_frames, halt, dropped=self._dropped)
        else:
            ahead = prefetch(frames, self.settings.queue_frames, halt)
        own = self.source.live and self.sender is None
        if own:
            self.sender = Sender(self.client, self.settings, self.stop.abort)
        sender = self.sender if self.source.live else None
        try:
            for frame in ahead:
                if self.stop.graceful.is_set():
                    break
                self._process(frame, state, pending)
                if sender is not None:
                    sender.put(self, pending)  # to the sender's thread (waits only when full)
                elif pending and (
                    len(pending) >= self.settings.batch
                    or time.monotonic() - self._last_flush >= self._flush_s
                ):
                    self._flush(pending, state)
                if (
                    not pending
                    and time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_s
                ):
                    self.save(state)
                self._maybe_progress(state)
            if not self.stop.abort.is_set():
                pending.extend(state.selector.finish_all())
                if sender is not None:
                    sender.put(self, pending)
                    sender.drain(self)
                else:
                    self._flush(pending, state)
        finally:
            halt.set()
            if own and sender is not None:
                sender.close()
        if self.stop.abort.is_set():  # before or during the last flush: no checkpoint now
            unsent = len(pending) + (sender.unsent(self) if sender is not None else 0)
            log.warning("%s: aborted; %d crops not sent (the checkpoint is from before them)",
                        self.spec.label, unsent)  # fmt: skip
            return state.stats
        state.done = not self.stop.graceful.is_set() and not self.source.live
        self.save(state)
        self._progress(state, done=state.done, final=True)
        return state.stats

    def _process(self, frame: Frame, state: Checkpoint, pending: list[Crop]) -> None:
        detections = self.detector.detect(frame.image)
        if self.spec.roi is not None:
            detections = _in_roi(detections, self.spec.roi)
        tracked = state.tracker.update(detections)
        state.selector.observe(frame.index, frame.time, frame.image, tracked)
        state.seen_tracks.update(t.track for t in tracked)
        pending.extend(state.selector.finished(frame.time))
        stats = state.stats
        stats.frames += 1
        stats.detections += len(detections)
        stats.tracks = len(state.seen_tracks)
        stats.last_frame = frame.index
        state.next_frame = frame.index + 1
        state.last_time = frame.time
        if self.source.live:  # frame times are the wall clock when they were read
            self.lag_s = max(0.0, time.time() - frame.time)

    def _dropped(self) -> None:
        self.dropped += 1

    def _flush(self, pending: list[Crop], state: Checkpoint) -> None:
        """Send every pending crop (retrying while the server is away), then checkpoint;
        an abort leaves the unsent crops in ``pending`` and the checkpoint as it was."""
        batch = max(1, self.settings.batch)
        while pending:
            chunk = pending[:batch]
            if not self._send(chunk, state):
                return  # aborted: the checkpoint stays before these crops
            del pending[: len(chunk)]
        self._last_flush = time.monotonic()
        self.save(state)

    def _send(self, chunk: list[Crop], state: Checkpoint) -> bool:
        """Add one batch of crops until acknowledged and count it; False when aborted."""
        metadata = [self._metadata(c) for c in chunk]
        if not self._add([c.jpeg for c in chunk], metadata):
            return False
        self.acknowledged(chunk)
        return True

    def acknowledged(self, chunk: list[Crop]) -> None:
        """Count crops the server has acknowledged (called by the adding thread)."""
        assert self.state is not None
        self.state.stats.entries += len(chunk)
        if self.metrics is not None and self.source.live:
            now = time.time()
            self.metrics.acknowledged(self.spec.id, [now - c.time for c in chunk])

    def _metadata(self, crop: Crop) -> dict[str, Any]:
        spec = self.spec
        track = track_id(spec.id, self.source.name, crop.track, self.session)
        # Live frames carry the wall clock; files and folders their stream time.
        timestamp = crop.time if self.source.live else (spec.start_time or 0.0) + crop.time
        extra: dict[str, Any] = {"frame": crop.frame, "score": round(crop.score, 4)}
        extra["quality"] = round(crop.quality, 4)
        if spec.name:
            extra["camera_name"] = spec.name
        return {
            "camera": spec.id,
            "timestamp": timestamp,
            "track": track,
            "box": list(crop.box),
            "source": self.source.name,
            "extra": extra,
            "key": entry_key(spec.id, self.source.name, crop.frame, track, crop.box),
        }

    def _add(self, images: list[bytes], metadata: list[dict[str, Any]]) -> bool:
        """``client.add`` until it is acknowledged; False only when aborted."""
        return add_until_acknowledged(
            self.client, images, metadata, self.settings, self.stop.abort, [self]
        )

    # -- progress ------------------------------------------------------------------------

    def progress(self) -> Progress:
        """This camera's numbers now (what the progress lines and ``/metrics`` show)."""
        stats = self.state.stats if self.state is not None else Stats()
        source = self.source
        return Progress(
            camera=self.spec.id,
            frames=stats.frames,
            detections=stats.detections,
            tracks=stats.tracks,
            entries=stats.entries,
            fps=self._rate,
            add_failures=self.add_failures,
            pending=len(self.pending) + (self.sender.unsent(self) if self.sender else 0),
            live=source.live,
            up=getattr(source, "up", True),
            lag_s=self.lag_s,
            reconnects=getattr(source, "reconnects", 0),
            gap_s=getattr(source, "gap_s", 0.0),
            dropped=self.dropped,
        )

    def _maybe_progress(self, state: Checkpoint) -> None:
        if time.monotonic() - self._last_progress >= self.settings.progress_s:
            self._progress(state)

    def _progress(self, state: Checkpoint, done: bool = False, final: bool = False) -> None:
        now = time.monotonic()
        stats = state.stats
        if final:  # the whole run's rate
            self._rate = (stats.frames - self._frames_at_start) / max(1e-6, now - self._started)
        else:
            interval = max(1e-6, now - max(self._last_progress, self._started))
            self._rate = (stats.frames - self._frames_at_progress) / interval
        self._last_progress, self._frames_at_progress = now, stats.frames
        p = self.progress()
        total = getattr(self.source, "frame_count", None) or len(getattr(self.source, "files", []))
        position = total if done and total else stats.last_frame + 1
        where = f"frame {position}" + (f"/{total}" if total else "") + (" (done)" if done else "")
        line = (
            f"{self.spec.label}: {where}, {p.fps:.1f} frames/s, {p.detections} detections, "
            f"{p.tracks} tracks, {p.entries} entries written"
        )
        if p.live:
            lag = "-" if p.lag_s is None else f"{p.lag_s:.2f} s"
            line += (
                f", lag {lag}, {p.reconnects} reconnects (gap {p.gap_s:.1f} s), "
                f"{p.dropped} frames dropped"
            )
        if p.add_failures:
            line += f", {p.add_failures} adds retried"
        log.info("%s", line)


def add_until_acknowledged(
    client: ReIDClient,
    images: list[bytes],
    metadata: list[dict[str, Any]],
    settings: IngestSettings,
    abort: threading.Event,
    cameras: list[CameraIngester],
) -> bool:
    """``client.add`` until it is acknowledged, retrying transient failures with backoff
    (counted on and logged for ``cameras``, whose crops these are); False only when
    aborted. A refusal that retrying cannot fix (bad input, auth) raises
    :class:`IngestError` naming the cameras."""
    labels = ", ".join(dict.fromkeys(c.spec.label for c in cameras))
    delay = settings.retry_initial_s
    while True:
        try:
            client.add(images, metadata)
            return True
        except ServerError as exc:
            transient = isinstance(exc, ServerUnreachableError) or (
                exc.status in TRANSIENT_STATUSES
            )
            if not transient:
                raise IngestError(f"{labels}: the server refused the add: {exc}") from None
            for camera in dict.fromkeys(cameras):
                camera.add_failures += 1
            log.warning("%s: add failed (%s); retrying in %.2g s", labels, exc, delay)
        if abort.wait(delay):
            return False
        delay = min(settings.retry_max_s, delay * 2)


class Sender:
    """The adds of live cameras, from a thread of their own and batched across cameras.

    Detection goes on while the server embeds and stores the crops, and the server gets
    fewer, larger requests: an add of 8 crops cost it 25 ms of CPU a crop here, 8 adds of
    one 63 ms. Up to ``settings.outbox_crops`` crops wait (the server away or slow);
    beyond that :meth:`put` waits, and the cameras' readers drop frames meanwhile. After
    the first crop of a batch the thread waits ``settings.gather_s`` for more. A refusal
    that retrying cannot fix stops it, and is raised by :meth:`put` and :meth:`drain` in
    every camera's thread.
    """

    def __init__(self, client: ReIDClient, settings: IngestSettings, abort: threading.Event):
        self.client, self.settings, self.abort = client, settings, abort
        self.outbox: queue.Queue[tuple[CameraIngester, Crop] | None] = queue.Queue(
            settings.outbox_crops
        )
        self._unsent: dict[int, int] = {}  # camera id -> crops queued or in flight
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="send", daemon=True)
        self.thread.start()

    def unsent(self, camera: CameraIngester) -> int:
        with self._lock:
            return self._unsent.get(camera.spec.id, 0)

    def _count(self, camera: CameraIngester, change: int) -> None:
        with self._lock:
            self._unsent[camera.spec.id] = self._unsent.get(camera.spec.id, 0) + change

    def put(self, camera: CameraIngester, crops: list[Crop]) -> None:
        """Move ``crops`` to the outbox, waiting while it is full (until an abort)."""
        while crops and not self.abort.is_set():
            self._raise()
            self._count(camera, 1)
            try:
                self.outbox.put((camera, crops[0]), timeout=0.2)
            except queue.Full:
                self._count(camera, -1)
                continue
            del crops[0]
        self._raise()

    def drain(self, camera: CameraIngester) -> None:
        """Wait until every crop of ``camera`` is acknowledged (or an abort)."""
        while self.unsent(camera) and self.thread.is_alive() and not self.abort.is_set():
            time.sleep(0.05)
        self._raise()

    def close(self) -> None:
        """Send what is queued and end the thread (at once after an abort)."""
        while self.thread.is_alive() and not self.abort.is_set():
            try:
                self.outbox.put(None, timeout=0.2)
                break
            except queue.Full:
                continue
        while self.thread.is_alive() and not self.abort.is_set():
            self.thread.join(0.2)

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        batch, closing = max(1, self.settings.batch), False
        try:
            while not closing:
                item = self.outbox.get()
                if item is None:
                    return
                chunk = [item]
                deadline = time.monotonic() + self.settings.gather_s
                while len(chunk) < batch:  # more crops, of any camera, for a moment
                    try:
                        item = self.outbox.get(timeout=max(1e-3, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                    if item is None:
                        closing = True
                        break
                    chunk.append(item)
                if not self._send(chunk):
                    return  # aborted: what is left stays unsent
        except BaseException as exc:  # handed to the cameras' threads
            self.error = exc

    def _send(self, chunk: list[tuple[CameraIngester, Crop]]) -> bool:
        cameras = [camera for camera, _ in chunk]
        images = [crop.jpeg for _, crop in chunk]
        metadata = [camera._metadata(crop) for camera, crop in chunk]
        if not add_until_acknowledged(
            self.client, images, metadata, self.settings, self.abort, cameras
        ):
            return False
        for camera in dict.fromkeys(cameras):
            mine = [crop for owner, crop in chunk if owner is camera]
            camera.acknowledged(mine)
            self._count(camera, -len(mine))
        return True


def _in_roi(detections: Detections, roi: tuple[float, float, float, float]) -> Detections:
    """The detections whose box centre lies inside ``roi`` (x, y, w, h)."""
    x, y, w, h = roi
    boxes = detections.boxes
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    keep = (cx >= x) & (cx <= x + w) & (cy >= y) & (cy <= y + h)
    return Detections(boxes[keep], detections.scores[keep])


def prefetch(
    frames: Iterator[Frame],
    size: int,
    stop: threading.Event,
    *,
    dropped: Callable[[], None] | None = None,
) -> Iterator[Frame]:
    """Decode ahead in a thread through a bounded queue (``size`` frames); errors of the
    source are raised here, in the consumer. With ``dropped`` (live sources) the reader
    never waits: a new frame replaces the oldest queued one, and ``dropped`` is called."""
    buffer: queue.Queue[Any] = queue.Queue(maxsize=max(1, size))
    done = object()

    def put(item: Any, replace: bool) -> None:
        while not stop.is_set():
            try:
                if replace:
                    buffer.put_nowait(item)
                else:
                    buffer.put(item, timeout=0.2)
                return
            except queue.Full:
                if replace:
                    try:
                        buffer.get_nowait()  # the oldest frame (only frames precede the end)
                    except queue.Empty:
                        continue
                    dropped()  # type: ignore[misc]

    def produce() -> None:
        try:
            for frame in frames:
                put(frame, replace=dropped is not None)
                if stop.is_set():
                    return
            item: Any = done
        except BaseException as exc:  # handed to the consumer
            item = exc
        put(item, replace=False)

    thread = threading.Thread(target=produce, name="decode", daemon=True)
    thread.start()
    while True:
        try:
            item = buffer.get(timeout=0.2)
        except queue.Empty:
            if stop.is_set():
                return
            continue
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item
