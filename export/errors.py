"""Errors of ``python -m export`` and the exit codes they map to."""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2

GPU_EXTRA_HINT = "install the gpu extra: pip install -e '.[gpu]'"


class ExportError(Exception):
    """A usage or input problem (bad checkpoint, missing file, library missing): exit 2."""


class TensorRTUnavailableError(ExportError):
    """``tensorrt`` cannot be imported here."""

    def __init__(self, detail: str = "") -> None:
        reason = f" ({detail})" if detail else ""
        super().__init__(
            f"TensorRT is not installed{reason}: --format tensorrt needs the Python package "
            f"tensorrt>=10; {GPU_EXTRA_HINT} on a machine with an NVIDIA GPU"
        )
