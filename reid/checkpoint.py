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
    except Exception as exc:  # zip/pickle/unpickler/OS errors all mean "unreadable"
        raise CheckpointError(f"cannot read {path}: {unreadable_reason(path, exc)}") from None
    return validate_checkpoint(data, source=str(path))


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_MAGIC = b"\x80"  # a pickle (torch's legacy format starts with one)


def unreadable_reason(path: Path, exc: BaseException) -> str:
    """What is wrong with a file ``torch.load`` refused, in words (never "KeyError: 101").

    Told apart by the first bytes: an empty file; a text or other non-torch file; a
    torch file (zip or legacy pickle) that is truncated or corrupt; one holding pickled
    objects that ``weights_only`` loading refuses.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(512)
    except OSError as err:
        return f"the file cannot be read ({err.strerror or err})"
    if size == 0:
        return "the file is empty (0 bytes): not a checkpoint (an interrupted copy or save?)"
    torch_file = head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC)
    if not torch_file and _looks_like_text(head):
        preview = head.decode("utf-8", "replace").strip().splitlines()
        first = preview[0][:60] if preview else ""
        return (
            f"not a checkpoint: this is a text file (it starts with {first!r}), not one "
            "written by python -m trainer train (is this a reid checkpoint?)"
        )
    if not torch_file:
        return (
            f"not a checkpoint: not a file written by torch.save (it starts with the bytes "
            f"{head[:8].hex(' ')}) (is this a reid checkpoint?)"
        )
    if "weights_only" in str(exc) or "Weights only" in str(exc):
        # torch's own hint (load with weights_only=False) would run pickled code.
        return (
            "not a reid checkpoint: it holds pickled objects other than tensors and plain "
            "containers, which are refused for safety"
        )
    kind = "zip archive" if head.startswith(_ZIP_MAGIC) else "legacy pickle"
    return (
        f"the file is truncated or corrupt ({size:,} bytes; a torch {kind} that does not "
        "read to its end): copy or save it again (is this a reid checkpoint?)"
    )


def _looks_like_text(head: bytes) -> bool:
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        try:  # a multi-byte character cut at the end of the sample
            decoded = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(c.isprintable() or c in "\t\r\n\f" for c in decoded)


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
