"""Real RTSP streams for the live-ingestion tests and ``bench/bench_ingest.py``.

:class:`RtspServer` runs ``tests/rtsp_server.py`` (GStreamer's RTSP server) under Debian's
``/usr/bin/python3`` and can kill, freeze and restart it on the same port;
:func:`h264_copy` makes the H.264 MP4 it serves from a video (ffmpeg, libx264,
``-tune zerolatency``, a keyframe every 10 frames so a reconnecting reader starts
decoding within a second). ``scripts/install_rtsp.sh`` installs what they need
(``.ci/run`` does); without it :func:`require_rtsp` skips, except in CI (``CI=true``),
where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).resolve().parent / "rtsp_server.py"
_GI_CHECK = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
    "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
    "missing = [e for e in ('qtdemux', 'h264parse', 'rtph264pay')"
    " if not Gst.ElementFactory.find(e)]; print(' '.join(missing))"
)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing_rtsp() -> str:
    """Why no RTSP stream can be served here ("" when it can)."""
    if not shutil.which("ffmpeg"):
        return "ffmpeg is not installed"
    if not Path(SYSTEM_PYTHON).is_file():
        return f"{SYSTEM_PYTHON} (Debian's Python, with python3-gi) is not there"
    check = subprocess.run(
        [SYSTEM_PYTHON, "-c", _GI_CHECK], capture_output=True, text=True, timeout=60
    )
    if check.returncode != 0:
        return f"GStreamer's RTSP server cannot be loaded: {check.stderr.strip()[-300:]}"
    if check.stdout.strip():
        return f"GStreamer elements missing: {check.stdout.strip()}"
    return ""


def require_rtsp() -> None:
    """Fail in CI (the stream is part of the test environment there), skip elsewhere."""
    reason = missing_rtsp()
    if not reason:
        return
    message = f"the RTSP tests need GStreamer's RTSP server and ffmpeg: {reason} "
    message += "(install them with: bash scripts/install_rtsp.sh)"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def h264_copy(source: Path, out: Path, frames: int | None = None) -> Path:
    """``source`` (its first ``frames`` frames) as an H.264 MP4 at the same frame rate."""
    limit = ["-frames:v", str(frames)] if frames else []
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(source), *limit,
         "-an", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
         "-g", "10", "-pix_fmt", "yuv420p", str(out)],
        check=True, timeout=300,
    )  # fmt: skip
    return out


class RtspServer:
    """``tests/rtsp_server.py`` serving ``mounts`` (``{"/cam": clip.mp4}``) on 127.0.0.1;
    ``urls[path]`` once started. :meth:`restart` serves again on the same port."""

    def __init__(self, mounts: dict[str, Path], log: Path, port: int = 0) -> None:
        self.mounts, self.log, self.port = mounts, log, port
        self.proc: subprocess.Popen | None = None
        self.urls: dict[str, str] = {}

    def start(self, timeout: float = 30.0) -> RtspServer:
        args = [f"{path}={file}" for path, file in self.mounts.items()]
        with self.log.open("a") as handle:
            handle.write(f"--- rtsp_server.py on port {self.port}\n")
            offset = handle.tell()
            self.proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), *args],
                stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": ""},
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text()[offset:]
            urls = re.findall(r"serving (rtsp://[\d.]+:(\d+)(/\S*))", text)
            if len(urls) >= len(self.mounts):
                self.port = int(urls[0][1])
                self.urls = {path: url for url, _, path in urls}
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"the RTSP server exited:\n{self.log.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"the RTSP server did not start:\n{self.log.read_text()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: the stream drops at once (readers see the connection close)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: the connection stays open but no frame comes (the read timeout's case)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def restart(self, timeout: float = 30.0) -> RtspServer:
        self.kill()
        return self.start(timeout)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # a frozen server cannot handle SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
