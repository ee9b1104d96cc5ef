"""An export as an NVIDIA Triton model repository (``python -m export --format triton``).

    OUT/triton/reid/config.pbtxt     platform onnxruntime_onnx, dynamic batching
    OUT/triton/reid/1/model.onnx     the gated ONNX file (hard link or copy)
    OUT/triton/reid/manifest.json    this project's manifest (preprocessing, provenance)

``tritonserver --model-repository OUT/triton`` serves it; the model takes the
preprocessed ``FP32 [N, 3, H, W]`` batch (``manifest.json`` says how to preprocess) and
returns the L2-normalised ``FP32 [N, D]`` embeddings, the same tensors our server's
Open Inference Protocol endpoint speaks (docs/SERVER.md).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from reid.manifest import ExportManifest

MODEL_NAME = "reid"
REPOSITORY = "triton"


def model_config(
    manifest: ExportManifest,
    *,
    name: str = MODEL_NAME,
    instances: int = 1,
    kind: str = "KIND_AUTO",
    max_queue_delay_us: int = 2000,
) -> str:
    """The ``config.pbtxt`` text (protobuf text format of Triton's ``ModelConfig``)."""
    pre = manifest.preprocess
    batch = manifest.batch
    preferred = sorted({int(batch.get("opt", 32)), int(batch.get("max", 256))})
    return "\n".join(
        [
            f'name: "{name}"',
            'platform: "onnxruntime_onnx"',
            f"max_batch_size: {int(batch.get('max', 256))}",
            "input [",
            f'  {{ name: "{manifest.input_name}" data_type: TYPE_FP32 '
            f"dims: [ 3, {pre.height}, {pre.width} ] }}",
            "]",
            "output [",
            f'  {{ name: "{manifest.output_name}" data_type: TYPE_FP32 '
            f"dims: [ {manifest.embedding_dim} ] }}",
            "]",
            "dynamic_batching {",
            f"  preferred_batch_size: [ {', '.join(str(p) for p in preferred)} ]",
            f"  max_queue_delay_microseconds: {int(max_queue_delay_us)}",
            "}",
            f"instance_group [ {{ count: {int(instances)} kind: {kind} }} ]",
            "",
        ]
    )


def write_triton_repository(manifest: ExportManifest, out: Path, *, name: str = MODEL_NAME) -> Path:
    """Write ``out/triton/<name>/`` from the export in ``out``; returns the repository."""
    out = Path(out)
    onnx = manifest.path_of("onnx")
    model_dir = out / REPOSITORY / name
    version = model_dir / "1"
    version.mkdir(parents=True, exist_ok=True)
    target = version / "model.onnx"
    target.unlink(missing_ok=True)
    try:
        os.link(onnx, target)
    except OSError:  # another file system
        shutil.copy2(onnx, target)
    (model_dir / "config.pbtxt").write_text(model_config(manifest, name=name))
    shutil.copy2(out / "manifest.json", model_dir / "manifest.json")
    return out / REPOSITORY
