"""onnxruntime: CPU here; CUDA and TensorRT execution providers when present and asked for."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reid.manifest import ExportManifest
from reid.runtimes.base import Runtime, RuntimeUnavailableError, model_file

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


def select_providers(
    device: str, available: Sequence[str], *, tensorrt: bool = True
) -> tuple[list[str], list[str]]:
    """``(providers in priority order, warnings)`` for ``device``.

    On ``cuda``: TensorRT EP (if ``tensorrt``), then CUDA EP, then CPU, keeping those
    that onnxruntime offers; the warnings say which wanted ones are missing.
    """
    wanted = [CPU]
    if device == "cuda":
        wanted = [TENSORRT, CUDA, CPU] if tensorrt else [CUDA, CPU]
    providers = [p for p in wanted if p in available]
    warnings = []
    missing = [p for p in wanted if p not in available]
    if device == "cuda" and CUDA not in providers and TENSORRT not in providers:
        warnings.append(
            "onnxruntime has no CUDA or TensorRT execution provider (install onnxruntime-gpu: "
            "pip install -e '.[gpu]'); falling back to CPUExecutionProvider"
        )
    elif missing:
        warnings.append(f"onnxruntime lacks {', '.join(missing)}; using {', '.join(providers)}")
    return providers, warnings


class OnnxRuntime(Runtime):
    """Runs ``model.onnx`` with onnxruntime.

    Options: ``threads`` (intra-op threads; default onnxruntime's choice), ``spin``
    (busy-wait worker threads, default True), ``tensorrt_ep`` (try the TensorRT EP
    first on cuda, default True), ``tensorrt_fp16`` (let it use FP16, default False),
    ``tf32`` (allow TF32 in the CUDA EP, default False: exact FP32), ``cache_dir``
    (TensorRT EP engine cache).
    """

    name = "onnxruntime"

    def __init__(
        self,
        manifest: ExportManifest,
        device: str = "cpu",
        *,
        threads: int | None = None,
        spin: bool = True,
        tensorrt_ep: bool = True,
        tensorrt_fp16: bool = False,
        tf32: bool = False,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(manifest, device)
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise RuntimeUnavailableError(f"onnxruntime is not installed ({exc})") from None
        path = model_file(manifest, "onnx")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers, warnings = select_providers(
            device, ort.get_available_providers(), tensorrt=tensorrt_ep
        )
        for message in warnings:
            log.warning(message)
        configured = [
            (p, self._provider_options(p, tensorrt_fp16, tf32, cache_dir)) for p in providers
        ]
        self.session = ort.InferenceSession(str(path), options, providers=configured)
        self.providers = list(self.session.get_providers())
        if device == "cuda" and not ({CUDA, TENSORRT} & set(self.providers)):
            log.warning("onnxruntime could not start a GPU provider; running on CPU")
            self.device = "cpu"

    def _provider_options(
        self, provider: str, fp16: bool, tf32: bool, cache_dir: str | Path | None
    ) -> dict[str, Any]:
        if provider == CUDA:
            return {"use_tf32": "1" if tf32 else "0"}
        if provider != TENSORRT:
            return {}
        height, width = self.manifest.preprocess.height, self.manifest.preprocess.width
        batch = self.manifest.batch

        def shape(key: str, default: int) -> str:
            return f"{self.manifest.input_name}:{int(batch.get(key, default))}x3x{height}x{width}"

        opts: dict[str, Any] = {
            "trt_fp16_enable": "1" if fp16 else "0",
            "trt_profile_min_shapes": shape("min", 1),
            "trt_profile_opt_shapes": shape("opt", 32),
            "trt_profile_max_shapes": shape("max", 256),
        }
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            opts.update(trt_engine_cache_enable="1", trt_engine_cache_path=str(cache_dir))
        return opts

    def _embed(self, images: np.ndarray) -> np.ndarray:
        feeds = {self.manifest.input_name: np.ascontiguousarray(images, dtype=np.float32)}
        return self.session.run([self.manifest.output_name], feeds)[0]

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "providers": list(self.providers)}

    def close(self) -> None:
        self.session = None
