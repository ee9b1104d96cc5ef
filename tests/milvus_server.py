"""A real Milvus 2.3 standalone server for the tests, from the ``milvus`` PyPI package.

The package (a launcher plus the standalone binary with embedded etcd) conflicts with
nothing of ours but needs ``setuptools<70`` (``pkg_resources``), so it lives in its own
virtual environment: ``scripts/install_milvus.sh`` creates ``.venv-milvus-server``, or
``REID_MILVUS_SERVER`` names another ``milvus-server`` executable. The client side
(``pymilvus``) is in the main environment.

Every port the launcher knows is set to a free one (so tests never collide with another
Milvus or with each other); the health/metrics port is picked by the launcher from 9091
up. Milvus 2.3's gRPC servers listen on every interface (the config has ports, not
listen addresses); the data stays in the test's temporary directory. The server runs in
its own process group and is stopped by killing the group (it ignores SIGTERM for longer
than a test wants to wait; a kill is also the harder test of durability).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PORT_KEYS = (
    "proxy_port",
    "proxy_internal_port",
    "etcd_port",
    "root_coord_port",
    "query_coord_port",
    "query_node_port",
    "index_coord_port",
    "index_node_port",
    "data_coord_port",
    "data_node_port",
)


# The settings docs/GALLERY.md recommends for MilvusGallery (its searches run at Strong
# consistency, which waits for the next time tick: 200 ms by default, 40 ms median at 20;
# bench/bench_milvus_consistency.py measures it).
RECOMMENDED_CONFIG: dict[str, object] = {"proxy.timeTickInterval": 20}


def milvus_executable() -> str | None:
    """The ``milvus-server`` launcher to use, or None when none is installed."""
    named = os.environ.get("REID_MILVUS_SERVER")
    if named:
        return named if Path(named).exists() else None
    local = REPO / ".venv-milvus-server" / "bin" / "milvus-server"
    if local.exists():
        return str(local)
    return shutil.which("milvus-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MilvusServer:
    """One standalone Milvus on free ports with its data in ``data_dir``; restartable."""

    def __init__(
        self, executable: str, data_dir: Path, config: dict[str, object] | None = None
    ) -> None:
        self.executable = executable
        self.data_dir = data_dir
        self.config = dict(config or {})  # milvus.yaml keys, e.g. {"proxy.timeTickInterval": 20}
        self.ports = {key: free_port() for key in PORT_KEYS}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self.ports["proxy_port"]

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        """Start and wait until the proxy answers a client call (RuntimeError if not).

        The first start goes through the launcher, which writes ``configs/milvus.yaml``
        with our ports and unpacks the binary. A restart runs that binary directly with
        the same config: the launcher would move a port still in TIME_WAIT after a kill
        to the next free one, and clients must find the server where it was.
        """
        log = open(self.data_dir.with_suffix(".launcher.log"), "ab")  # noqa: SIM115
        binary = self.data_dir / "bin" / "milvus"
        if (self.data_dir / "configs" / "milvus.yaml").exists() and binary.exists():
            env = {
                **os.environ,
                "DEPLOY_MODE": "STANDALONE",
                "METRICS_PORT": str(free_port()),
                "MILVUS_RUN_DIR": str(self.data_dir / "run"),
                "LD_LIBRARY_PATH": f"{binary.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}",
            }
            args = [str(binary), "run", "standalone"]
            self.process = subprocess.Popen(
                args, cwd=self.data_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        else:
            args = [self.executable, "--data", str(self.data_dir)]
            for key, port in self.ports.items():
                args += [f"--{key.replace('_', '-')}", str(port)]
            for key, value in self.config.items():
                args += ["--extra-config", f"{key}={value}"]
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        log.close()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        from pymilvus import MilvusClient

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"milvus-server exited with {self.process.returncode}")
            try:
                client = MilvusClient(uri=f"http://{self.url}", timeout=2)
                client.list_collections(timeout=2)
                client.close()
                return
            except Exception as error:  # not up yet
                last = error
                time.sleep(1)
        raise RuntimeError(f"Milvus did not answer on {self.url} within {timeout:.0f} s: {last}")

    def stop(self) -> None:
        """Kill the whole process group (launcher, milvus, embedded etcd) and wait."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
