"""Prometheus metrics of one server (own registry, so several apps can coexist in tests)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Request counts and latencies, batch sizes, queue depth and gallery size."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "reid_requests_total",
            "Requests by protocol, route and status code",
            ["protocol", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "reid_request_latency_seconds",
            "Request latency by protocol and route",
            ["protocol", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "reid_batch_size_images",
            "Images per runtime call",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "reid_batch_requests",
            "Requests merged into one runtime call",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference_latency = Histogram(
            "reid_inference_latency_seconds",
            "Runtime embed time per call",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_cpu = Counter(
            "reid_inference_cpu_seconds",
            "CPU time of the threads that made the runtime calls, inside the calls (all of "
            "the runtime's CPU when it computes on the calling thread: one intra-op thread)",
            registry=r,
        )
        self.queue_depth = Gauge(
            "reid_batch_queue_depth_images", "Images waiting for the runtime", registry=r
        )
        self.images_embedded = Counter(
            "reid_images_embedded_total", "Images embedded by the runtime", registry=r
        )
        self.gallery_size = Gauge("reid_gallery_entries", "Entries in the gallery", registry=r)

    def observe_request(self, protocol: str, route: str, status: int | str, seconds: float) -> None:
        """Count one finished request and record its latency."""
        self.requests.labels(protocol, route, str(status)).inc()
        self.latency.labels(protocol, route).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
