"""Checkpoint encoder -> ``model.onnx``: dynamo export, checker, optional simplification."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from export.errors import ExportError
from reid.models.onnx_util import INPUT_NAME, MIN_OPSET, OUTPUT_NAME, export_onnx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnnxResult:
    """What the ONNX step produced: the file, its opset and how it was simplified."""

    path: Path
    opset: int
    simplifier: str | None  # "onnxslim <version>", "onnxsim <version>" or None
    nodes_before: int
    nodes_after: int


def export_onnx_model(
    model: nn.Module,
    path: Path,
    input_size: tuple[int, int],
    *,
    opset: int = MIN_OPSET,
    simplify: bool = True,
) -> OnnxResult:
    """Export ``model`` (eval mode) with a dynamic batch axis, check it, optionally simplify."""
    if opset < MIN_OPSET:
        raise ExportError(f"--opset must be >= {MIN_OPSET} (the dynamo exporter's minimum)")
    export_onnx(model, path, input_size, opset=opset, check=True)
    import onnx

    proto = onnx.load(str(path))
    before = len(proto.graph.node)
    tool = None
    if simplify:
        proto, tool = simplify_graph(proto)
        onnx.save(proto, str(path))
        onnx.checker.check_model(str(path))
    check_interface(proto, input_size)
    actual_opset = _default_opset(proto)
    return OnnxResult(path, actual_opset, tool, before, len(proto.graph.node))


def simplify_graph(proto: object) -> tuple[object, str | None]:
    """Simplify with onnxslim, else onnxsim; returns ``(model, "tool version")``.

    The original graph is kept (with a warning) when neither is installed or the
    simplifier fails.
    """
    from export.versions import package_version

    try:
        import onnxslim
    except ImportError:
        onnxslim = None
    if onnxslim is not None:
        try:
            slimmed = onnxslim.slim(proto)
        except Exception as exc:  # a simplifier bug must not lose the export
            log.warning("onnxslim failed (%s); keeping the unsimplified graph", exc)
            return proto, None
        if slimmed is not None:
            return slimmed, f"onnxslim {package_version('onnxslim')}"
    try:
        import onnxsim
    except ImportError:
        log.warning("neither onnxslim nor onnxsim is installed; the graph is not simplified")
        return proto, None
    try:
        simplified, ok = onnxsim.simplify(proto)
    except Exception as exc:
        log.warning("onnxsim failed (%s); keeping the unsimplified graph", exc)
        return proto, None
    return (simplified, f"onnxsim {package_version('onnxsim')}") if ok else (proto, None)


def check_interface(proto: object, input_size: tuple[int, int]) -> None:
    """Input ``images[batch, 3, H, W]`` with a symbolic batch; output ``embeddings``."""
    inputs = [i for i in proto.graph.input if i.name == INPUT_NAME]
    outputs = [o for o in proto.graph.output if o.name == OUTPUT_NAME]
    if not inputs or not outputs:
        raise ExportError(f"exported graph lacks input {INPUT_NAME!r} or output {OUTPUT_NAME!r}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not dims[0].dim_param:
        raise ExportError("exported graph has no dynamic batch axis on its input")
    fixed = [d.dim_value for d in dims[1:]]
    if fixed != [3, *input_size]:
        raise ExportError(f"exported graph input is [batch, {fixed}], expected [3, {input_size}]")


def _default_opset(proto: object) -> int:
    return next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def export_encoder_dir(model: nn.Module, out: str | Path, *, simplify: bool = False) -> Path:
    """An in-memory encoder (eval mode) -> ``out/model.onnx`` + ``manifest.json``, no gate.

    For tests and benchmarks that need a servable export of an untrained model; user
    exports go through ``python -m export`` (checkpoint, provenance, parity gate).
    """
    from reid.manifest import ExportManifest, save_manifest

    out = Path(out)
    result = export_onnx_model(
        model, out / "model.onnx", tuple(model.input_size), simplify=simplify
    )
    manifest = ExportManifest(
        model_name=str(model.build_spec.get("name", type(model).__name__)),
        embedding_dim=int(model.embedding_dim),
        preprocess=model.preprocess_config(),
        files={"onnx": "model.onnx"},
        opset=result.opset,
        precision={"onnx": "fp32"},
    )
    save_manifest(manifest, out)
    return out
