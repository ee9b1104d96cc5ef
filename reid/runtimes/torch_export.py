"""PyTorch runtime for a ``torch.export`` program (``model.pt2``): no model code needed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from reid.manifest import ExportManifest
from reid.runtimes.base import Runtime, RuntimeUnavailableError, model_file


class TorchRuntime(Runtime):
    """Runs ``model.pt2`` (``torch.export.load(...).module()``) in FP32 on cpu or cuda.

    Options: ``tf32`` (default False) allows TF32 matmuls/convolutions on cuda;
    ``threads`` sets torch's intra-op threads on cpu (process-wide: torch has one pool).
    """

    name = "torch"

    def __init__(
        self,
        manifest: ExportManifest,
        device: str = "cpu",
        *,
        tf32: bool = False,
        threads: int | None = None,
    ) -> None:
        super().__init__(manifest, device)
        self.tf32 = bool(tf32)
        import torch

        if threads and device == "cpu":
            torch.set_num_threads(int(threads))

        path = model_file(manifest, "torch")
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # corrupt or incompatible archive
            raise RuntimeUnavailableError(
                f"{path}: cannot load torch.export program ({exc})"
            ) from None
        self._torch = torch
        self.module = program.module().to(device)

    def _embed(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.device)
        with torch.inference_mode(), _tf32(torch, self.tf32):
            out = self.module(batch)
        return out.float().cpu().numpy()

    def close(self) -> None:
        self.module = None


@contextlib.contextmanager
def _tf32(torch: Any, allowed: bool) -> Iterator[None]:
    """Set TF32 use on CUDA for the duration of a call (exact FP32 unless ``allowed``)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
