"""Swappable inference runtimes behind one small interface.

``Runtime.embed(float32[N, 3, H, W]) -> float32[N, D]``: one class per runtime,
heavy imports inside the class, chosen by name from :data:`RUNTIMES`::

    runtime = load_runtime("exports/run1", "onnxruntime", device="auto")
    embeddings = runtime.embed(batch)

The runtimes live in the shared library (not in ``server/``) because the export
parity gate, the server and the served-path evaluation all run them.
"""

from __future__ import annotations

from reid.runtimes.base import (
    RUNTIMES,
    Runtime,
    RuntimeUnavailableError,
    load_runtime,
    resolve_device,
)

__all__ = ["RUNTIMES", "Runtime", "RuntimeUnavailableError", "load_runtime", "resolve_device"]
