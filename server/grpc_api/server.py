"""Start the grpc.aio server: the ReID service, the standard health service and reflection."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from reid_client.proto import reid_pb2
from server.grpc_api.servicer import ReIDServicer, add_servicer_to_server

if TYPE_CHECKING:
    from server.service import SearchService

log = logging.getLogger("server.grpc")

SERVICE_NAME = reid_pb2.DESCRIPTOR.services_by_name["ReIDService"].full_name
"""``reid.v1.ReIDService``: the name clients use in health checks and reflection."""

DEFAULT_MAX_MESSAGE_MB = 64.0
HEALTH_POLL_S = 1.0
"""How often the health status is refreshed from ``service.is_ready()``."""

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def max_message_bytes(settings: Any) -> int:
    """Largest gRPC message (both ways): ``grpc_max_message_mb``, else ``max_body_mb`` + 1 MiB.

    The extra MiB leaves room for the framing and metadata around a maximal set of images.
    """
    megabytes = getattr(settings, "grpc_max_message_mb", None)
    if megabytes is None:
        body = getattr(settings, "max_body_mb", None)
        megabytes = DEFAULT_MAX_MESSAGE_MB if body is None else float(body) + 1.0
    return int(float(megabytes) * 1024 * 1024)


def format_address(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 host."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


@dataclass(frozen=True)
class GrpcServer:
    """A started server and where it listens (``port`` is the bound one, never 0)."""

    server: grpc.aio.Server
    host: str
    port: int
    health: health.aio.HealthServicer

    @property
    def target(self) -> str:
        """Address a client can dial (``host:port``)."""
        return format_address(self.host, self.port)

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, then stop, letting running calls finish for ``grace`` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def _set_health(servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = _SERVING if serving else _NOT_SERVING
    for name in ("", SERVICE_NAME):
        await servicer.set(name, status)


async def _track_readiness(
    server: grpc.aio.Server,
    servicer: health.aio.HealthServicer,
    service: SearchService,
    interval: float,
) -> None:
    """Mirror ``service.is_ready()`` into the health service until the server stops."""
    last = None
    while True:
        try:
            ready = bool(service.is_ready())
        except Exception:
            log.exception("is_ready() failed; reporting NOT_SERVING")
            ready = False
        if ready != last:
            await _set_health(servicer, ready)
            log.info("gRPC health: %s", "SERVING" if ready else "NOT_SERVING")
            last = ready
        if not await server.wait_for_termination(interval):
            return  # the server stopped


async def launch_grpc_server(
    service: SearchService,
    settings: Any = None,
    *,
    host: str | None = None,
    port: int | None = None,
    health_interval: float = HEALTH_POLL_S,
) -> GrpcServer:
    """Build, bind and start the server; ``host``/``port`` override the settings.

    ``settings`` is anything with ``host`` and ``grpc_port`` (and optionally
    ``grpc_max_message_mb`` or ``max_body_mb``, ``header_timeout_s`` (the connection
    handshake deadline) and ``grpc_max_concurrent_rpcs``). Port 0 binds a free port; the
    returned ``GrpcServer.port`` says which.
    """
    host = host if host is not None else getattr(settings, "host", "127.0.0.1")
    port = port if port is not None else getattr(settings, "grpc_port", 50051)
    limit = max_message_bytes(settings)
    handshake_ms = int(1000 * getattr(settings, "header_timeout_s", 10.0))
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # No SO_REUSEPORT: a second server on a busy port fails to bind, as HTTP does,
            # instead of silently taking a share of the calls.
            ("grpc.so_reuseport", 0),
            # A connection that does not complete its HTTP/2 preface and settings in time
            # (stalled or partial) is closed, as HTTP's header timeout does.
            ("grpc.server_handshake_timeout_ms", max(1, handshake_ms)),
        ],
        maximum_concurrent_rpcs=getattr(settings, "grpc_max_concurrent_rpcs", None),
    )
    add_servicer_to_server(ReIDServicer(service), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    address = format_address(host, port)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"cannot bind the gRPC server to {address}: {error}") from None
    if bound == 0:
        raise OSError(f"cannot bind the gRPC server to {address}")
    await _set_health(health_servicer, bool(service.is_ready()))
    await server.start()
    watcher = asyncio.create_task(
        _track_readiness(server, health_servicer, service, health_interval),
        name="grpc-health-readiness",
    )
    _keep_alive(watcher)
    log.info("gRPC server listening on %s", format_address(host, bound))
    return GrpcServer(server=server, host=host, port=bound, health=health_servicer)


_background: set[asyncio.Task[None]] = set()


def _keep_alive(task: asyncio.Task[None]) -> None:
    """Hold a reference to a background task until it ends (asyncio keeps only weak ones)."""
    _background.add(task)
    task.add_done_callback(_background.discard)


async def start_grpc_server(
    service: SearchService,
    settings: Any = None,
    *,
    host: str | None = None,
    port: int | None = None,
) -> grpc.aio.Server:
    """Started server on ``settings.host:settings.grpc_port``; stop it with ``await .stop(grace)``.

    Use ``launch_grpc_server`` to learn the bound port (e.g. after asking for port 0).
    """
    return (await launch_grpc_server(service, settings, host=host, port=port)).server
