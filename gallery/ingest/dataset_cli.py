"""``python -m gallery dataset VIDEO --out DIR``: a re-ID dataset cut from a real video
(see :mod:`gallery.ingest.dataset`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from reid.clihelp import HelpFormatter, plain_text


def add_dataset_parser(subparsers: argparse._SubParsersAction, fail: type[Exception]) -> None:
    """Register ``dataset`` and its options; ``fail`` is the CLI's user-facing error."""
    from gallery.ingest import dataset

    defaults = dataset.DatasetSettings()
    p = subparsers.add_parser(
        "dataset",
        help="a video -> a Market-1501-layout re-ID set (tracks as identities)",
        description=plain_text(dataset.__doc__ or ""),
        formatter_class=HelpFormatter,
    )
    p.add_argument("source", help="a video file or an image folder")
    p.add_argument("--out", required=True, help="new (or empty) folder to write")
    p.add_argument("--cameras", type=int, default=defaults.cameras, help="pseudo-cameras")
    p.add_argument("--fps", type=float, default=defaults.fps, help="frames per second kept")
    p.add_argument(
        "--crops-per-camera",
        type=int,
        default=defaults.crops_per_camera,
        help="best crops kept per track and pseudo-camera",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=defaults.test_fraction,
        help="share of the cross-camera identities in the test split",
    )
    p.add_argument("--seed", type=int, default=defaults.seed, help="train/test split seed")
    p.add_argument("--min-score", type=float, default=0.5, help="detector confidence kept")
    p.add_argument("--tracker", default="bytetrack", help="bytetrack or sort")
    p.set_defaults(handler=lambda args: run_dataset(args, fail))


def run_dataset(args: argparse.Namespace, fail: type[Exception]) -> int:
    """The ``dataset`` subcommand; prints the summary as JSON and returns 0."""
    from pathlib import Path

    from gallery.ingest.dataset import DatasetSettings, build_dataset
    from gallery.ingest.detector import DetectorError, SSDLitePedestrianDetector
    from gallery.ingest.sources import SourceError, is_live, open_source
    from gallery.ingest.tracker import TRACKERS, PersonTracker

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    if is_live(args.source):
        raise fail("a dataset is cut from a file or folder, not a live stream")
    if args.tracker not in TRACKERS:
        raise fail(f"--tracker must be one of {', '.join(TRACKERS)}")
    if args.cameras < 2:
        raise fail("a cross-camera set needs at least 2 pseudo-cameras (--cameras)")
    if args.crops_per_camera < 2:
        raise fail("--crops-per-camera must be >= 2 (a query and a gallery image)")
    settings = DatasetSettings(
        cameras=args.cameras,
        fps=args.fps,
        crops_per_camera=args.crops_per_camera,
        test_fraction=args.test_fraction,
        seed=args.seed,
    )
    try:
        source = open_source(args.source)
        detector = SSDLitePedestrianDetector(min_score=args.min_score)
    except (SourceError, DetectorError) as exc:
        raise fail(str(exc)) from None
    tracker = PersonTracker(args.tracker, fps=args.fps)
    summary = build_dataset(source, detector, tracker, Path(args.out), settings)
    counts = {"identities": summary.identities, "images": summary.images}
    print(json.dumps({**counts, "label_noise": summary.label_noise, "out": args.out}, indent=2))
    return 0
