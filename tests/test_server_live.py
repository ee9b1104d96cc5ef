"""``python -m server`` as a real process on 127.0.0.1, with a tiny real ONNX export.

Covers: startup errors (exit code 2), add/search over real HTTP and gRPC health,
bad input over a real socket, graceful SIGTERM, and durability across SIGKILL.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from live_server import wait_until_serving
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SIZE = (64, 32)  # model input H, W (of the ``tiny_export`` fixture, in conftest.py)

pytestmark = pytest.mark.slow


class ServerProcess:
    """A ``python -m server`` child process; ``url`` once it logged its address."""

    def __init__(self, export: Path, gallery: Path, *args: str, log: Path) -> None:
        cmd = [
            sys.executable, "-m", "server", "--model", str(export), "--gallery", str(gallery),
            "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0",
            "--threads", "1", "--device", "cpu", *args,
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.log = log
        self.handle = log.open("w")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self.handle, stderr=self.handle)
        self.url = ""
        self.grpc_target = ""

    def text(self) -> str:
        return self.log.read_text()

    def wait_ready(self, timeout: float = 90.0) -> ServerProcess:
        self.url, self.grpc_target = wait_until_serving(self.proc, self.text, timeout, poll=0.2)
        return self

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


@pytest.fixture
def start(tiny_export, tmp_path):
    started: list[ServerProcess] = []

    def run(*args: str, gallery: Path | None = None) -> ServerProcess:
        log = tmp_path / f"server{len(started)}.log"
        server = ServerProcess(tiny_export, gallery or tmp_path / "gallery", *args, log=log)
        started.append(server)
        return server.wait_ready()

    yield run
    for server in started:
        server.stop()


def crop(seed: int) -> bytes:
    """A distinct random 64x32 JPEG crop."""
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 32, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=95)
    return out.getvalue()


def add(client: httpx.Client, seeds: list[int]) -> list[int]:
    files = [("images", (f"{s}.jpg", crop(s), "image/jpeg")) for s in seeds]
    meta = [{"camera": s % 3, "timestamp": float(s), "source": f"crop{s}"} for s in seeds]
    r = client.post("/v1/gallery", files=files, data={"metadata": json.dumps(meta)})
    assert r.status_code == 201, r.text
    return r.json()["ids"]


def top_ids(client: httpx.Client, seed: int, **form: str) -> list[int]:
    files = [("images", ("q.jpg", crop(seed), "image/jpeg"))]
    r = client.post("/v1/search", files=files, data={"k": "3", **form})
    assert r.status_code == 200, r.text
    return [m["id"] for m in r.json()["results"][0]["matches"]]


# -- startup errors ---------------------------------------------------------------------


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_missing_export_dir_exits_2_with_one_line(tmp_path):
    r = run_cli("--model", str(tmp_path / "nope"), "--gallery", str(tmp_path / "g"))
    assert r.returncode == 2
    (line,) = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert "no export manifest" in line and "Traceback" not in r.stderr


def test_failed_export_is_refused(tiny_export, tmp_path):
    failed = tmp_path / "failed"
    failed.mkdir()
    for name in ("manifest.json", "model.onnx"):
        (failed / name).write_bytes((tiny_export / name).read_bytes())
    (failed / "FAILED").write_text("parity: max cosine distance 0.3 > 1e-4\n")
    r = run_cli("--model", str(failed), "--gallery", str(tmp_path / "g"))
    assert r.returncode == 2 and "failed its parity gate" in r.stderr


def test_busy_port_exits_2(tiny_export, tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli("--model", str(tiny_export), "--gallery", str(tmp_path / "g"),
                    "--http-port", str(port), "--no-grpc")  # fmt: skip
    assert r.returncode == 2 and f"127.0.0.1:{port}" in r.stderr


# -- serving ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loop",
    [
        "asyncio",
        pytest.param(
            "uvloop",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed"
            ),
        ),
    ],
)
def test_add_search_and_bad_input_over_real_http(start, loop):
    server = start("--max-body-mb", "2", "--loop", loop)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        ids = add(client, [1, 2, 3, 4])
        assert top_ids(client, 3)[0] == ids[2]  # the same crop comes back first
        # exclude the query's own camera (crop 3 is on camera 0)
        assert ids[2] not in top_ids(client, 3, query_cameras="0", exclude_same_camera="true")

        from test_server_http import huge_png, truncated_jpeg

        bad_uploads = {b"nope": 400, b"": 400, truncated_jpeg(): 400, huge_png(): 413}
        for data, status in bad_uploads.items():
            r = client.post("/v1/search", files=[("images", ("x.jpg", data, "image/jpeg"))])
            assert r.status_code == status and "image 0" in r.json()["error"]["message"]
        r = client.post("/v1/search/raw", content=b"x", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415
        r = client.post(
            "/v1/search/raw?k=0", content=crop(1), headers={"Content-Type": "image/jpeg"}
        )
        assert r.status_code == 400 and "k must be between 1" in r.json()["error"]["message"]
        r = client.post("/v1/search/raw", content=b"\0" * (2 * 1024 * 1024 + 1),
                        headers={"Content-Type": "image/jpeg"})  # fmt: skip
        assert r.status_code == 413  # --max-body-mb 2
        assert client.delete("/v1/gallery/99999").status_code == 404
        assert client.get("/v1/gallery/stats").json()["size"] == 4
        assert top_ids(client, 3)[0] == ids[2]  # still serving

        info = client.get("/v1/model").json()
        assert info["runtime"]["runtime"] == "onnxruntime" and info["runtime"]["device"] == "cpu"
        metrics = client.get("/metrics").text
        assert 'route="/v1/search",status="400"' in metrics
        assert "reid_gallery_entries 4.0" in metrics

    assert f"event loop: {loop}" in server.text()
    if server.grpc_target:  # the gRPC front end shares the loop and the service
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(server.grpc_target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

    assert server.stop() == 0  # SIGTERM: graceful
    assert "stopped" in server.text()


def test_write_key_from_the_environment(start, monkeypatch):
    monkeypatch.setenv("REID_API_KEY", "k3y")
    server = start("--no-grpc")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        files = [("images", ("a.jpg", crop(1), "image/jpeg"))]
        assert client.post("/v1/gallery", files=files).status_code == 401
        r = client.post("/v1/gallery", files=files, headers={"X-API-Key": "k3y"})
        assert r.status_code == 201


def test_sigkill_during_adds_loses_no_acknowledged_entry(start, tmp_path):
    gallery = tmp_path / "durable"
    server = start("--no-grpc", gallery=gallery)
    acknowledged: dict[int, int] = {}  # id -> crop seed
    stop = threading.Event()
    failures: list[str] = []

    def stream_adds() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            seed = 100
            while not stop.is_set():
                seeds = [seed, seed + 1]
                try:
                    ids = add(client, seeds)
                except (httpx.TransportError, AssertionError) as exc:
                    failures.append(repr(exc))
                    return
                acknowledged.update(zip(ids, seeds, strict=True))
                seed += 2

    writer = threading.Thread(target=stream_adds)
    writer.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    stop.set()
    writer.join(15)
    assert len(acknowledged) >= 20, failures

    restarted = start("--no-grpc", gallery=gallery)
    with httpx.Client(base_url=restarted.url, timeout=30) as client:
        size = client.get("/v1/gallery/stats").json()["size"]
        # At most the one in-flight request (2 images) may have landed unacknowledged.
        assert len(acknowledged) <= size <= len(acknowledged) + 2
        files = [("images", ("q.jpg", crop(100), "image/jpeg"))]
        r = client.post("/v1/search", files=files, data={"full_ranking": "true"})
        stored = {m["id"]: m for m in r.json()["results"][0]["matches"]}
        assert len(stored) == size and set(acknowledged) <= set(stored)
        for entry_id, match in stored.items():  # every entry is whole
            seed = acknowledged.get(entry_id)
            if seed is not None:
                assert match["source"] == f"crop{seed}" and match["timestamp"] == float(seed)
            thumb = client.get(f"/v1/gallery/{entry_id}/thumbnail")
            assert thumb.status_code == 200
            Image.open(io.BytesIO(thumb.content)).load()
        for entry_id, seed in list(acknowledged.items())[:: max(1, len(acknowledged) // 8)]:
            assert top_ids(client, seed)[0] == entry_id  # searchable by its own crop


# -- the HTTP protocol and its header deadline (server.connections) -------------------------


def _protocols() -> list:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    bases = [H11Protocol]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return bases
    return [*bases, HttpToolsProtocol]


def _read_all(sock) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize("base", _protocols(), ids=lambda base: base.__name__)
def test_both_http_protocols_close_connections_whose_headers_are_late(base):
    """The header deadline works on uvicorn's h11 and httptools protocols alike (a
    connection idle after its answer is closed, one with half its headers gets a 408),
    and the server picks httptools when it is installed (llhttp, in C)."""
    import asyncio
    import socket

    import uvicorn

    from server.connections import base_protocol, http_protocol

    try:
        import httptools  # noqa: F401
    except ImportError:
        pass
    else:
        assert base_protocol().__name__ == "HttpToolsProtocol"

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=http_protocol(0.5, base), log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as idle:
            idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_all(idle).startswith(b"HTTP/1.1 200")  # then closed, silently
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
                slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                answer = _read_all(slow)
            assert answer.startswith(b"HTTP/1.1 408") and b"header_timeout_s" in answer
            assert 0.4 < time.monotonic() - started < 3
    finally:
        server.should_exit = True
        thread.join(10)
