"""Real video for the ingestion tests: OpenCV's ``vtest.avi`` (768x576, 10 fps, 795
frames of people walking), from Debian's ``opencv-doc`` package.

It is fetched once (``apt-get download opencv-doc``, extracted with ``dpkg-deb``) into
``$REID_TEST_DATA`` (default ``~/.cache/reid/test-data``) and checked by SHA-256; it is
never committed. Tests skip when neither the file nor apt is available;
``scripts/demo_video.py`` and ``bench/bench_ingest.py`` use :func:`fetch_vtest` too.
"""

from __future__ import annotations

from pathlib import Path

from gallery.ingest.sample_video import SampleVideoError, fetch_vtest

__all__ = ["fetch_vtest", "read_frame", "vtest_path", "write_clip"]


def vtest_path() -> Path:
    """``vtest.avi``, fetched and verified on first use (``pytest.skip`` if impossible;
    a download whose SHA-256 differs fails)."""
    import pytest

    try:
        return fetch_vtest()
    except SampleVideoError as exc:
        if "unexpected SHA-256" in str(exc):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def write_clip(source: Path, out: Path, start: int, count: int) -> Path:
    """Frames ``start .. start+count-1`` of ``source`` as an MJPEG AVI at the same rate."""
    import cv2

    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    try:
        for index in range(start + count):
            ok, frame = capture.read()
            assert ok, f"{source} has fewer than {start + count} frames"
            if index >= start:
                writer.write(frame)
    finally:
        writer.release()
        capture.release()
    return out


def read_frame(source: Path, index: int):
    """Frame ``index`` of a video (BGR)."""
    import cv2

    capture = cv2.VideoCapture(str(source))
    try:
        for _ in range(index):
            capture.grab()
        ok, frame = capture.read()
        assert ok, f"{source}: no frame {index}"
        return frame
    finally:
        capture.release()
