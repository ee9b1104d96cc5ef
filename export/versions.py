"""Versions of the tools an export was made with (stored in the manifest)."""

from __future__ import annotations

import platform
from importlib import metadata

TOOL_PACKAGES = ("torch", "onnx", "onnxscript", "onnxruntime", "onnxslim", "onnxsim", "tensorrt")


def package_version(name: str) -> str | None:
    """Installed version of distribution ``name`` (``None`` when absent)."""
    candidates = [name]
    if name == "onnxruntime":
        candidates.append("onnxruntime-gpu")
    if name == "tensorrt":
        candidates += ["tensorrt-cu12", "tensorrt-cu11"]
    for candidate in candidates:
        try:
            return metadata.version(candidate)
        except metadata.PackageNotFoundError:
            continue
    return None


def tool_versions() -> dict[str, str]:
    """``{package: version}`` for the export tools that are installed, plus Python."""
    found = {name: package_version(name) for name in TOOL_PACKAGES}
    versions = {name: version for name, version in found.items() if version}
    versions["python"] = platform.python_version()
    return versions
