"""Real video for the ingestion tests: OpenCV's ``vtest.avi`` (768x576, 10 fps, 795
frames of people walking), from Debian's ``opencv-doc`` package.

It is fetched once (``apt-get download opencv-doc``, extracted with ``dpkg-deb``) into
``$REID_TEST_DATA`` (default ``~/.cache/reid/test-data``) and checked by SHA-256; it is
never committed. Tests skip when neither the file nor apt is available;
``scripts/demo_video.py`` and ``bench/bench_ingest.py`` use :func:`fetch_vtest` too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

VTEST_SHA256 = "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf"
VTEST_IN_DEB = "./usr/share/doc/opencv-doc/examples/data/vtest.avi"


def data_dir() -> Path:
    if os.environ.get("REID_TEST_DATA"):
        return Path(os.environ["REID_TEST_DATA"])
    return Path.home() / ".cache" / "reid" / "test-data"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class VideoUnavailableError(RuntimeError):
    """``vtest.avi`` is not cached and cannot be fetched here (no apt, no network)."""


def fetch_vtest() -> Path:
    """``vtest.avi``, fetched and verified on first use; :class:`VideoUnavailableError` if it
    cannot be fetched, ``ValueError`` if what was fetched is not the expected file."""
    target = data_dir() / "vtest.avi"
    if target.is_file() and _sha256(target) == VTEST_SHA256:
        return target
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise VideoUnavailableError(
            "vtest.avi is not cached and apt-get / dpkg-deb are not available"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fetched = subprocess.run(
            ["apt-get", "download", "opencv-doc"], cwd=tmp, capture_output=True, text=True
        )
        debs = list(Path(tmp).glob("opencv-doc_*.deb"))
        if fetched.returncode != 0 or not debs:
            raise VideoUnavailableError(
                f"cannot download opencv-doc for vtest.avi: {fetched.stderr[-300:]}"
            )
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", tmp, VTEST_IN_DEB], stdin=tar.stdout, check=True)
        tar.wait()
        extracted = Path(tmp) / VTEST_IN_DEB
        if _sha256(extracted) != VTEST_SHA256:
            raise ValueError(f"vtest.avi from {debs[0].name} has an unexpected SHA-256")
        shutil.move(str(extracted), target)
    return target


def vtest_path() -> Path:
    """``vtest.avi`` for a test (``pytest.skip`` if it cannot be fetched here)."""
    import pytest

    try:
        return fetch_vtest()
    except VideoUnavailableError as exc:
        pytest.skip(str(exc))
    except ValueError as exc:
        pytest.fail(str(exc))


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
