"""Export an encoder to ONNX with a dynamic batch axis, and run it with onnxruntime.

We use torch's dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``,
the default since torch 2.9): it handles every registered encoder, including
PatchNet's ``affine_grid`` (which the deprecated TorchScript exporter only
supports from opset 20), and its graph optimiser folds BatchNorm into the
convolutions. It emits opset 18 at the lowest (``GridSample`` needs >= 16), so
``opset`` defaults to 18. The graph has one input ``images`` ``float32[batch, 3,
H, W]`` and one output ``embeddings`` ``float32[batch, D]``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
MIN_OPSET = 18
MAX_BATCH = 4096


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: tuple[int, int] | None = None,
    *,
    opset: int = MIN_OPSET,
    check: bool = True,
) -> Path:
    """Write ``model`` (in eval mode) to ``path`` as one self-contained ``.onnx`` file.

    Args:
        model: an encoder in eval mode (raises ``ValueError`` otherwise: BatchNorm in
            train mode would be exported with batch statistics).
        path: output file; its parent directory is created.
        input_size: ``(H, W)``; defaults to ``model.input_size``. H and W are fixed
            in the graph, the batch axis is dynamic (1 .. ``MAX_BATCH``).
        opset: ONNX opset (>= 18, the dynamo exporter's minimum).
        check: run ``onnx.checker`` on the result.
    """
    if model.training:
        raise ValueError("export_onnx needs the model in eval mode: call model.eval() first")
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (dynamo exporter), got {opset}")
    height, width = input_size if input_size is not None else model.input_size
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    example = torch.zeros(2, 3, int(height), int(width), device=device)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with _quiet_exporter(), torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    if check:
        import onnx

        onnx.checker.check_model(str(path))
    return path


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's warnings and log chatter (e.g. "torchvision is not installed")."""
    torch_onnx = logging.getLogger("torch.onnx")
    level = torch_onnx.level
    torch_onnx.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch_onnx.setLevel(level)


def onnx_session(path: str | Path, threads: int | None = None, spin: bool = True) -> object:
    """A CPU ``onnxruntime.InferenceSession`` for ``path``.

    ``threads``: intra-op threads (default: onnxruntime's choice). ``spin=False``
    lets idle worker threads sleep instead of busy-waiting (better on a machine
    shared with other jobs, slightly slower on an idle one).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: object, images: np.ndarray) -> np.ndarray:
    """Embed ``float32[N, 3, H, W]`` with an onnxruntime session -> ``float32[N, D]``."""
    batch = np.ascontiguousarray(images, dtype=np.float32)
    return session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


def cosine_parity(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Smallest row-wise cosine similarity between two ``[N, D]`` embedding arrays."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    cand = cand / np.linalg.norm(cand, axis=1, keepdims=True)
    return float((ref * cand).sum(axis=1).min())
