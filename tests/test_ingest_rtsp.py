"""Live ingestion from a real RTSP stream: ``python -m gallery ingest rtsp://...`` reading
``vtest.avi`` (as H.264) from GStreamer's RTSP server on 127.0.0.1, into a real server.

The stream is killed mid-way and restarted on the same port, then frozen (SIGSTOP) past
the read timeout and replaced: the ingester reconnects with backoff each time and logs it,
the outages are visible in its ``/metrics``. Then the gallery server stalls: adds time
out and are retried while detection goes on and the crops wait. No entry the ingester
had acknowledged is lost and none is stored twice. The gallery server is
``tests/live_server.py`` (the real server, a colour-mean runtime: what is checked here
is the stream handling, not re-ID accuracy).

Needs ``scripts/install_rtsp.sh`` (run by ``.ci/run``): skipped without it, failed in CI.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from live_server import LiveServer
from prometheus_client.parser import text_string_to_metric_families
from rtsp_stream import RtspServer, h264_copy, require_rtsp
from video_data import vtest_path

from reid_client import ReIDClient

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CAMERA = 7
STREAM_TIMEOUT_S = 3.0
CLIP_FRAMES = 600  # 60 s at 10 fps: longer than the test, so the stream never ends by itself


def wait_for(what: str, check: Callable[[], object], timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def scrape(url: str) -> dict[str, float]:
    """This camera's samples of ``/metrics`` by name (``reid_ingest_entries_total``...)."""
    text = httpx.get(url, timeout=5).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("camera") == str(CAMERA)
    }


def entries(url: str) -> list:
    out: list = []
    with ReIDClient(url) as client:
        while True:
            page = client.list_gallery(offset=len(out), limit=1000, cameras=[CAMERA])
            out.extend(page.entries)
            if len(out) >= page.total:
                return out


@pytest.fixture
def stream(tmp_path) -> RtspServer:
    require_rtsp()
    clip = h264_copy(vtest_path(), tmp_path / "vtest.mp4", frames=CLIP_FRAMES)
    server = RtspServer({"/hall": clip}, tmp_path / "rtsp.log").start()
    yield server
    server.stop()


@pytest.fixture
def gallery_server(tmp_path) -> LiveServer:
    server = LiveServer(tmp_path / "gallery", log=tmp_path / "server.log").wait_ready()
    yield server
    server.stop()


def test_a_dropped_and_a_frozen_stream_are_reconnected_without_losing_acked_entries(
    stream, gallery_server, tmp_path
):
    from gallery.ingest.detector import DetectorError, verified_model

    try:
        verified_model()
    except DetectorError as exc:
        pytest.skip(str(exc))
    log = tmp_path / "ingest.log"
    cmd = [
        sys.executable, "-m", "gallery", "ingest", stream.urls["/hall"],
        "--camera", str(CAMERA), "--name", "hall", "--server", gallery_server.url,
        "--max-delay", "1", "--stream-timeout", str(STREAM_TIMEOUT_S),
        "--metrics-port", "0", "--progress-interval", "1", "--state-dir", str(tmp_path / "state"),
        "--timeout", "2",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "client")]),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)  # the ingester's default: RTSP over TCP
    with log.open("w") as err:
        child = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        metrics_url = wait_for(
            "the metrics address",
            lambda: (re.findall(r"metrics: (http://\S+/metrics)", log.read_text()) or [""])[0],
        )
        # 1. Frames flow and entries are acknowledged.
        wait_for("entries", lambda: scrape(metrics_url).get("reid_ingest_entries_total", 0) >= 3)
        before = scrape(metrics_url)
        assert before["reid_ingest_source_up"] == 1 and before["reid_ingest_reconnects_total"] == 0
        assert before["reid_ingest_lag_seconds"] < 5
        # 2. The stream drops: the read fails at once, the ingester retries with backoff.
        acked = entries(gallery_server.url)
        dropped_at = time.time()
        stream.kill()
        wait_for("the loss to be seen", lambda: scrape(metrics_url)["reid_ingest_source_up"] == 0)
        wait_for("a retry", lambda: "reconnecting in" in log.read_text())
        time.sleep(2)
        stream.start()  # the same URL again
        restarted_at = time.time()
        wait_for("the reconnect", lambda: scrape(metrics_url)["reid_ingest_source_up"] == 1)
        assert "is back after a" in log.read_text()
        after_drop = scrape(metrics_url)
        assert after_drop["reid_ingest_reconnects_total"] >= 1
        assert after_drop["reid_ingest_gap_seconds_total"] >= 2  # the 2 s it was down, at least
        # 3. Frames and entries come again, from after the restart.
        wait_for(
            "entries from the restarted stream",
            lambda: any(e.timestamp > restarted_at for e in entries(gallery_server.url)),
        )
        # 4. The server freezes: the connection stays up, no frame comes; the read
        #    timeout detects it, and the ingester reconnects to its replacement. (A thawed
        #    GStreamer server can take 10 s to pace its streams again: replaced, as a
        #    supervisor would, it serves at once.)
        frames_before_freeze = scrape(metrics_url)["reid_ingest_frames_total"]
        stream.freeze()
        wait_for(
            "the read timeout",
            lambda: scrape(metrics_url)["reid_ingest_source_up"] == 0,
            timeout=STREAM_TIMEOUT_S + 15,
        )
        stream.restart()
        wait_for(
            "frames after the restart",
            lambda: scrape(metrics_url)["reid_ingest_frames_total"] > frames_before_freeze + 5,
        )
        last = scrape(metrics_url)
        assert last["reid_ingest_reconnects_total"] >= 2
        gap_before_freeze = after_drop["reid_ingest_gap_seconds_total"]
        assert last["reid_ingest_gap_seconds_total"] >= gap_before_freeze + STREAM_TIMEOUT_S
        # 5. The gallery server stalls (SIGSTOP): adds time out and are retried, while
        #    detection goes on and the chosen crops wait in the camera's outbox; once the
        #    server is back they are all sent.
        stalled = scrape(metrics_url)
        os.kill(gallery_server.pid, signal.SIGSTOP)
        try:
            failed = wait_for(
                "a failed add",
                lambda: (
                    (s := scrape(metrics_url))["reid_ingest_add_failures_total"]
                    > stalled["reid_ingest_add_failures_total"]
                    and s
                ),
            )
            wait_for(
                "frames detected and crops waiting while the server is away",
                lambda: (
                    (s := scrape(metrics_url))["reid_ingest_frames_total"]
                    > failed["reid_ingest_frames_total"] + 10
                    and s["reid_ingest_pending_crops"] > 0
                ),
            )
        finally:
            os.kill(gallery_server.pid, signal.SIGCONT)
        wait_for(
            "the waiting crops sent",
            lambda: (
                (s := scrape(metrics_url))["reid_ingest_pending_crops"] == 0
                and s["reid_ingest_entries_total"] > failed["reid_ingest_entries_total"]
            ),
        )
        assert "add failed" in log.read_text() and "retrying in" in log.read_text()
        # 6. SIGTERM: the pending crops are flushed, then the ingester exits 0.
        child.send_signal(signal.SIGTERM)
        assert child.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    text = log.read_text()
    assert "SIGTERM: flushing pending crops" in text
    final = entries(gallery_server.url)
    assert {e.id for e in acked} <= {e.id for e in final}  # nothing acknowledged was lost
    assert len({e.key for e in final}) == len(final)  # nothing is there twice
    written = [int(n) for n in re.findall(r"camera 7 \(hall\): .* (\d+) entries written", text)]
    assert written and written[-1] == len(final)  # the counters are the gallery's entries
    assert last["reid_ingest_entries_total"] <= len(final)
    assert all(e.camera == CAMERA and e.source == stream.urls["/hall"] for e in final)
    # Entries carry the wall clock of their frame: none from while the stream was down.
    assert not [e for e in final if dropped_at + 0.5 < e.timestamp < restarted_at]
    assert any(e.timestamp < dropped_at for e in final)
    assert any(e.timestamp > restarted_at for e in final)
