"""Command line: ``python -m reid.data summary SPEC [SPEC ...] [--json]``.

``summary`` prints, for each dataset, the table of identities, images and cameras
per split (``--json``: one JSON document instead). ``formats`` lists the spec formats.
A dataset that cannot be read prints ``error: ...`` and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from reid.clihelp import HelpFormatter
from reid.data.base import DatasetError, ReIDDataset
from reid.data.spec import DATASET_FORMATS, FORMAT_LAYOUTS, SPEC_FORM, load_dataset


def _as_json(dataset: ReIDDataset) -> dict[str, object]:
    return {
        "name": dataset.name,
        "root": str(dataset.root),
        "splits": [asdict(s) for s in dataset.summaries()],
        "dropped": dict(sorted(dataset.dropped.items())),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reid.data",
        description="Inspect re-ID datasets: 'summary SPEC ...' prints each dataset's table "
        "of identities, images and cameras per split, 'formats' lists the spec formats.",
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser(
        "summary",
        help="print the split table of datasets",
        description="Print, for each dataset, the table of identities, images and cameras "
        "per split (--json: one JSON document instead). A dataset that cannot be read "
        "prints 'error: ...' and exits with status 1.",
        formatter_class=HelpFormatter,
    )
    summary.add_argument("specs", nargs="+", metavar="SPEC", help=f"dataset spec ({SPEC_FORM})")
    summary.add_argument(
        "--json",
        action="store_true",
        help="print JSON instead of tables (an object for one SPEC, a list for several)",
    )
    commands.add_parser(
        "formats",
        help="list the dataset spec formats",
        description="List the dataset spec formats (FORMAT:PATH) and their layouts.",
        formatter_class=HelpFormatter,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "formats":
        for name in DATASET_FORMATS:
            print(f"{name + ':PATH':<16} {FORMAT_LAYOUTS[name]}")
        return 0
    try:
        datasets = [load_dataset(spec) for spec in args.specs]
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        payload = [_as_json(d) for d in datasets]
        print(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
    else:
        print("\n\n".join(d.summary() for d in datasets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
