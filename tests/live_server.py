"""``python -m server`` as a real process on 127.0.0.1 over a real on-disk gallery, with the
colour-mean runtime of ``server_fakes`` in place of a model export (no model to build).

Run as a script, it is the server's own ``main`` with only ``load_service`` replaced::

    python tests/live_server.py --gallery DIR --http-port 0 --grpc-port 0 [flags...]

``LiveServer`` starts it, waits until it is ready and reads its peak memory
(``/proc/PID/status`` ``VmHWM``). Everything else (flags, auth, uvicorn, grpc.aio, the
decoders, the gallery) is the production code.
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

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _load_fake_service(settings):  # the replacement of server.cli.load_service
    from server_fakes import DIM, ColourRuntime

    from reid.gallery import GalleryError, open_gallery
    from server.cli import StartupError
    from server.service import SearchService

    if settings.gallery is None:
        raise StartupError("no gallery: pass --gallery GALLERY_DIR (or set REID_GALLERY)")
    try:
        gallery = open_gallery(
            settings.gallery, DIM, index=settings.index, thumbnail_dir=settings.thumbnail_dir
        )
    except (GalleryError, OSError) as exc:
        raise StartupError(f"cannot load the model or gallery: {exc}") from None
    return SearchService(ColourRuntime(), gallery, settings)


FAULTS_ENV = "REID_TEST_FAULTS"
"""A directory: while it holds a file ``enospc`` (``readonly``), the gallery's writes
fail as on a full (read-only) disk: thumbnail files cannot be created and SQLite refuses
to write. Only this test harness reads it; the server has no such switch."""


def _install_faults(directory: Path) -> None:
    import builtins
    import errno
    import sqlite3
    import types

    from reid.gallery import store

    def fault() -> tuple[int, str] | None:
        if (directory / "enospc").exists():
            return errno.ENOSPC, "database or disk is full"
        if (directory / "readonly").exists():
            return errno.EROFS, "attempt to write a readonly database"
        return None

    def faulty_open(file, mode="r", *args, **kwargs):
        failing = fault()
        if failing and any(flag in mode for flag in "wax+"):
            raise OSError(failing[0], os.strerror(failing[0]), str(file))
        return builtins.open(file, mode, *args, **kwargs)

    class FaultyConnection(sqlite3.Connection):
        def execute(self, sql, *args):
            failing = fault()
            if failing and sql.lstrip().upper().startswith(("BEGIN", "INSERT", "DELETE")):
                raise sqlite3.OperationalError(failing[1])
            return super().execute(sql, *args)

        def executemany(self, sql, *args):
            failing = fault()
            if failing:
                raise sqlite3.OperationalError(failing[1])
            return super().executemany(sql, *args)

    real_connect = sqlite3.connect
    faulty = types.ModuleType("sqlite3")  # the module as the store sees it
    faulty.__dict__.update(sqlite3.__dict__)
    faulty.connect = lambda *args, **kwargs: real_connect(*args, **kwargs, factory=FaultyConnection)
    store.sqlite3 = faulty
    store.open = faulty_open  # the store's writes of thumbnail files


def wait_until_serving(
    proc: subprocess.Popen, log_text: Callable[[], str], timeout: float, poll: float = 0.05
) -> tuple[str, str]:
    """Wait until a ``python -m server`` child logged its address and ``/readyz`` is 200.

    Returns ``(http_url, grpc_target)`` (``grpc_target`` empty without gRPC); raises an
    ``AssertionError`` with the log if the process exits or is not ready in time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}:\n{log_text()}")
        match = re.search(r"serving HTTP on (http://[\d.]+:\d+)", log_text())
        if match:
            grpc = re.search(r"gRPC on ([\d.]+:\d+)", log_text())
            try:
                if httpx.get(f"{match.group(1)}/readyz", timeout=2).status_code == 200:
                    return match.group(1), grpc.group(1) if grpc else ""
            except httpx.TransportError:
                pass
        time.sleep(poll)
    raise AssertionError(f"server not ready in {timeout}s:\n{log_text()}")


class LiveServer:
    """A ``tests/live_server.py`` child process; ``url`` and ``grpc_target`` once ready."""

    def __init__(self, gallery: Path, *args: str, log: Path, env: dict | None = None) -> None:
        cmd = [
            sys.executable, str(Path(__file__).resolve()), "--gallery", str(gallery),
            "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", *args,
        ]  # fmt: skip
        path = os.pathsep.join([str(REPO), str(REPO / "client"), str(TESTS)])
        child_env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
        child_env.update(env or {})
        self.log = log
        self.handle = log.open("w")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=child_env, stdout=self.handle, stderr=subprocess.STDOUT
        )
        self.url = ""
        self.grpc_target = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text()

    def wait_ready(self, timeout: float = 60.0) -> LiveServer:
        self.url, self.grpc_target = wait_until_serving(self.proc, self.text, timeout)
        return self

    def wait_exit(self, timeout: float = 30.0) -> int:
        """The exit code of a server expected to stop by itself (e.g. a refused start)."""
        code = self.proc.wait(timeout)
        self.handle.close()
        return code

    def status_kib(self, field: str) -> int:
        """A ``/proc/PID/status`` memory figure in KiB (``VmHWM``: peak resident set)."""
        text = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
        assert match, text
        return int(match.group(1))

    def reset_peak_rss(self) -> None:
        """Restart ``VmHWM`` from the current RSS (Linux: write 5 to clear_refs)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.handle.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.handle.close()
        return self.proc.returncode


if __name__ == "__main__":
    sys.path.insert(0, str(TESTS))
    from server import cli

    cli.load_service = _load_fake_service
    if os.environ.get(FAULTS_ENV):
        _install_faults(Path(os.environ[FAULTS_ENV]))
    sys.exit(cli.main())
