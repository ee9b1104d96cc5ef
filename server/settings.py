"""Server settings: environment variables ``REID_*``, overridden by CLI flags.

``ServerSettings`` is the one table of settings: ``server.cli`` generates a flag for
every field from it (``max_batch`` -> ``--max-batch``, booleans ``--grpc`` /
``--no-grpc``), with the field's description as its help.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseSettings):
    """Every knob of ``python -m server``; env ``REID_<NAME>`` (e.g. ``REID_API_KEY``)."""

    model_config = SettingsConfigDict(env_prefix="REID_", extra="ignore")

    # What to serve.
    model: Path | None = Field(None, description="export directory with manifest.json")
    gallery: Path | None = Field(None, description="gallery directory, created if missing")
    runtime: Literal["onnxruntime", "tensorrt", "torch"] = Field(
        "onnxruntime", description="inference runtime"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: cuda when a GPU is visible"
    )
    threads: int | None = Field(None, ge=1, description="runtime intra-op threads")
    index: Literal["auto", "flat", "ivf", "hnsw"] = Field("auto", description="gallery index kind")

    # Where.
    host: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0 for all)")
    http_port: int = Field(8000, ge=0, le=65535, description="HTTP port (0 = any free port)")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port (0 = any free port)")
    grpc: bool = Field(True, description="serve gRPC too (--no-grpc: HTTP only)")

    # Auth: writes need api_key when set; reads need read_key (or api_key) when set.
    api_key: SecretStr | None = Field(None, description="key required for writes")
    read_key: SecretStr | None = Field(
        None, description="key required for reads (unset: open; the write key works too)"
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
    max_k: int = Field(1000, ge=1, description="largest k")
    max_full_ranking: int | None = Field(
        None, ge=1, description="cap on matches per query for a full ranking (unset: all)"
    )
    thumbnail_height: int = Field(128, ge=8, description="thumbnail height in pixels")
    expose_export_dir: bool = Field(
        False, description="report the served export directory in GET /v1/model"
    )

    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["text", "json"] = Field(
        "text", description="log lines as text, or one JSON object a line"
    )
    access_log: bool = Field(
        True, description="one log line per HTTP request (--no-access-log: none)"
    )

    @model_validator(mode="after")
    def _empty_keys_mean_none(self) -> ServerSettings:
        if self.api_key is not None and not self.api_key.get_secret_value():
            self.api_key = None
        if self.read_key is not None and not self.read_key.get_secret_value():
            self.read_key = None
        return self

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
                "max_k": self.max_k,
                "max_full_ranking": self.max_full_ranking,
            },
            "auth": {
                "writes_need_key": self.api_key is not None,
                "reads_need_key": self.read_key is not None,
            },
        }
