"""Any image collection described by a CSV manifest.

``folder:/data/cams/manifest.csv`` (or ``folder:/data/cams``, meaning its
``manifest.csv``) reads a CSV file whose header row names the columns::

    path,pid,camid,timestamp,split
    cam1/000001.jpg,7,0,12.5,train
    cam2/000004.jpg,,1,13.0,train

* ``path`` (required): the image, relative to the manifest's folder (absolute paths
  are used as they are). Every image must exist.
* ``pid`` (required column): an integer identity; **empty means unlabeled**
  (``pid`` ``None``). ``-1`` marks junk and ``0`` a distractor, as in Market-1501.
* ``camid`` (required): a non-negative integer **used as given, not shifted**, so
  number cameras from 0.
* ``timestamp`` (optional): seconds as a float; ``frame`` (optional): an integer.
* ``split`` (optional): ``train``, ``query`` or ``gallery``; empty or absent means
  ``train``.

As with Market-1501, junk and distractor images are dropped from train (counted in
``dataset.dropped``) and kept in query and gallery. Unlabeled query or gallery images
are kept; evaluating on them fails later with a clear error. Records are sorted by
path. Errors name the manifest, the line number and the problem.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from reid.data.base import JUNK_PID, SPLITS, DatasetError, ImageRecord, ReIDDataset
from reid.data.market1501 import drop_unusable_train

MANIFEST_NAME = "manifest.csv"
REQUIRED_COLUMNS = ("path", "pid", "camid")
OPTIONAL_COLUMNS = ("timestamp", "frame", "split")
HEADER_FORM = "path,pid,camid[,timestamp][,frame][,split]"


def load_folder(path: str | Path) -> ReIDDataset:
    """Load the dataset described by a CSV manifest (or a folder's ``manifest.csv``)."""
    manifest = _manifest_path(Path(path).expanduser().absolute())
    dataset = ReIDDataset(name="folder", root=manifest.parent)
    splits: dict[str, list[ImageRecord]] = {split: [] for split in SPLITS}
    for split, record in _read_manifest(manifest):
        splits[split].append(record)
    for split, records in splits.items():
        records.sort(key=lambda r: str(r.path))
        if split == "train":
            records = drop_unusable_train(records, dataset.dropped)
        setattr(dataset, split, records)
    return dataset


def _manifest_path(path: Path) -> Path:
    if path.is_dir():
        path = path / MANIFEST_NAME
        if not path.is_file():
            raise DatasetError(
                f"{path}: not found; a folder dataset needs a CSV manifest with the header "
                f"{HEADER_FORM} (give its path, or the folder holding {MANIFEST_NAME})"
            )
    elif not path.is_file():
        raise DatasetError(
            f"{path}: manifest not found; expected a CSV file with header {HEADER_FORM}"
        )
    return path


def _read_manifest(manifest: Path) -> list[tuple[str, ImageRecord]]:
    """``(split, record)`` for every data row of ``manifest``."""
    try:
        with manifest.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            columns = _read_header(manifest, next(reader, None))
            rows = []
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue
                where = f"{manifest}:{reader.line_num}"
                if len(cells) != len(columns):
                    raise DatasetError(
                        f"{where}: expected {len(columns)} fields ({','.join(columns)}), "
                        f"got {len(cells)}"
                    )
                row = dict(zip(columns, (cell.strip() for cell in cells), strict=True))
                rows.append(_parse_row(row, manifest.parent, where))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{manifest}: not a readable UTF-8 CSV file ({exc})") from None
    return rows


def _read_header(manifest: Path, header: list[str] | None) -> list[str]:
    if header is None:
        raise DatasetError(f"{manifest}: empty; expected a header row {HEADER_FORM}")
    columns = [name.strip().lower() for name in header]
    where = f"{manifest}:1"
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DatasetError(
            f"{where}: header is missing column(s) {', '.join(missing)}; "
            f"expected a header row {HEADER_FORM}, got {','.join(header)!r}"
        )
    unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise DatasetError(
            f"{where}: unknown column(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}"
        )
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise DatasetError(f"{where}: column(s) {', '.join(repeated)} appear more than once")
    return columns


def _parse_row(row: dict[str, str], base: Path, where: str) -> tuple[str, ImageRecord]:
    if not row["path"]:
        raise DatasetError(f"{where}: empty path")
    image = base / row["path"]
    pid = _int(row, "pid", where, minimum=JUNK_PID, optional=True)
    camid = _int(row, "camid", where, minimum=0, optional=False)
    frame = _int(row, "frame", where, minimum=0, optional=True)
    timestamp = _timestamp(row.get("timestamp", ""), where)
    split = (row.get("split") or "train").lower()
    if split not in SPLITS:
        raise DatasetError(
            f"{where}: unknown split {row['split']!r}; expected one of {', '.join(SPLITS)}"
        )
    if not image.is_file():
        raise DatasetError(f"{where}: image file not found: {image}")
    return split, ImageRecord(path=image, pid=pid, camid=camid, frame=frame, timestamp=timestamp)


def _int(
    row: dict[str, str], column: str, where: str, *, minimum: int, optional: bool
) -> int | None:
    text = row.get(column, "")
    if not text:
        if optional:
            return None
        raise DatasetError(f"{where}: empty {column}; expected an integer >= {minimum}")
    try:
        value = int(text)
    except ValueError:
        raise DatasetError(
            f"{where}: {column} {text!r} is not an integer (expected >= {minimum})"
        ) from None
    if value < minimum:
        raise DatasetError(f"{where}: {column} {value} is out of range (expected >= {minimum})")
    return value


def _timestamp(text: str, where: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetError(f"{where}: timestamp {text!r} is not a finite number of seconds")
    return value
