"""Server settings: environment variables ``REID_*``, overridden by CLI flags.

``ServerSettings`` is the one table of settings: ``server.cli`` generates a flag for
every field from it (``max_batch`` -> ``--max-batch``, booleans ``--grpc`` /
``--no-grpc``), with the field's description as its help.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseSettings):
    """Every knob of ``python -m server``; env ``REID_<NAME>`` (e.g. ``REID_API_KEY``)."""

    model_config = SettingsConfigDict(env_prefix="REID_", extra="ignore")

    # What to serve.
    model: Path | None = Field(None, description="export directory with manifest.json")
    gallery: Path | str | None = Field(
        None,
        description="gallery directory, created if missing, or milvus://HOST:PORT/COLLECTION "
        "(a Milvus collection several servers share)",
    )
    thumbnail_dir: Path | None = Field(
        None,
        description="where a milvus:// gallery keeps thumbnails: a directory every server "
        "sharing the collection reads and writes (required with milvus://)",
    )
    runtime: Literal["onnxruntime", "tensorrt", "torch"] = Field(
        "onnxruntime", description="inference runtime"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: cuda when a GPU is visible"
    )
    threads: int | None = Field(None, ge=1, description="runtime intra-op threads")
    index: Literal["auto", "flat", "ivf", "ivf_sq8", "hnsw"] = Field(
        "auto", description="gallery index kind"
    )

    # Where.
    host: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0 for all)")
    http_port: int = Field(8000, ge=0, le=65535, description="HTTP port (0 = any free port)")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port (0 = any free port)")
    grpc: bool = Field(True, description="serve gRPC too (--no-grpc: HTTP only)")
    loop: Literal["asyncio", "uvloop"] = Field(
        "asyncio", description="event loop of HTTP and gRPC (uvloop: pip install uvloop)"
    )

    # Auth: writes need api_key when set; reads need read_key (or api_key) when set.
    # Writes are never less protected than reads (see ``writes_need_key``).
    api_key: SecretStr | None = Field(None, description="key required for writes")
    read_key: SecretStr | None = Field(
        None, description="key required for reads (unset: open; the write key works too)"
    )
    allow_anonymous_writes: bool = Field(
        False,
        description="let writes through without a key although --read-key protects reads "
        "(or --api-key is empty); refused at start-up otherwise",
    )

    # Dynamic micro-batching.
    batching: bool = Field(True, description="micro-batching (--no-batching: one call a request)")
    max_batch: int = Field(32, ge=1, description="micro-batch size in images")
    max_wait_ms: float = Field(2.0, ge=0, description="micro-batch wait in ms")
    workers: int = Field(
        1, ge=1, le=64, description="runtime calls in flight at once (e.g. CPU cores / --threads)"
    )
    max_queue: int = Field(4096, ge=1, description="queued images before requests get 503")

    # Request limits.
    max_images: int = Field(32, ge=1, description="images per request")
    max_body_mb: float = Field(32.0, gt=0, description="request body limit in MiB")
    max_pixels: int = Field(4096 * 4096, ge=1, description="pixels per image")
    max_request_pixels: int = Field(
        64 * 1024 * 1024, ge=1, description="pixels of all the images of one request together"
    )
    decode_workers: int = Field(
        2, ge=1, le=64, description="images decoded at once, all requests together (memory bound)"
    )
    max_k: int = Field(1000, ge=1, description="largest k")
    max_full_ranking: int | None = Field(
        None, ge=1, description="cap on matches per query for a full ranking (unset: all)"
    )
    thumbnail_height: int = Field(128, ge=8, description="thumbnail height in pixels")
    expose_export_dir: bool = Field(
        False, description="report the served export directory in GET /v1/model"
    )

    # Slow or stalled clients (HTTP).
    header_timeout_s: float = Field(
        10.0, gt=0, description="seconds a connection may take to send a request's headers"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="longest pause in seconds while a request body is being sent"
    )
    max_connections: int = Field(
        1000, ge=1, description="HTTP connections and requests at once; more get 503"
    )
    grpc_max_concurrent_rpcs: int = Field(
        1000, ge=1, description="gRPC calls at once; more get RESOURCE_EXHAUSTED"
    )

    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["text", "json"] = Field(
        "text", description="log lines as text, or one JSON object a line"
    )
    access_log: bool = Field(
        True, description="one log line per HTTP request (--no-access-log: none)"
    )

    _empty_keys: frozenset[str] = PrivateAttr(frozenset())

    @field_validator("gallery", mode="before")
    @classmethod
    def _gallery_location(cls, value: object) -> object:
        """A ``milvus://`` URL stays text (a Path would fold its ``//``); the rest is a Path."""
        if isinstance(value, str) and not value.startswith("milvus://"):
            return Path(value)
        return value

    @model_validator(mode="after")
    def _empty_keys_mean_none(self) -> ServerSettings:
        """An empty key is no key; which ones were given empty is kept, since start-up
        refuses them (``auth_problems``) rather than silently turning auth off."""
        empty = set()
        for name in ("api_key", "read_key"):
            value = getattr(self, name)
            if value is not None and not value.get_secret_value():
                setattr(self, name, None)
                empty.add(name)
        self._empty_keys = frozenset(empty)
        return self

    @property
    def writes_need_key(self) -> bool:
        """Writes need a key: the API key, or the read key when only that one is set
        (writes are never less protected than reads, unless ``allow_anonymous_writes``)."""
        if self.api_key is not None:
            return True
        return self.read_key is not None and not self.allow_anonymous_writes

    @property
    def reads_need_key(self) -> bool:
        return self.read_key is not None

    def auth_problems(self) -> list[str]:
        """Why these keys must not be served as they are (empty when they may)."""
        problems = []
        if "api_key" in self._empty_keys and not self.allow_anonymous_writes:
            problems.append(
                "the API key is empty (--api-key '' or REID_API_KEY=''), which would leave "
                "writes open: give a key, unset it, or pass --allow-anonymous-writes"
            )
        if "read_key" in self._empty_keys:
            problems.append(
                "the read key is empty (--read-key '' or REID_READ_KEY=''): give a key, or "
                "unset it to leave reads open"
            )
        if self.read_key is not None and self.api_key is None and not self.allow_anonymous_writes:
            problems.append(
                "--read-key without --api-key would let anyone write while reads need a key: "
                "set --api-key (REID_API_KEY) too, or pass --allow-anonymous-writes"
            )
        return problems

    def auth_mode(self) -> str:
        """The effective auth mode in words (logged at start-up)."""
        if self.reads_need_key:
            reads = "reads need the read key (or the API key)"
        else:
            reads = "reads are open"
        if self.api_key is not None:
            writes = "writes need the API key"
        elif self.writes_need_key:
            writes = "writes need the read key (no API key set)"
        elif self.allow_anonymous_writes:
            writes = "writes are anonymous (--allow-anonymous-writes)"
        else:
            writes = "writes are open (no keys set: anyone who can connect can edit the gallery)"
        return f"{reads}; {writes}"

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def public_summary(self) -> dict[str, object]:
        """Settings safe to show to clients (no keys)."""
        return {
            "batching": {
                "enabled": self.batching,
                "max_batch": self.max_batch,
                "max_wait_ms": self.max_wait_ms,
                "workers": self.workers,
            },
            "limits": {
                "max_images": self.max_images,
                "max_body_mb": self.max_body_mb,
                "max_pixels": self.max_pixels,
                "max_request_pixels": self.max_request_pixels,
                "max_k": self.max_k,
                "max_full_ranking": self.max_full_ranking,
            },
            "auth": {
                "writes_need_key": self.writes_need_key,
                "reads_need_key": self.reads_need_key,
            },
        }
