"""Command line: ``python -m export --checkpoint CKPT --out DIR`` and ``... verify DIR``.

Exit codes: 0 export written and the parity gate passed; 1 the gate failed (files
kept, ``DIR/FAILED`` says why); 2 usage or input error (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from export.errors import EXIT_GATE_FAILED, EXIT_OK, EXIT_USAGE, ExportError
from export.images import DEFAULT_MAX_IMAGES
from export.parity import Thresholds
from reid.clihelp import HelpFormatter

DATA_HELP = (
    "dataset spec FORMAT:PATH of the parity gate's images (query + gallery for CMC/mAP); "
    "default: a small synthetic set generated at the model's input size in a temp dir"
)


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 2 with one line (argparse's default, minus the usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ExportError(f"{self.prog}: {message}")


def _gate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="SPEC", help=DATA_HELP)
    parser.add_argument(
        "--max-images",
        type=int,
        default=DEFAULT_MAX_IMAGES,
        metavar="N",
        help="bound the gate's images",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the gate runs PyTorch and the runtimes",
    )
    parser.add_argument(
        "--min-cosine",
        type=float,
        default=0.9999,
        help="FP32 gate: smallest per-image cosine",
    )
    parser.add_argument(
        "--max-map-diff",
        type=float,
        default=0.1,
        help="FP32 gate: largest |delta mAP| in points",
    )
    parser.add_argument(
        "--lowp-min-cosine",
        type=float,
        default=None,
        help="also gate FP16/INT8 engines on this cosine (default: report only)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the manifest's parity report as JSON instead of text",
    )


def build_export_parser() -> argparse.ArgumentParser:
    """Parser of ``python -m export --checkpoint CKPT --out DIR ...``."""
    p = _Parser(
        prog="python -m export",
        description="Export a checkpoint to ONNX (and TensorRT / torch.export), write "
        "DIR/manifest.json and run the parity gate. Re-check an export with "
        "'python -m export verify DIR --data SPEC'.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        metavar="CKPT",
        help="checkpoint written by training",
    )
    p.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="export directory to write"
    )
    p.add_argument(
        "--format",
        default="onnx",
        metavar="onnx,tensorrt,torch,triton",
        help="comma-separated formats (tensorrt builds from the ONNX; triton writes a Triton "
        "model repository of the ONNX under OUT/triton once the gate passed)",
    )
    p.add_argument("--fp16", action="store_true", help="TensorRT engine in FP16")
    p.add_argument("--int8", action="store_true", help="TensorRT engine in INT8 (needs --calib)")
    p.add_argument("--calib", metavar="DATASPEC", help="INT8 calibration images (dataset spec)")
    p.add_argument(
        "--calib-images", type=int, default=512, metavar="N", help="INT8 calibration image count"
    )
    p.add_argument("--opset", type=int, default=18, metavar="N", help="ONNX opset (>= 18)")
    p.add_argument("--no-simplify", action="store_true", help="keep the exporter's graph")
    p.add_argument(
        "--batch-min", type=int, default=1, metavar="N", help="smallest batch of the dynamic axis"
    )
    p.add_argument(
        "--batch-opt", type=int, default=32, metavar="N", help="batch size TensorRT optimises for"
    )
    p.add_argument(
        "--batch-max", type=int, default=256, metavar="N", help="largest batch of the dynamic axis"
    )
    p.add_argument(
        "--workspace-gb", type=float, default=4.0, help="TensorRT builder workspace in GiB"
    )
    p.add_argument(
        "--timing-cache",
        type=Path,
        metavar="PATH",
        help="TensorRT timing cache (default DIR/timing.cache)",
    )
    _gate_arguments(p)
    return p


def build_verify_parser() -> argparse.ArgumentParser:
    """Parser of ``python -m export verify DIR --data SPEC``."""
    p = _Parser(
        prog="python -m export verify",
        description="Re-run the parity gate on an export directory; rewrites the manifest's "
        "parity report and the FAILED marker.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("directory", type=Path, metavar="DIR", help="export directory to check")
    p.add_argument(
        "--checkpoint",
        type=Path,
        metavar="CKPT",
        help="PyTorch reference (default: the checkpoint the manifest names)",
    )
    p.add_argument("--format", metavar="FORMATS", help="only these exported formats")
    _gate_arguments(p)
    return p


def _thresholds(args: argparse.Namespace) -> Thresholds:
    return Thresholds(args.min_cosine, args.max_map_diff, args.lowp_min_cosine, None)


def _formats(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))


def run(argv: Sequence[str]) -> int:
    """Parse and run; raises ``ExportError`` for usage/input errors."""
    from export.pipeline import ExportOptions, export_checkpoint, verify_export

    argv = list(argv)
    if argv and argv[0] == "verify":
        args = build_verify_parser().parse_args(argv[1:])
        say = _sayer(args.json)
        manifest, report = verify_export(
            args.directory,
            args.data,
            checkpoint=args.checkpoint,
            formats=_formats(args.format),
            device=args.device,
            max_images=args.max_images,
            thresholds=_thresholds(args),
            say=say,
        )
    else:
        args = build_export_parser().parse_args(argv)
        say = _sayer(args.json)
        options = ExportOptions(
            checkpoint=args.checkpoint,
            out=args.out,
            formats=_formats(args.format) or (),
            fp16=args.fp16,
            int8=args.int8,
            calib=args.calib,
            calib_images=args.calib_images,
            opset=args.opset,
            simplify=not args.no_simplify,
            batch_min=args.batch_min,
            batch_opt=args.batch_opt,
            batch_max=args.batch_max,
            workspace_gb=args.workspace_gb,
            timing_cache=args.timing_cache,
            data=args.data,
            max_images=args.max_images,
            device=args.device,
            thresholds=_thresholds(args),
        )
        manifest, report = export_checkpoint(options, say=say)
    directory = manifest.directory
    if args.json:
        print(json.dumps({"manifest": str(directory / "manifest.json"), **report.to_dict()}))
    elif report.passed:
        print(f"export OK: {directory}/manifest.json")
    else:
        print(f"export FAILED its parity gate; files kept in {directory} (see {directory}/FAILED)")
    return EXIT_OK if report.passed else EXIT_GATE_FAILED


def _sayer(quiet: bool) -> object:
    return (lambda _text: None) if quiet else (lambda text: print(text, flush=True))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 gate failed, 2 usage/input error)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("reid.models.backbones.weights").setLevel(logging.ERROR)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        build_export_parser().print_help()
        return EXIT_USAGE
    help_flags = ("-h", "--help")
    if argv[0] in help_flags or (argv[0] == "verify" and argv[1:2] and argv[1] in help_flags):
        parser = build_verify_parser() if argv[0] == "verify" else build_export_parser()
        parser.print_help()
        return EXIT_OK
    try:
        return run(argv)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
