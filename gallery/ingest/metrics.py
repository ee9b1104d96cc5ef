"""Prometheus metrics of one ``python -m gallery ingest`` process, per camera.

The numbers are the ones of the progress lines: at each scrape every camera is asked for
a :class:`Progress` snapshot (a custom collector, so the metrics and the log lines can
never disagree). Counters count from the start of the camera's work on its source; for
a resumed file that includes what the runs before it did (the checkpoint's counters).
``--metrics-port`` serves them at ``/metrics``::

    reid_ingest_frames_total{camera="3"}            sampled frames detected and tracked
    reid_ingest_detections_total / _tracks_total    people found / tracks started
    reid_ingest_entries_total                       entries acknowledged by the server
    reid_ingest_add_failures_total                  add requests that failed and were retried
    reid_ingest_frames_dropped_total                live frames dropped: processing fell behind
    reid_ingest_reconnects_total                    live connections lost or refused
    reid_ingest_gap_seconds_total                   live seconds without frames (outages)
    reid_ingest_source_up                           1 while the live source delivers frames
    reid_ingest_fps                                 sampled frames processed per second, lately
    reid_ingest_lag_seconds                         live: how far behind live the last frame was
    reid_ingest_pending_crops                       crops chosen, not yet acknowledged
    reid_ingest_frame_to_ack_seconds (histogram)    live: a frame live -> its entries
                                                    acknowledged (searchable)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0, 30.0,
    60.0, 120.0,
)  # fmt: skip


@dataclass(frozen=True)
class Progress:
    """One camera's numbers at one moment (live-only fields are 0 / None for files)."""

    camera: int
    frames: int
    detections: int
    tracks: int
    entries: int
    fps: float
    add_failures: int = 0
    pending: int = 0
    live: bool = False
    up: bool = True
    lag_s: float | None = None
    reconnects: int = 0
    gap_s: float = 0.0
    dropped: int = 0


class Reporter(Protocol):
    """A camera as the metrics see it: a snapshot of its numbers, on demand."""

    def progress(self) -> Progress: ...


COUNTERS = (  # metric (without _total), Progress field, help
    ("frames", "frames", "Sampled frames detected and tracked"),
    ("detections", "detections", "People found by the detector"),
    ("tracks", "tracks", "Tracks started"),
    ("entries", "entries", "Entries acknowledged by the server"),
    ("add_failures", "add_failures", "Add requests that failed and were retried"),
    ("frames_dropped", "dropped", "Live frames dropped because processing fell behind"),
    ("reconnects", "reconnects", "Live connections lost or refused"),
    ("gap_seconds", "gap_s", "Live seconds without frames because of lost connections"),
)
GAUGES = (
    ("fps", "fps", "Sampled frames processed per second over the last progress interval"),
    ("pending_crops", "pending", "Crops chosen but not yet acknowledged"),
    ("source_up", "up", "1 while the source delivers frames, 0 while it reconnects"),
    ("lag_seconds", "lag_s", "Live: seconds the last processed frame was behind live"),
)


class _Collector(Collector):
    def __init__(self, cameras: Callable[[], list[Reporter]]) -> None:
        self.cameras = cameras

    def collect(self) -> Iterator[Metric]:
        snapshots = [camera.progress() for camera in self.cameras()]
        for kind, table in ((CounterMetricFamily, COUNTERS), (GaugeMetricFamily, GAUGES)):
            for name, attr, doc in table:
                family = kind(f"reid_ingest_{name}", doc, labels=["camera"])
                for p in snapshots:
                    value = getattr(p, attr)
                    if value is not None:  # lag of a file: not exposed
                        family.add_metric([str(p.camera)], float(value))
                yield family


class IngestMetrics:
    """The registry of one ingester process; cameras register with :meth:`track`."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._cameras: list[Reporter] = []
        self._lock = threading.Lock()
        self.registry.register(_Collector(self.cameras))
        self.frame_to_ack = Histogram(
            "reid_ingest_frame_to_ack_seconds",
            "Live: seconds from a frame being live to its entries acknowledged (searchable)",
            ["camera"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def track(self, camera: Reporter) -> None:
        with self._lock:
            self._cameras.append(camera)

    def cameras(self) -> list[Reporter]:
        with self._lock:
            return list(self._cameras)

    def acknowledged(self, camera: int, latencies_s: list[float]) -> None:
        """Record the frame-to-acknowledgement time of entries just acknowledged."""
        child = self.frame_to_ack.labels(str(camera))
        for seconds in latencies_s:
            child.observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> tuple[str, Callable[[], None]]:
        """Serve ``/metrics`` on ``host:port`` (0: a free port) in a daemon thread;
        returns the URL and the function that stops it."""
        from prometheus_client import start_http_server

        server, thread = start_http_server(port, addr=host, registry=self.registry)
        url = f"http://{host}:{server.server_port}/metrics"

        def close() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5)

        return url, close
