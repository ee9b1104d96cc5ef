"""The export's source: a checkpoint file, rebuilt into an eval-mode encoder (no trainer)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from export.errors import ExportError
from reid.checkpoint import CheckpointError, encoder_from_checkpoint, read_checkpoint
from reid.preprocess import PreprocessConfig


@dataclass
class Source:
    """An encoder rebuilt from a checkpoint, with what the manifest needs to know about it."""

    path: Path
    sha256: str
    encoder: nn.Module
    metadata: dict[str, Any]
    preprocess: PreprocessConfig

    @property
    def model_name(self) -> str:
        return str(self.metadata["build_spec"]["name"])

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.preprocess.height, self.preprocess.width)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assert_eval_mode(model: nn.Module) -> None:
    """Raise ``ExportError`` unless the model and all its submodules are in eval mode."""
    training = [name or "<outermost module>" for name, m in model.named_modules() if m.training]
    if training:
        raise ExportError(
            f"the encoder must be in eval mode for export; in train mode: {', '.join(training[:5])}"
        )


def load_source(path: str | Path) -> Source:
    """Read and validate ``path``, rebuild its encoder on CPU in eval mode.

    Raises ``ExportError`` with a one-line reason for a missing, corrupted or foreign
    file, or weights that do not fit the recorded architecture.
    """
    path = Path(path).expanduser()
    try:
        checkpoint = read_checkpoint(path)
        encoder, metadata = encoder_from_checkpoint(checkpoint)
    except (CheckpointError, RuntimeError) as exc:  # EncoderStateError is a RuntimeError
        raise ExportError(f"checkpoint {path}: {exc}") from None
    try:
        preprocess = PreprocessConfig.from_dict(metadata["preprocess"])
    except (TypeError, ValueError) as exc:
        raise ExportError(f"checkpoint {path}: bad preprocess metadata ({exc})") from None
    size = tuple(int(v) for v in metadata["input_size"])
    if size != (preprocess.height, preprocess.width):
        raise ExportError(
            f"checkpoint {path}: input_size {list(size)} disagrees with the preprocess size "
            f"{preprocess.height}x{preprocess.width}"
        )
    encoder.eval()
    assert_eval_mode(encoder)
    return Source(path.resolve(), file_sha256(path), encoder, metadata, preprocess)
