"""The export manifest: everything a runtime needs to embed images with a model.

``python -m export`` writes ``DIR/manifest.json`` next to the exported files; the
server, gallery ingestion and evaluation read only this file (never the training
checkpoint or config) to preprocess and run the model::

    {
      "format": "reid-export-manifest", "version": 1,
      "model":  {"name", "method", "build_spec", "embedding_dim", "normalized"},
      "input":  {"name": "images", "shape": [-1, 3, H, W], "dtype": "float32",
                 "layout": "NCHW"},
      "output": {"name": "embeddings", "shape": [-1, D], "dtype": "float32"},
      "preprocess": {height, width, mean, std, interpolation, color_order, layout},
      "files":  {"onnx": "model.onnx", "tensorrt": "model.engine", "torch": "model.pt2"},
      "opset": 18,
      "precision": {"onnx": "fp32", "tensorrt": "fp16"},
      "batch":  {"min": 1, "opt": 32, "max": 256},
      "source": {"checkpoint", "sha256", "epoch", "metrics"},
      "tools":  {"torch", "onnx", "onnxruntime", "tensorrt", ...},
      "parity": {...},   # the parity gate's report (see export.parity)
      "created": "2026-11-21T12:00:00+00:00"
    }

Only ``files`` entries that exist were exported. Paths in ``files`` are relative
to the manifest's directory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reid.preprocess import PreprocessConfig

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "reid-export-manifest"
MANIFEST_VERSION = 1
FAILED_MARKER = "FAILED"
FORMATS = ("onnx", "tensorrt", "torch")


class ManifestError(ValueError):
    """A manifest is missing, unreadable or inconsistent; the message says which and why."""


@dataclass
class ExportManifest:
    """In-memory form of ``manifest.json`` (see the module docstring for the layout)."""

    model_name: str
    embedding_dim: int
    preprocess: PreprocessConfig
    files: dict[str, str]
    method: str | None = None
    build_spec: dict[str, Any] = field(default_factory=dict)
    normalized: bool = True
    input_name: str = "images"
    output_name: str = "embeddings"
    opset: int | None = None
    precision: dict[str, str] = field(default_factory=dict)
    batch: dict[str, int] = field(default_factory=lambda: {"min": 1, "opt": 32, "max": 256})
    source: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    directory: Path | None = None  # where it was read from / written to (not serialised)

    @property
    def input_shape(self) -> list[int]:
        """``[-1, 3, H, W]`` (batch axis dynamic)."""
        return [-1, 3, self.preprocess.height, self.preprocess.width]

    def path_of(self, fmt: str) -> Path:
        """Absolute path of the exported ``fmt`` file; ``ManifestError`` if not exported."""
        if fmt not in FORMATS:
            raise ManifestError(f"unknown model format {fmt!r}; expected one of {FORMATS}")
        if fmt not in self.files:
            raise ManifestError(
                f"this export has no {fmt} model (it has: {', '.join(self.files) or 'none'}); "
                f"re-export with --format {fmt}"
            )
        base = self.directory if self.directory is not None else Path(".")
        path = base / self.files[fmt]
        if not path.is_file():
            raise ManifestError(f"{path}: listed in the manifest but missing")
        return path

    def to_dict(self) -> dict[str, Any]:
        height, width = self.preprocess.height, self.preprocess.width
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "model": {
                "name": self.model_name,
                "method": self.method,
                "build_spec": self.build_spec,
                "embedding_dim": self.embedding_dim,
                "normalized": self.normalized,
            },
            "input": {
                "name": self.input_name,
                "shape": [-1, 3, height, width],
                "dtype": "float32",
                "layout": self.preprocess.layout,
            },
            "output": {
                "name": self.output_name,
                "shape": [-1, self.embedding_dim],
                "dtype": "float32",
            },
            "preprocess": self.preprocess.to_dict(),
            "files": dict(self.files),
            "opset": self.opset,
            "precision": dict(self.precision),
            "batch": dict(self.batch),
            "source": dict(self.source),
            "tools": dict(self.tools),
            "parity": dict(self.parity),
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "manifest") -> ExportManifest:
        """Validate and parse; ``ManifestError`` naming ``source`` and the bad field."""
        if not isinstance(data, Mapping) or data.get("format") != MANIFEST_FORMAT:
            raise ManifestError(
                f"{source} is not a reid export manifest (no format {MANIFEST_FORMAT!r}; "
                "write one with python -m export)"
            )
        version = data.get("version")
        if not isinstance(version, int) or version > MANIFEST_VERSION:
            raise ManifestError(f"{source}: manifest version {version!r} is not supported")
        try:
            model, inp, out = data["model"], data["input"], data["output"]
            preprocess = PreprocessConfig.from_dict(data["preprocess"])
            dim = int(model["embedding_dim"])
            files = {str(k): str(v) for k, v in dict(data["files"]).items()}
            manifest = cls(
                model_name=str(model["name"]),
                method=model.get("method"),
                build_spec=dict(model.get("build_spec") or {}),
                embedding_dim=dim,
                normalized=bool(model.get("normalized", True)),
                preprocess=preprocess,
                files=files,
                input_name=str(inp.get("name", "images")),
                output_name=str(out.get("name", "embeddings")),
                opset=data.get("opset"),
                precision=dict(data.get("precision") or {}),
                batch={k: int(v) for k, v in dict(data.get("batch") or {}).items()}
                or {"min": 1, "opt": 32, "max": 256},
                source=dict(data.get("source") or {}),
                tools=dict(data.get("tools") or {}),
                parity=dict(data.get("parity") or {}),
                created=str(data.get("created", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(
                f"{source}: malformed manifest ({type(exc).__name__}: {exc})"
            ) from None
        if dim <= 0:
            raise ManifestError(f"{source}: embedding_dim must be positive, got {dim}")
        shape = list(inp.get("shape", []))
        if len(shape) == 4 and shape[2:] != [preprocess.height, preprocess.width]:
            raise ManifestError(
                f"{source}: input shape {shape} disagrees with preprocess size "
                f"{preprocess.height}x{preprocess.width}"
            )
        unknown = sorted(set(files) - set(FORMATS))
        if unknown:
            raise ManifestError(f"{source}: unknown model formats in files: {unknown}")
        return manifest


def manifest_path(path: str | Path) -> Path:
    """``path`` itself if it is a file, else ``path/manifest.json``."""
    path = Path(path).expanduser()
    return path if path.suffix == ".json" else path / MANIFEST_NAME


def load_manifest(path: str | Path, *, allow_failed: bool = False) -> ExportManifest:
    """Read ``DIR/manifest.json`` (or a manifest file path) with a clear error if bad.

    An export whose parity gate failed carries a ``FAILED`` marker file; loading it
    raises unless ``allow_failed`` (``python -m export verify`` re-checks such exports).
    """
    file = manifest_path(path)
    if not file.is_file():
        raise ManifestError(
            f"{file}: no export manifest here (export a model with python -m export "
            "--checkpoint CKPT --out DIR, then point at DIR)"
        )
    if (file.parent / FAILED_MARKER).exists() and not allow_failed:
        reason = (file.parent / FAILED_MARKER).read_text(errors="replace").strip()
        raise ManifestError(
            f"{file.parent}: this export failed its parity gate and must not be served"
            + (f" ({reason.splitlines()[0]})" if reason else "")
        )
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{file}: cannot read manifest ({exc})") from None
    manifest = ExportManifest.from_dict(data, source=str(file))
    manifest.directory = file.parent
    return manifest


def save_manifest(manifest: ExportManifest, directory: str | Path) -> Path:
    """Write ``directory/manifest.json`` atomically (temp file + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    file = directory / MANIFEST_NAME
    tmp = file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n")
    tmp.replace(file)
    manifest.directory = directory
    return file
