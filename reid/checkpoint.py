"""Read-only access to training checkpoints: rebuild the bare encoder from a file.

A checkpoint (written by ``trainer.checkpoint``) is a plain dict saved with
``torch.save``::

    {
        "format": "reid-checkpoint",
        "version": 1,
        "encoder": encoder.state_dict(),
        "metadata": {
            "method", "build_spec" ({"name", "kwargs"}), "input_size" [H, W],
            "preprocess" (PreprocessConfig.to_dict(): size, mean/std, ...),
            "embedding_dim", "normalized", "epoch", "metrics", "config",
            "torch_version", "created", ...
        },
        "training": {...},   # optional: optimiser, method state, RNG (trainer only)
    }

Only tensors and plain Python containers are stored, so files are read with
``torch.load(weights_only=True)``: loading a checkpoint never runs pickled code.
Export, the server and evaluation import this module, never ``trainer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_FORMAT = "reid-checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_METADATA = ("build_spec", "embedding_dim", "input_size", "preprocess")


class CheckpointError(ValueError):
    """A file is not a readable re-ID checkpoint; the message says why."""


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint file; ``CheckpointError`` with a clear reason if bad."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file (expected a checkpoint such as model_best.pt)")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # zip/pickle/unpickler errors all mean "unreadable"
        reason = f"{type(exc).__name__}: {_first_line(exc)}"
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            # torch's own hint (load with weights_only=False) would run pickled code.
            reason = (
                "not a torch checkpoint, or it holds pickled objects other than tensors "
                "and plain containers, which are refused for safety"
            )
        raise CheckpointError(
            f"cannot read {path} ({reason}) (is this a reid checkpoint?)"
        ) from None
    return validate_checkpoint(data, source=str(path))


def validate_checkpoint(data: Any, source: str = "checkpoint") -> dict[str, Any]:
    """Check the format marker, version, encoder state and required metadata."""
    if not isinstance(data, Mapping) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{source} is not a reid checkpoint (no format marker {CHECKPOINT_FORMAT!r}; "
            "write checkpoints with python -m trainer train)"
        )
    version = data.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{source}: checkpoint version {version!r} is not supported "
            f"(this code reads versions <= {CHECKPOINT_VERSION})"
        )
    if not isinstance(data.get("encoder"), Mapping):
        raise CheckpointError(f"{source}: checkpoint has no encoder state dict")
    metadata = data.get("metadata")
    if not isinstance(metadata, Mapping):
        raise CheckpointError(f"{source}: checkpoint has no metadata")
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise CheckpointError(f"{source}: checkpoint metadata lacks {', '.join(missing)}")
    spec = metadata["build_spec"]
    if not isinstance(spec, Mapping) or not spec.get("name"):
        raise CheckpointError(f"{source}: checkpoint metadata has no model build_spec name")
    return dict(data)


def encoder_from_checkpoint(checkpoint: Mapping[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the encoder a validated checkpoint describes and load its weights.

    Returns ``(encoder in eval mode on CPU, metadata)``. No pretrained weights are
    loaded (the checkpoint overwrites every weight).
    """
    from reid.models import build_model_from_spec, load_encoder_state

    metadata = dict(checkpoint["metadata"])
    try:
        encoder = build_model_from_spec(metadata["build_spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"cannot rebuild model {metadata['build_spec'].get('name')!r} from the checkpoint "
            f"metadata: {exc}"
        ) from None
    load_encoder_state(encoder, checkpoint["encoder"])
    encoder.eval()
    return encoder, metadata


def load_encoder(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """``(encoder, metadata)`` from a checkpoint file: eval mode, on ``device``."""
    encoder, metadata = encoder_from_checkpoint(read_checkpoint(path))
    return encoder.to(device), metadata


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "unknown error"
