"""``python -m server``: HTTP (uvicorn) and gRPC in one event loop over one SearchService.

    python -m server --model EXPORT_DIR --gallery GALLERY_DIR [--http-port 8000]
        [--grpc-port 50051] [--runtime onnxruntime|tensorrt|torch] [--device cpu|cuda]

Every flag has an environment variable ``REID_<NAME>`` (flags win). Exit code 2 with
a one-line message for a bad export, a busy port or an unusable runtime/gallery.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import signal
import socket
import sys
from collections.abc import Iterator, Sequence

import uvicorn
from pydantic import ValidationError

from server.settings import ServerSettings

log = logging.getLogger("server")


class StartupError(Exception):
    """A reason the server cannot start; printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m server",
        description="Person re-ID search server: HTTP (OpenAPI at /docs) and gRPC.",
    )
    add = p.add_argument
    add("--model", help="export directory with manifest.json (env REID_MODEL)")
    add("--gallery", help="gallery directory, created if missing (env REID_GALLERY)")
    add("--host", help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    add("--http-port", type=int, help="HTTP port (default 8000; 0 = any free port)")
    add("--grpc-port", type=int, help="gRPC port (default 50051; 0 = any free port)")
    add("--no-grpc", dest="grpc", action="store_false", default=None, help="HTTP only")
    add("--runtime", choices=["onnxruntime", "tensorrt", "torch"], help="default onnxruntime")
    add("--device", choices=["auto", "cpu", "cuda"], help="default auto (cuda when present)")
    add("--threads", type=int, help="runtime intra-op threads")
    add("--index", choices=["auto", "flat", "ivf", "hnsw"], help="gallery index kind")
    add("--api-key", help="key required for writes (env REID_API_KEY)")
    add("--read-key", help="key required for reads (env REID_READ_KEY; default: open)")
    add("--max-batch", type=int, help="micro-batch size in images (default 32)")
    add("--max-wait-ms", type=float, help="micro-batch wait in ms (default 2)")
    add("--no-batching", dest="batching", action="store_false", default=None)
    add(
        "--workers",
        type=int,
        help="runtime calls in flight at once (default 1; e.g. CPU cores / --threads)",
    )
    add("--max-images", type=int, help="images per request (default 32)")
    add("--max-body-mb", type=float, help="request body limit in MiB (default 32)")
    add("--max-pixels", type=int, help="pixels per image (default 4096*4096)")
    add("--max-k", type=int, help="largest k (default 1000)")
    add("--log-level", choices=["debug", "info", "warning", "error"])
    return p


def settings_from_args(argv: Sequence[str] | None = None) -> ServerSettings:
    """Environment settings with the given flags on top."""
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    return ServerSettings(**overrides)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket, or ``StartupError`` naming the busy address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only for that proto
    # (with proto 0, Nagle + delayed ACK add ~40 ms to every small response).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port} for HTTP: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def load_service(settings: ServerSettings) -> object:
    """The SearchService, with loading failures turned into ``StartupError``."""
    from gallery import GalleryError
    from reid.manifest import ManifestError
    from reid.runtimes import RuntimeUnavailableError
    from server.service import build_service

    if settings.model is None:
        raise StartupError("no model: pass --model EXPORT_DIR (or set REID_MODEL)")
    if settings.gallery is None:
        raise StartupError("no gallery: pass --gallery GALLERY_DIR (or set REID_GALLERY)")
    try:
        return build_service(settings)
    except (ManifestError, RuntimeUnavailableError, GalleryError) as exc:
        raise StartupError(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise StartupError(f"cannot load the model or gallery: {exc}") from None


async def _start_grpc(service: object, settings: ServerSettings) -> object | None:
    if not settings.grpc:
        log.info("gRPC disabled (--no-grpc)")
        return None
    if importlib.util.find_spec("server.grpc_api.server") is None:
        log.info("gRPC front end not installed (server/grpc_api/server.py); HTTP only")
        return None
    from server.grpc_api import server as grpc_server

    try:
        if hasattr(grpc_server, "launch_grpc_server"):
            return await grpc_server.launch_grpc_server(service, settings)
        return await grpc_server.start_grpc_server(service, settings)
    except OSError as exc:
        raise StartupError(f"cannot start gRPC on port {settings.grpc_port}: {exc}") from None


class _UvicornServer(uvicorn.Server):
    """Signals stay with ``serve``: uvicorn would re-raise them and skip our cleanup."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: ServerSettings) -> None:
    """Run until SIGINT/SIGTERM, then drain the batcher and close the gallery."""
    from server.http import create_app

    sock = bind_socket(settings.host, settings.http_port)  # fail fast on a busy port
    service = await asyncio.to_thread(load_service, settings)
    grpc = None
    try:
        await service.start()
        grpc = await _start_grpc(service, settings)
        app = create_app(settings, service, own_service=False)
        config = uvicorn.Config(
            app, log_level=settings.log_level, access_log=False, timeout_graceful_shutdown=10
        )
        server = _UvicornServer(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.handle_exit, sig, None)
        port = sock.getsockname()[1]
        grpc_port = getattr(grpc, "port", settings.grpc_port) if grpc is not None else None
        log.info(
            "serving HTTP on http://%s:%d (docs /docs, metrics /metrics)%s",
            settings.host,
            port,
            f", gRPC on {settings.host}:{grpc_port}" if grpc is not None else "",
        )
        info = service.model_info()
        log.info(
            "ready: model %s (%s on %s), gallery %s with %d entries, batching %s",
            info["model"]["name"],
            info["runtime"].get("runtime"),
            info["runtime"].get("device"),
            settings.gallery,
            service.gallery_size(),
            "on" if settings.batching else "off",
        )
        await server.serve(sockets=[sock])
    finally:
        log.info("shutting down: draining requests and closing the gallery")
        if grpc is not None:
            await grpc.stop(5)
        await service.close()
        log.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, serve, and return the exit code."""
    try:
        settings = settings_from_args(argv)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"error: bad setting: {errors}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faiss").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
