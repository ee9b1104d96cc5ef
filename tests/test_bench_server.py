"""bench/bench_server.py: where the runtime's CPU time per request comes from."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_server
from bench_server import Raw, inference_seconds, parse_counters

RAW = Raw(img_s={1: 100.0}, cpu_per_call_s=0.001, cpu_per_image_s=0.002)

METRICS = """\
# HELP reid_batch_size_images Images per runtime call
reid_batch_size_images_count 10.0
reid_batch_size_images_sum 40.0
reid_requests_total{protocol="http",route="/v1/search/raw",status="200"} 40.0
reid_inference_cpu_seconds_total 0.25
"""


def counters(text: str) -> dict[str, float]:
    return parse_counters(text, os.getpid())


def test_counters_are_read_from_the_servers_metrics():
    got = counters(METRICS)
    assert (got["calls"], got["images"], got["searches"]) == (10.0, 40.0, 40.0)
    assert got["inference_cpu"] == pytest.approx(0.25)
    assert got["reports_inference_cpu"] == 1.0
    assert got["cpu"] > 0


def test_the_servers_own_measurement_is_used_with_one_intra_op_thread():
    after = counters(METRICS)
    delta = {"inference_cpu": 0.2, "calls": 10.0, "images": 40.0}
    assert inference_seconds(after, delta, RAW, threads=1) == (0.2, True)


@pytest.mark.parametrize(
    ("text", "threads"),
    [(METRICS.replace("reid_inference_cpu_seconds_total 0.25\n", ""), 1), (METRICS, 2)],
    ids=["server-without-the-counter", "pool-threads-not-counted"],
)
def test_otherwise_the_fit_on_the_raw_runtime_is_used(text, threads):
    delta = {"inference_cpu": 0.2, "calls": 10.0, "images": 40.0}
    seconds, measured = inference_seconds(counters(text), delta, RAW, threads)
    assert not measured
    assert seconds == pytest.approx(10 * 0.001 + 40 * 0.002)


def test_fitted_cells_are_marked_in_the_report():
    rows = [
        bench_server.Load("after", "on", 8, 100, 1.0, 5.0, 9.0, 0, 3.0, 2.0, 0.1, 4.0, True),
        bench_server.Load("after", "on", 32, 100, 1.0, 5.0, 9.0, 0, 3.0, 2.5, 0.1, 4.0, False),
    ]
    args = bench_server.argparse.Namespace(
        load="httpx", baseline_label="", note="", model_label="m", threads=1, workers=1,
        gallery_size=10, max_batch=32, max_wait_ms=2.0, seconds=1.0, clients=[8, 32],
        encoder_name="mobilenetv2",
    )  # fmt: skip
    text = bench_server.report(rows, RAW, args)
    assert "| 1.00 |" in text and "| ~0.50 |" in text
    assert "(inference CPU fitted, not measured)" in text
