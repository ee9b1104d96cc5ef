"""The two commands as functions: export a checkpoint, and verify an existing export."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from export.errors import ExportError
from export.images import DEFAULT_MAX_IMAGES, load_gate_images, synthetic_gate_data
from export.parity import ParityReport, Thresholds, format_report, run_gate
from export.source import Source, load_source
from export.versions import tool_versions
from reid.data import DatasetError, parse_spec
from reid.manifest import (
    FAILED_MARKER,
    FORMATS,
    ExportManifest,
    ManifestError,
    load_manifest,
    save_manifest,
)
from reid.models.onnx_util import MIN_OPSET
from reid.preprocess import PreprocessConfig
from reid.runtimes import Runtime, RuntimeUnavailableError, load_runtime, resolve_device

log = logging.getLogger(__name__)

FILE_NAMES = {"onnx": "model.onnx", "tensorrt": "model.engine", "torch": "model.pt2"}
RUNTIME_OF = {"onnx": "onnxruntime", "tensorrt": "tensorrt", "torch": "torch"}
IN_PROGRESS = "export in progress: the parity gate has not passed yet"
EXPORT_FORMATS = (*FORMATS, "triton")
"""``--format`` values: the model formats, and ``triton`` (a Triton model repository of
the ONNX file, written once the gate passed; ``export.triton_repo``)."""

Say = Callable[[str], None]


@dataclass
class ExportOptions:
    """Everything ``python -m export`` takes (see ``export.cli`` for the flags)."""

    checkpoint: Path
    out: Path
    formats: tuple[str, ...] = ("onnx",)
    fp16: bool = False
    int8: bool = False
    calib: str | None = None
    calib_images: int = 512
    opset: int = 18
    simplify: bool = True
    batch_min: int = 1
    batch_opt: int = 32
    batch_max: int = 256
    workspace_gb: float = 4.0
    timing_cache: Path | None = None  # default: OUT/timing.cache
    data: str | None = None  # gate images; None: a generated synthetic set
    max_images: int = DEFAULT_MAX_IMAGES
    device: str = "auto"
    thresholds: Thresholds = field(default_factory=Thresholds)

    def validate(self) -> None:
        """Raise ``ExportError`` for inconsistent options (before any work is done)."""
        unknown = [f for f in self.formats if f not in EXPORT_FORMATS]
        if unknown or not self.formats:
            raise ExportError(
                f"unknown --format {unknown}; choose from {', '.join(EXPORT_FORMATS)}"
            )
        if (self.fp16 or self.int8) and "tensorrt" not in self.formats:
            raise ExportError(
                "--fp16/--int8 set the TensorRT engine's precision: add tensorrt "
                "to --format (ONNX and torch exports stay FP32)"
            )
        if self.int8 and not self.calib:
            raise ExportError("--int8 needs calibration images: --calib DATASPEC")
        if not 1 <= self.batch_min <= self.batch_opt <= self.batch_max:
            raise ExportError(
                "batch sizes must satisfy 1 <= --batch-min <= --batch-opt <= --batch-max"
            )
        if self.max_images < 2:
            raise ExportError("--max-images must be at least 2")
        if self.opset < MIN_OPSET:
            raise ExportError(f"--opset must be >= {MIN_OPSET} (the dynamo exporter's minimum)")
        check_spec(self.data, "--data")
        check_spec(self.calib, "--calib")

    @property
    def trt_precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"


def check_spec(spec: str | None, flag: str) -> None:
    """Raise ``ExportError`` for a malformed dataset spec or a missing dataset path."""
    if spec is None:
        return
    try:
        parsed = parse_spec(spec)
    except DatasetError as exc:
        raise ExportError(f"{flag}: {exc}") from None
    if not parsed.path.exists():
        raise ExportError(f"{flag}: {parsed.path} does not exist")


def export_checkpoint(
    options: ExportOptions, say: Say = print
) -> tuple[ExportManifest, ParityReport]:
    """Export ``options.checkpoint`` into ``options.out`` and run the parity gate.

    Returns the written manifest and the gate's report (``report.passed``). Raises
    ``ExportError`` for usage and input problems. The files stay on disk either
    way; a failed gate leaves a ``FAILED`` marker with the reason.
    """
    options.validate()
    if "tensorrt" in options.formats:
        from export.tensorrt_build import require_tensorrt

        require_tensorrt()  # fail at once, before the slow steps
    device = _gate_device(options.device, options.formats)
    source = load_source(options.checkpoint)
    say(
        f"checkpoint: {source.path} ({source.model_name}, method {source.metadata.get('method')}, "
        f"sha256 {source.sha256[:12]})"
    )
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_marker(out, IN_PROGRESS)
    manifest = _new_manifest(source, options)
    _export_files(source, options, manifest, out, say)
    save_manifest(manifest, out)
    report = gate(
        manifest, source, options.data, device, options.max_images, options.thresholds, say
    )
    if "triton" in options.formats:
        if report.passed:
            from export.triton_repo import write_triton_repository

            say(f"triton: {write_triton_repository(manifest, out)} (model reid, onnxruntime_onnx)")
        else:
            say("triton: no model repository written (the parity gate failed)")
    return manifest, report


def verify_export(
    directory: str | Path,
    data: str | None = None,
    *,
    checkpoint: str | Path | None = None,
    formats: Sequence[str] | None = None,
    device: str = "auto",
    max_images: int = DEFAULT_MAX_IMAGES,
    thresholds: Thresholds | None = None,
    say: Say = print,
) -> tuple[ExportManifest, ParityReport]:
    """Re-run the parity gate on an existing export; rewrites ``parity`` and the marker.

    The PyTorch reference is rebuilt from ``checkpoint`` (default: the one the
    manifest names), which must have the manifest's SHA-256.
    """
    try:
        manifest = load_manifest(directory, allow_failed=True)
    except ManifestError as exc:
        raise ExportError(str(exc)) from None
    path = checkpoint or manifest.source.get("checkpoint")
    if not path:
        raise ExportError("the manifest names no source checkpoint; pass --checkpoint CKPT")
    check_spec(data, "--data")
    if max_images < 2:
        raise ExportError("--max-images must be at least 2")
    source = load_source(path)
    expected = manifest.source.get("sha256")
    if expected and source.sha256 != expected:
        raise ExportError(
            f"checkpoint {source.path} (sha256 {source.sha256[:12]}) is not the one "
            f"this export was made from (sha256 {expected[:12]})"
        )
    chosen = tuple(formats) if formats else tuple(manifest.files)
    missing = [f for f in chosen if f not in manifest.files]
    if missing:
        raise ExportError(
            f"this export has no {', '.join(missing)} model (it has {', '.join(manifest.files)})"
        )
    gate_device = _gate_device(device, chosen)
    report = gate(
        manifest,
        source,
        data,
        gate_device,
        max_images,
        thresholds or Thresholds(),
        say,
        formats=chosen,
    )
    return manifest, report


def gate(
    manifest: ExportManifest,
    source: Source,
    data: str | None,
    device: str,
    max_images: int,
    thresholds: Thresholds,
    say: Say = print,
    formats: Sequence[str] | None = None,
) -> ParityReport:
    """Run the parity gate, store it in the manifest and set or clear the ``FAILED`` marker."""
    directory = Path(manifest.directory or ".")
    with _gate_data(data, manifest.preprocess, say) as spec:
        images = load_gate_images(spec, manifest.preprocess, max_images)
        if data is None:
            images.description = f"generated synthetic set (no --data given): {images.description}"
        runtimes = _open_runtimes(manifest, formats or tuple(manifest.files), device)
        try:
            report = run_gate(
                source.encoder, runtimes, images, device=device, thresholds=thresholds
            )
        finally:
            for _, runtime, _ in runtimes:
                runtime.close()
    manifest.parity = report.to_dict()
    save_manifest(manifest, directory)
    say(format_report(report))
    checked_all = set(formats or manifest.files) == set(manifest.files)
    if report.passed and checked_all:
        (directory / FAILED_MARKER).unlink(missing_ok=True)
    elif report.passed:
        say("only some formats were checked: an existing FAILED marker is left in place")
    else:
        _write_marker(directory, "parity gate failed: " + "; ".join(report.failures))
    return report


@contextlib.contextmanager
def _gate_data(data: str | None, config: PreprocessConfig, say: Say) -> Iterator[str]:
    if data is not None:
        yield data
        return
    say(
        f"gate data: no --data given, generating a small synthetic query/gallery set at "
        f"{config.height}x{config.width} in a temporary directory"
    )
    with synthetic_gate_data(config) as spec:
        yield spec


def _open_runtimes(
    manifest: ExportManifest, formats: Sequence[str], device: str
) -> list[tuple[str, Runtime, str]]:
    opened = []
    for fmt in formats:
        try:
            runtime = load_runtime(manifest, RUNTIME_OF[fmt], device=device)
        except RuntimeUnavailableError as exc:
            raise ExportError(f"cannot run the {fmt} model for the parity gate: {exc}") from None
        opened.append((fmt, runtime, manifest.precision.get(fmt, "fp32")))
    return opened


def _gate_device(device: str, formats: Sequence[str]) -> str:
    try:
        resolved = resolve_device("cuda" if "tensorrt" in formats and device == "auto" else device)
    except (ValueError, RuntimeUnavailableError) as exc:
        raise ExportError(f"--device: {exc}") from None
    if "tensorrt" in formats and resolved != "cuda":
        raise ExportError("TensorRT engines run on cuda only: use --device cuda (or auto)")
    return resolved


def _new_manifest(source: Source, options: ExportOptions) -> ExportManifest:
    meta = source.metadata
    return ExportManifest(
        model_name=source.model_name,
        method=meta.get("method"),
        build_spec=dict(meta["build_spec"]),
        embedding_dim=int(meta["embedding_dim"]),
        normalized=bool(meta.get("normalized", True)),
        preprocess=source.preprocess,
        files={},
        opset=options.opset,
        batch={"min": options.batch_min, "opt": options.batch_opt, "max": options.batch_max},
        source={
            "checkpoint": str(source.path),
            "sha256": source.sha256,
            "epoch": meta.get("epoch"),
            "metrics": dict(meta.get("metrics") or {}),
        },
        tools=tool_versions(),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def _export_files(
    source: Source, options: ExportOptions, manifest: ExportManifest, out: Path, say: Say
) -> None:
    from export.onnx_export import export_onnx_model

    onnx_path = out / FILE_NAMES["onnx"]
    result = export_onnx_model(
        source.encoder, onnx_path, source.input_size, opset=options.opset, simplify=options.simplify
    )
    manifest.files["onnx"], manifest.precision["onnx"] = onnx_path.name, "fp32"
    manifest.opset = result.opset
    if result.simplifier:
        manifest.tools["simplifier"] = result.simplifier
    how = ", not simplified"
    if result.simplifier:
        how = f", {result.simplifier}: {result.nodes_before} -> {result.nodes_after} nodes"
    say(f"onnx: {onnx_path} (opset {result.opset}{how})")
    if "torch" in options.formats:
        from export.torch_export import export_program

        path = export_program(source.encoder, out / FILE_NAMES["torch"], source.input_size)
        manifest.files["torch"], manifest.precision["torch"] = path.name, "fp32"
        say(f"torch: {path} (torch.export program, dynamic batch)")
    if "tensorrt" in options.formats:
        _build_tensorrt(source, options, manifest, onnx_path, out, say)


def _build_tensorrt(
    source: Source,
    options: ExportOptions,
    manifest: ExportManifest,
    onnx_path: Path,
    out: Path,
    say: Say,
) -> None:
    from export.images import calibration_records
    from export.tensorrt_build import EngineOptions, build_engine

    engine_options = EngineOptions(
        input_name=manifest.input_name,
        input_size=source.input_size,
        batch_min=options.batch_min,
        batch_opt=options.batch_opt,
        batch_max=options.batch_max,
        fp16=options.fp16,
        int8=options.int8,
        workspace_gb=options.workspace_gb,
        timing_cache=options.timing_cache or out / "timing.cache",
        calibration_cache=out / "calibration.cache" if options.int8 else None,
    )
    records = calibration_records(options.calib, options.calib_images) if options.int8 else []
    path = build_engine(
        onnx_path,
        out / FILE_NAMES["tensorrt"],
        engine_options,
        calibration=records,
        preprocess=source.preprocess,
    )
    manifest.files["tensorrt"] = path.name
    manifest.precision["tensorrt"] = options.trt_precision
    say(
        f"tensorrt: {path} ({options.trt_precision}, batch {options.batch_min}/"
        f"{options.batch_opt}/{options.batch_max})"
    )


def _write_marker(directory: Path, reason: str) -> None:
    (directory / FAILED_MARKER).write_text(reason.rstrip() + "\n")
