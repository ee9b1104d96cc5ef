"""ONNX -> TensorRT engine (TensorRT 10 Python API).

One optimisation profile covers the dynamic batch axis (min/opt/max), FP16 and
INT8 are builder flags, INT8 scales come from an entropy calibrator
(``IInt8EntropyCalibrator2``) fed with dataset images prepared by
``reid.preprocess``, and a timing cache makes rebuilds fast. ``tensorrt`` (and a
CUDA build of torch, whose tensors serve as device buffers) are imported only here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import ExportError, TensorRTUnavailableError
from export.images import read_batch
from reid.data import ImageRecord
from reid.preprocess import PreprocessConfig

log = logging.getLogger(__name__)


def require_tensorrt() -> Any:
    """Import ``tensorrt`` (>= 10) or raise :class:`TensorRTUnavailableError` naming the extra."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailableError(str(exc)) from None
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise TensorRTUnavailableError(f"found tensorrt {trt.__version__}, need >= 10")
    return trt


@dataclass(frozen=True)
class EngineOptions:
    """How to build the engine."""

    input_name: str
    input_size: tuple[int, int]
    batch_min: int = 1
    batch_opt: int = 32
    batch_max: int = 256
    fp16: bool = False
    int8: bool = False
    workspace_gb: float = 4.0
    timing_cache: Path | None = None
    calibration_cache: Path | None = None

    def shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, 3, *self.input_size)

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"


class _TrtLogger:
    """A ``trt.ILogger`` forwarding to :mod:`logging` (built lazily, needs tensorrt)."""

    @staticmethod
    def create(trt: Any) -> Any:
        class Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                levels = {
                    trt.ILogger.INTERNAL_ERROR: logging.ERROR,
                    trt.ILogger.ERROR: logging.ERROR,
                    trt.ILogger.WARNING: logging.WARNING,
                    trt.ILogger.INFO: logging.DEBUG,
                }
                log.log(levels.get(severity, logging.DEBUG), "TensorRT: %s", msg)

        return Logger()


def make_calibrator(
    trt: Any,
    records: Sequence[ImageRecord],
    config: PreprocessConfig,
    batch_size: int,
    cache_file: Path | None,
) -> Any:
    """An ``IInt8EntropyCalibrator2`` over ``records`` (read and preprocessed lazily)."""
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.records = list(records)
            self.batch_size = int(batch_size)
            self.position = 0
            self.device_batch = torch.empty(
                (self.batch_size, 3, config.height, config.width),
                dtype=torch.float32,
                device="cuda",
            )

        def get_batch_size(self) -> int:
            return self.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.position >= len(self.records):
                return None
            chunk = self.records[self.position : self.position + self.batch_size]
            self.position += len(chunk)
            host = read_batch(chunk, config)
            if len(host) < self.batch_size:  # the last batch: repeat images to fill it
                reps = -(-self.batch_size // len(host))
                host = np.concatenate([host] * reps)[: self.batch_size]
            self.device_batch.copy_(torch.from_numpy(host))
            return [int(self.device_batch.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            if cache_file is not None and cache_file.is_file():
                log.info("INT8: using calibration cache %s", cache_file)
                return cache_file.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_file is not None:
                cache_file.write_bytes(bytes(cache))

    return EntropyCalibrator()


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    options: EngineOptions,
    *,
    calibration: Sequence[ImageRecord] = (),
    preprocess: PreprocessConfig | None = None,
) -> Path:
    """Parse ``onnx_path``, build a serialized engine and write it to ``engine_path``.

    INT8 needs ``calibration`` records and their ``preprocess`` settings (the
    manifest's). Raises ``ExportError`` for parse or build failures.
    """
    trt = require_tensorrt()
    _require_cuda()
    if not options.batch_min <= options.batch_opt <= options.batch_max:
        raise ExportError("batch sizes must satisfy min <= opt <= max")
    logger = _TrtLogger.create(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gb * 2**30))
    profile = builder.create_optimization_profile()
    profile.set_shape(
        options.input_name,
        options.shape(options.batch_min),
        options.shape(options.batch_opt),
        options.shape(options.batch_max),
    )
    config.add_optimization_profile(profile)
    if options.fp16 or options.int8:  # INT8 layers without scales fall back to FP16
        config.set_flag(trt.BuilderFlag.FP16)
    calibrator = None
    if options.int8:
        if not calibration or preprocess is None:
            raise ExportError("INT8 needs calibration images (--calib DATASPEC)")
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = make_calibrator(
            trt, calibration, preprocess, options.batch_opt, options.calibration_cache
        )
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    cache = _load_timing_cache(config, options.timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT engine build failed (see the TensorRT log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    if options.timing_cache is not None and cache is not None:
        _save_timing_cache(config, options.timing_cache)
    del calibrator
    return engine_path


def _require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise ExportError(
            "building a TensorRT engine needs an NVIDIA GPU and a CUDA build of torch"
        )


def _load_timing_cache(config: Any, path: Path | None) -> Any:
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _save_timing_cache(config: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(config.get_timing_cache().serialize()))
