"""The runtime contract and the name -> class table."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from reid.manifest import ExportManifest, ManifestError, load_manifest

# name -> "module:Class"; imported lazily so onnxruntime/tensorrt/torch load on use.
RUNTIMES: dict[str, str] = {
    "onnxruntime": "reid.runtimes.onnx:OnnxRuntime",
    "tensorrt": "reid.runtimes.tensorrt:TensorRTRuntime",
    "torch": "reid.runtimes.torch_export:TorchRuntime",
}


class RuntimeUnavailableError(RuntimeError):
    """The runtime or device cannot be used here (library missing, no GPU, no model file)."""


class Runtime(ABC):
    """Embeds preprocessed batches with one exported model.

    Attributes set by subclasses: ``name`` (key in :data:`RUNTIMES`), ``device``
    (``"cpu"`` or ``"cuda"``), ``manifest``. ``max_batch`` is the largest batch one
    call accepts (the server splits bigger ones).
    """

    name: str = ""
    concurrent_calls: bool = True
    """Whether ``embed`` may run from several threads at once (the server's workers)."""

    def __init__(self, manifest: ExportManifest, device: str = "cpu") -> None:
        self.manifest = manifest
        self.device = device

    @property
    def embedding_dim(self) -> int:
        return self.manifest.embedding_dim

    @property
    def max_batch(self) -> int:
        return int(self.manifest.batch.get("max", 256))

    def embed(self, images: np.ndarray) -> np.ndarray:
        """``float32[N, 3, H, W]`` (preprocessed, see ``reid.preprocess``) -> ``float32[N, D]``.

        Raises ``ValueError`` for a wrong shape; batches over ``max_batch`` are
        split here, so callers may pass any N >= 1.
        """
        images = np.ascontiguousarray(images, dtype=np.float32)
        expected = tuple(self.manifest.input_shape[1:])
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"expected images float32[N, {', '.join(map(str, expected))}], "
                f"got shape {list(images.shape)}"
            )
        if len(images) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        step = max(1, self.max_batch)
        parts = [self._embed(images[i : i + step]) for i in range(0, len(images), step)]
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return np.ascontiguousarray(out, dtype=np.float32)

    @abstractmethod
    def _embed(self, images: np.ndarray) -> np.ndarray:
        """Embed one batch of at most ``max_batch`` images."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device memory / sessions (optional)."""

    def describe(self) -> dict[str, object]:
        """What /health and logs show: runtime, device, model, dim, input size."""
        return {
            "runtime": self.name,
            "device": self.device,
            "model": self.manifest.model_name,
            "embedding_dim": self.embedding_dim,
            "input_size": [self.manifest.preprocess.height, self.manifest.preprocess.width],
        }


def model_file(manifest: ExportManifest, fmt: str) -> Path:
    """Path of the export's ``fmt`` model; :class:`RuntimeUnavailableError` when absent."""
    try:
        return manifest.path_of(fmt)
    except ManifestError as exc:
        raise RuntimeUnavailableError(str(exc)) from None


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a CUDA GPU is visible, else ``"cpu"``.

    ``"cuda"`` without a GPU raises :class:`RuntimeUnavailableError`.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu":
        return "cpu"
    has_cuda = _cuda_available()
    if device == "cuda" and not has_cuda:
        raise RuntimeUnavailableError("device cuda was asked for but no CUDA GPU is visible")
    return "cuda" if has_cuda else "cpu"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return False
    return bool(torch.cuda.is_available())


def load_runtime(
    export_dir: str | Path | ExportManifest,
    runtime: str = "onnxruntime",
    device: str = "auto",
    **options: object,
) -> Runtime:
    """Open the exported model in ``export_dir`` with the named runtime.

    ``options`` go to the runtime class (e.g. ``threads`` for onnxruntime).
    Raises ``ManifestError`` for a bad export and :class:`RuntimeUnavailableError` when
    the runtime's library, the device or the model file is missing.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    manifest = export_dir if isinstance(export_dir, ExportManifest) else load_manifest(export_dir)
    module_name, class_name = RUNTIMES[runtime].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(manifest, device=resolve_device(device), **options)
