"""TensorRT 10 runtime: a serialized engine (``model.engine``) run with torch CUDA buffers.

Input and output buffers are torch CUDA tensors; the engine runs with
``execute_async_v3`` on a dedicated torch CUDA stream. The batch axis is dynamic
within the engine's optimisation profile (min/opt/max); smaller batches are padded
to the profile's minimum, larger ones split by :meth:`Runtime.embed`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from reid.manifest import ExportManifest
from reid.runtimes.base import Runtime, RuntimeUnavailableError, model_file

log = logging.getLogger(__name__)

GPU_EXTRA = "pip install -e '.[gpu]'"


def import_tensorrt() -> Any:
    """``tensorrt`` (>= 10), or :class:`RuntimeUnavailableError` naming the ``gpu`` extra."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"the tensorrt runtime needs the TensorRT Python package ({exc}); install the gpu "
            f"extra on a machine with an NVIDIA GPU: {GPU_EXTRA}"
        ) from None
    if int(str(trt.__version__).split(".")[0]) < 10:
        raise RuntimeUnavailableError(
            f"tensorrt {trt.__version__} is too old (need >= 10): {GPU_EXTRA}"
        )
    return trt


class TensorRTRuntime(Runtime):
    """Runs ``model.engine`` built by ``python -m export --format tensorrt`` (cuda only).

    ``threads`` is accepted for a uniform interface and has no effect (the GPU computes).
    """

    name = "tensorrt"
    concurrent_calls = False  # one execution context and one set of bindings

    def __init__(
        self, manifest: ExportManifest, device: str = "cuda", *, threads: int | None = None
    ) -> None:
        super().__init__(manifest, device)
        trt = import_tensorrt()
        import torch

        if device != "cuda" or not torch.cuda.is_available():
            raise RuntimeUnavailableError("the tensorrt runtime needs device cuda and a CUDA GPU")
        path = model_file(manifest, "tensorrt")
        self._torch = torch
        self._logger = trt.Logger(trt.Logger.WARNING)  # must outlive the engine
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeUnavailableError(
                f"{path}: TensorRT could not deserialize the engine (built with another "
                "TensorRT version or GPU? re-export on this machine)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise RuntimeUnavailableError(f"{path}: expected one input and one output, got {names}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        low, _, high = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.batch_min, self.batch_max = int(low[0]), int(high[0])
        self._output_dtype = _torch_dtype(
            torch, trt.nptype(self.engine.get_tensor_dtype(self.output_name))
        )
        self._input_dtype = _torch_dtype(
            torch, trt.nptype(self.engine.get_tensor_dtype(self.input_name))
        )
        self._stream = torch.cuda.Stream()
        self._lock = threading.Lock()  # one execution context: one call at a time

    @property
    def max_batch(self) -> int:
        return min(self.batch_max, int(self.manifest.batch.get("max", self.batch_max)))

    def _embed(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        count = len(images)
        if count < self.batch_min:  # pad up to the profile's minimum batch
            pad = np.zeros((self.batch_min - count, *images.shape[1:]), dtype=images.dtype)
            images = np.concatenate([images, pad])
        with self._lock, torch.cuda.stream(self._stream):
            batch = torch.from_numpy(np.ascontiguousarray(images)).to(
                "cuda", dtype=self._input_dtype, non_blocking=False
            )
            self.context.set_input_shape(self.input_name, tuple(batch.shape))
            shape = tuple(self.context.get_tensor_shape(self.output_name))
            out = torch.empty(shape, dtype=self._output_dtype, device="cuda")
            self.context.set_tensor_address(self.input_name, int(batch.data_ptr()))
            self.context.set_tensor_address(self.output_name, int(out.data_ptr()))
            if not self.context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            self._stream.synchronize()
            result = out.float().cpu().numpy()
        return result[:count]

    def describe(self) -> dict[str, object]:
        precision = self.manifest.precision.get("tensorrt", "unknown")
        return {**super().describe(), "precision": precision, "batch_max": self.batch_max}

    def close(self) -> None:
        self.context = None
        self.engine = None


def _torch_dtype(torch: Any, np_dtype: Any) -> Any:
    return torch.from_numpy(np.zeros(1, dtype=np_dtype)).dtype
