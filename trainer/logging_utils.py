"""Run logs: a CSV of every logged number, a progress bar, and plain log lines.

* :class:`CsvLog`: one row per record (``metrics.csv``: one per epoch with every
  loss term's mean, lr, cluster stats, throughput and eval metrics;
  ``steps.csv``: one per step). Columns are the union of all keys seen; when a new
  key appears the file is rewritten with the wider header, so columns that only
  exist in some epochs (evaluation) never break the file. ``truncate(n)`` drops
  rows written after a checkpoint so a resumed run does not duplicate them.
* :class:`Progress`: a tqdm bar per epoch with the loss terms and images/s, shown
  when stderr is a terminal (or forced); the loop also logs one plain line per
  epoch either way.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LOGGER_NAME = "trainer"


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def setup_logging(out_dir: Path | None, is_main: bool = True) -> logging.Logger:
    """Log ``INFO`` lines to stdout (and ``out_dir/train.log``) on the main process."""
    logger = get_logger()
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S")
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    if out_dir is not None and is_main:
        file_handler = logging.FileHandler(Path(out_dir) / "train.log", encoding="utf-8")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


class CsvLog:
    """Append-only CSV with a growing header (see module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.columns: list[str] = []
        self.rows: list[dict[str, str]] = []
        if self.path.is_file():
            with self.path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                self.columns = list(reader.fieldnames or [])
                self.rows = [dict(r) for r in reader]

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one row; new keys widen the header (and rewrite the file)."""
        text = {k: _format(v) for k, v in row.items()}
        new = [k for k in text if k not in self.columns]
        self.rows.append(text)
        if new or not self.path.is_file():
            self.columns.extend(new)
            self._rewrite()
            return
        with self.path.open("a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, self.columns).writerow(text)

    def truncate(self, num_rows: int) -> None:
        """Keep only the first ``num_rows`` rows (after a resume)."""
        if num_rows < len(self.rows):
            self.rows = self.rows[:num_rows]
            self._rewrite()

    def _rewrite(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def progress_enabled(setting: bool | str) -> bool:
    """``"auto"``: when stderr is a terminal; booleans force it."""
    if setting == "auto":
        return sys.stderr.isatty()
    return bool(setting)


class Progress:
    """A per-epoch tqdm bar showing loss terms and throughput (no-op when disabled)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def start(self, epoch: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)

    def update(self, values: Mapping[str, float]) -> None:
        if self._bar is None:
            return
        self._bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def format_values(values: Mapping[str, float]) -> str:
    """``"loss 1.23 ce 0.9 lr 3.5e-04"`` for log lines."""
    parts = []
    for key, value in values.items():
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        else:
            parts.append(f"{key} {value}")
    return " ".join(parts)
