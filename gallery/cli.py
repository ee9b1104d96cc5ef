"""``python -m gallery``: tools that work against a running search server.

    python -m gallery evaluate --server http://127.0.0.1:8000 --data SPEC \\
        [--grpc HOST:PORT] [--json] [--report DIR] [--model EXPORT_DIR] [--k K]
    python -m gallery ingest SOURCE --camera ID --server URL [--fps 5] [--start-time ISO8601]
    python -m gallery ingest --cameras cameras.yaml --server URL

``ingest`` is documented in gallery/ingest/cli.py and docs/GALLERY.md.

Exit status of ``evaluate``: 0 when the served numbers match the offline ones within
1e-4 (or no offline reference was asked for), 1 when they differ by more, 2 on errors
(server unreachable or not ready, bad dataset or export, malformed answers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gallery.ingest.cli import add_ingest_parser
from gallery.ingest.dataset_cli import add_dataset_parser
from reid.clihelp import HelpFormatter
from reid_client import ReIDClient, ReIDGrpcClient, ServerError
from reid_client.schemas import ModelInfo

if TYPE_CHECKING:
    from gallery.evaluate import Evaluation, SearchBackend

DESCRIPTION = "Tools that work against a running search server."
EVALUATE_DESCRIPTION = (
    "Upload the dataset's gallery through the API, search every query, evaluate the "
    "returned rankings and compare with the offline numbers of the export. Exit status: "
    "0 when the served numbers match the offline ones within 1e-4 (or there is no offline "
    "reference), 1 when they differ by more, 2 on errors."
)


class CliError(RuntimeError):
    """A user-facing error; printed without a traceback, exit status 2."""


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``evaluate`` and its options."""
    p = subparsers.add_parser(
        "evaluate",
        help="CMC/mAP/mINP of a dataset through the served API, compared with offline",
        description=EVALUATE_DESCRIPTION,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--server", required=True, help="HTTP base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--data", required=True, help="dataset spec FORMAT:PATH")
    p.add_argument("--grpc", metavar="HOST:PORT", help="send the queries over gRPC instead")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument(
        "--save-json", metavar="PATH", help="also write that JSON object to PATH (any output mode)"
    )
    p.add_argument(
        "--report",
        metavar="DIR",
        help="write a self-contained HTML report (model and checkpoint hash, CMC, camera "
        "pairs, worst queries, rank lists) to DIR/index.html, or to DIR itself when it "
        "ends in .html",
    )
    p.add_argument(
        "--model",
        metavar="EXPORT_DIR",
        help="export for the offline reference (when not given: model.export_dir of GET "
        "/v1/model, which the server reports when started with --expose-export-dir)",
    )
    p.add_argument("--no-offline", action="store_true", help="skip the offline reference")
    p.add_argument("--runtime", default="onnxruntime", help="offline runtime")
    p.add_argument("--device", default="cpu", help="offline device: cpu, cuda or auto")
    p.add_argument("--batch", type=int, default=32, help="images per request")
    p.add_argument(
        "--k",
        type=int,
        help="truncated mode: ask for the top K only (when not given: the full ranking)",
    )
    p.add_argument(
        "--api-key",
        help="X-API-Key for gallery writes (default: $REID_API_KEY)",
    )
    p.add_argument(
        "--keep-gallery", action="store_true", help="leave the uploaded gallery on the server"
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for /readyz")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--worst",
        type=int,
        default=10,
        metavar="N",
        help="with --report: how many of the worst queries (lowest AP) to show",
    )
    p.set_defaults(handler=run_evaluate)


def request_batch(wanted: int, info: ModelInfo, log: Callable[[str], None]) -> int:
    """``wanted``, lowered to the server's ``limits.max_images`` when that is smaller."""
    limit = info.limits.max_images
    if 0 < limit < wanted:
        log(f"The server takes at most {limit} images per request; using --batch {limit}.")
        return limit
    return wanted


def _offline_model(args: argparse.Namespace, info: ModelInfo) -> Any:
    from reid.manifest import ManifestError
    from reid.runtimes import RuntimeUnavailableError, load_runtime

    served_dir = info.model.export_dir
    export = Path(args.model) if args.model else Path(served_dir) if served_dir else None
    if export is None:
        raise CliError(
            "the offline reference needs the export directory: pass --model EXPORT_DIR "
            "(this server does not report its own; start it with --expose-export-dir to "
            "allow that), or --no-offline"
        )
    try:
        runtime = load_runtime(export, args.runtime, device=args.device)
    except (ManifestError, RuntimeUnavailableError, ValueError) as exc:
        raise CliError(
            f"cannot open the export {export} for the offline reference: {exc}"
        ) from None
    check_same_export(runtime.manifest.source.get("sha256"), info, export)
    return runtime


def check_same_export(local_sha256: str | None, info: ModelInfo, export: Path) -> None:
    """Refuse an offline reference built from another checkpoint than the served one."""
    served = info.model.checkpoint_sha256
    if served and local_sha256 and served != local_sha256:
        raise CliError(
            f"--model {export} was exported from checkpoint {local_sha256[:12]}, but the "
            f"server serves one exported from {served[:12]}: the offline reference must "
            "be the served export"
        )


def _backend(args: argparse.Namespace, client: ReIDClient, stack: ExitStack) -> SearchBackend:
    """The HTTP client, or with ``--grpc`` the searches over gRPC and the writes over HTTP."""
    if not args.grpc:
        return client
    from gallery.evaluate import GrpcQueries

    grpc = stack.enter_context(
        ReIDGrpcClient(args.grpc, api_key=args.api_key, timeout=args.timeout)
    )
    return GrpcQueries(client, grpc)


def format_text(evaluation: Evaluation) -> str:
    """The served / offline tables and the verdict, as printed by ``evaluate``."""
    lines = [f"Served ({evaluation.mode}{f', k={evaluation.k}' if evaluation.k else ''}):"]
    lines.append(evaluation.served.format_table())
    if evaluation.offline is not None:
        lines += ["", "Offline (same export and runtime, same ranking mode):"]
        lines.append(evaluation.offline.format_table())
    if evaluation.offline_full is not None:
        lines += ["", "Offline, full ranking:", evaluation.offline_full.format_table()]
    if evaluation.diff:
        diffs = ", ".join(f"{name} {value:.2e}" for name, value in evaluation.diff.items())
        verdict = "OK" if evaluation.passed else "FAILED"
        lines += ["", f"|served - offline|: {diffs} -> {verdict} (tolerance 1e-4)"]
    lines += [f"note: {note}" for note in evaluation.notes]
    return "\n".join(lines)


def run_evaluate(args: argparse.Namespace) -> int:
    """The ``evaluate`` subcommand; returns the exit status."""
    from gallery.evaluate import evaluate_served
    from gallery.report import ReportSource, write_report
    from reid.data import load_dataset
    from reid.data.base import DatasetError

    if args.batch < 1 or (args.k is not None and args.k < 1):
        raise CliError("--batch and --k must be >= 1")
    if args.api_key is None:
        args.api_key = os.environ.get("REID_API_KEY")
    log: Callable[[str], None] = (lambda m: print(m, file=sys.stderr)) if args.json else print
    try:
        dataset = load_dataset(args.data)
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    with ExitStack() as stack:
        client = stack.enter_context(
            ReIDClient(args.server, api_key=args.api_key, timeout=args.timeout)
        )
        client.wait_ready(timeout=args.ready_timeout)
        info = client.model_info()
        offline = None if args.no_offline else _offline_model(args, info)
        evaluation = evaluate_served(
            _backend(args, client, stack),
            dataset,
            offline_model=offline,
            k=args.k,
            batch=request_batch(args.batch, info, log),
            keep_gallery=args.keep_gallery,
            progress=not args.no_progress,
            log=log,
        )
    report = None
    if args.report:
        source = ReportSource(
            dataset_spec=args.data,
            server=args.server,
            model=info,
            offline_export=None
            if args.no_offline
            else str(args.model or info.model.export_dir or ""),
        )
        report = write_report(evaluation, dataset, args.report, source=source, num_worst=args.worst)
    out = evaluation.to_dict()
    out["report"] = str(report) if report else None
    if args.save_json:
        Path(args.save_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save_json).write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(format_text(evaluation))
        if report:
            print(f"\nReport: {report}")
    return 0 if evaluation.passed else 1


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m gallery`` parser (one subparser per tool)."""
    parser = argparse.ArgumentParser(
        prog="python -m gallery", description=DESCRIPTION, formatter_class=HelpFormatter
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_evaluate_parser(subparsers)
    add_ingest_parser(subparsers, CliError)
    add_dataset_parser(subparsers, CliError)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and map expected failures to a one-line error and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (CliError, ServerError, RuntimeError, ValueError, OSError) as exc:
        print(f"python -m gallery {args.command}: error: {exc}", file=sys.stderr)
        return 2
