"""Writing training checkpoints, and restoring everything a resumed run needs.

The file format and its read-only side (``read_checkpoint``, ``load_encoder``)
live in :mod:`reid.checkpoint` so export and serving never import the trainer.
Here: building the checkpoint dict, atomic saving, RNG capture/restore and a
shape-tolerant load of the method's state (memories change size every epoch).

The ``"training"`` section holds ``method`` (the method's state dict without the
encoder), ``optimizer``, ``scheduler``, ``grad_scaler``, ``rng`` (python, numpy,
torch CPU and CUDA), ``epoch`` (epochs completed), ``global_step``,
``last_labels`` (the sampler's labels), ``best_map``, ``log_rows`` (how many CSV
rows belong to the run so far) and ``world_size``.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reid.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    encoder_from_checkpoint,
    load_encoder,
    read_checkpoint,
)
from reid.jsonable import to_jsonable

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "build_checkpoint",
    "capture_rng_state",
    "encoder_from_checkpoint",
    "load_checkpoint",
    "load_encoder",
    "load_method_state",
    "method_state",
    "restore_rng_state",
    "save_checkpoint",
]


def build_checkpoint(
    encoder: nn.Module,
    *,
    method: str,
    epoch: int,
    metrics: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict (see :mod:`reid.checkpoint` for the layout).

    ``epoch`` is the number of completed epochs. ``training`` is left out for a
    weights-only file (``model_best.pt`` keeps it too, so it can be resumed from).
    """
    meta_fn = getattr(encoder, "metadata", None)
    metadata: dict[str, Any] = dict(meta_fn()) if callable(meta_fn) else {}
    metadata.update(
        method=method,
        epoch=int(epoch),
        metrics=dict(metrics or {}),
        config=dict(config or {}),
        torch_version=str(torch.__version__),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    data: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "encoder": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "metadata": to_jsonable(metadata),  # plain types: torch.load(weights_only=True)
    }
    if training is not None:
        data["training"] = dict(training)
    return data


def save_checkpoint(data: Mapping[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(dict(data), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path, *, require_training: bool = False) -> dict[str, Any]:
    """Read and validate a checkpoint; with ``require_training`` it must be resumable."""
    data = read_checkpoint(path)
    if require_training and not isinstance(data.get("training"), Mapping):
        raise CheckpointError(
            f"{path} holds weights only (no training state), so a run cannot resume from it"
        )
    return data


# ----------------------------------------------------------------------------- RNG


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU (and CUDA) generator states, as checkpoint-safe types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(np.asarray(keys).copy()), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (missing entries are left alone)."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
        np.random.set_state((kind, keys.astype(np.uint32), int(pos), int(has_gauss), cached))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)


# ----------------------------------------------------------------------------- method state


def method_state(method: nn.Module) -> dict[str, Any]:
    """The method's state dict without its encoder (saved separately), detached on CPU."""
    return {
        k: (v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v)
        for k, v in method.state_dict().items()
        if not k.startswith("encoder.")
    }


def load_method_state(method: nn.Module, state: Mapping[str, Any]) -> None:
    """Load :func:`method_state` output back, letting buffers change size.

    Buffers whose saved shape differs (cluster memories, sized by the epoch's
    cluster count) are re-allocated with the saved shape first. Parameters must
    match exactly (a method's trainable parameters have fixed shapes). Raises
    ``CheckpointError`` naming missing, unexpected or mismatched entries.
    """
    own = {k: v for k, v in method.state_dict().items() if not k.startswith("encoder.")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            "method state does not fit this method (another method or other settings?): "
            f"missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    params = dict(method.named_parameters())
    for key, value in state.items():
        current = own[key]
        if not isinstance(value, torch.Tensor) or not isinstance(current, torch.Tensor):
            continue
        if tuple(value.shape) == tuple(current.shape):
            continue
        if key in params:
            raise CheckpointError(
                f"method parameter {key} has shape {list(value.shape)} in the checkpoint but "
                f"{list(current.shape)} here (different dataset or settings?)"
            )
        module_name, _, buffer_name = key.rpartition(".")
        module = method.get_submodule(module_name) if module_name else method
        if buffer_name in module._buffers:
            module._buffers[buffer_name] = current.new_empty(value.shape)
    method.load_state_dict({**dict(state)}, strict=False)
