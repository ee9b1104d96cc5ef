"""Market-1501 and every dataset stored in its folder layout.

Layout (``ROOT`` may also be a folder holding exactly one ``Market-1501*`` folder)::

    ROOT/bounding_box_train/0002_c1s1_000451_03.jpg   -> train
    ROOT/bounding_box_test/...                         -> gallery
    ROOT/query/...                                     -> query

A name reads ``PPPP_cCsS_FFFFFF_BB.jpg``: identity (4 digits, or ``-1`` for junk;
``0000`` is a distractor), camera ``C`` (1-based), sequence ``S``, frame number and
box index. Rules shared by every loader of this layout:

* Only ``*.jpg``, ``*.jpeg`` and ``*.png`` files are images. Other files (such as
  ``Thumbs.db``) and sub-folders are skipped and counted in ``dataset.dropped``.
* An image whose name breaks the convention is an error naming the file.
* Junk and distractor images are dropped from *train* (counted in ``dropped``) and
  kept in query and gallery, where the evaluation protocol handles them.
* Records are sorted by path.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from reid.data.base import (
    DISTRACTOR_PID,
    JUNK_PID,
    DatasetError,
    ImageRecord,
    ReIDDataset,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SPLIT_FOLDERS = (
    ("train", "bounding_box_train"),
    ("query", "query"),
    ("gallery", "bounding_box_test"),
)


@dataclass(frozen=True)
class NamingConvention:
    """How one dataset encodes identity, camera and frame in its image file names.

    ``pattern`` must define the named groups ``pid``, ``cam`` (1-based) and ``frame``.
    """

    dataset: str
    pattern: re.Pattern[str]
    form: str
    example: str

    def parse(self, path: Path) -> ImageRecord:
        """The record for ``path``; a ``DatasetError`` naming the file if it does not match."""
        match = self.pattern.fullmatch(path.stem)
        if match is None:
            raise DatasetError(
                f"{path}: file name does not follow the {self.dataset} convention "
                f"{self.form}; for example {self.example}"
            )
        return ImageRecord(
            path=path,
            pid=int(match["pid"]),
            camid=int(match["cam"]) - 1,
            frame=int(match["frame"]),
        )


MARKET1501_NAMES = NamingConvention(
    dataset="Market-1501",
    pattern=re.compile(
        r"(?P<pid>-1|\d{4})_c(?P<cam>[1-9]\d*)s[1-9]\d*_(?P<frame>\d{6})_\d{2}", re.ASCII
    ),
    form="PPPP_cCsS_FFFFFF_BB.jpg (pid 4 digits or -1, camera c1, c2, ..., sequence s1, s2, ..., "
    "6-digit frame, 2-digit box index)",
    example="0002_c1s1_000451_03.jpg",
)


def find_dataset_root(
    root: str | Path, *, markers: tuple[str, ...], subfolder_prefix: str | None, layout: str
) -> Path:
    """The folder holding the dataset: ``root`` itself or its single ``subfolder_prefix*`` child.

    ``root`` is used as-is when it contains any of ``markers`` (the files or folders
    the format expects). Otherwise exactly one sub-folder whose name starts with
    ``subfolder_prefix`` is accepted (none when it is ``None``). ``layout`` describes
    the expected layout for error messages.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DatasetError(f"{root}: dataset folder {what}; expected {layout}")
    if subfolder_prefix is None or any((root / marker).exists() for marker in markers):
        return root
    candidates = sorted(
        child
        for child in root.iterdir()
        if child.is_dir() and child.name.startswith(subfolder_prefix)
    )
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        names = ", ".join(c.name for c in candidates)
        raise DatasetError(
            f"{root}: several {subfolder_prefix}* folders ({names}); "
            "point the spec at the one to use"
        )
    return root  # the caller reports which of the expected entries is missing


def require(root: Path, names: tuple[str, ...], layout: str) -> None:
    """Raise a ``DatasetError`` naming the first of ``names`` missing under ``root``."""
    for name in names:
        if not (root / name).exists():
            raise DatasetError(f"{root}: missing {name!r}; expected {layout}")


def scan_images(
    folder: Path, split: str, convention: NamingConvention, dropped: dict[str, int]
) -> list[ImageRecord]:
    """Parse every image in ``folder`` (not recursive), sorted by path.

    Files that are not images and sub-folders are counted in ``dropped``.
    """
    records = []
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise DatasetError(f"{folder}: cannot list the {split} images ({exc})") from None
    for entry in entries:
        if entry.is_dir():
            _count(dropped, f"{split}: sub-folder ignored")
        elif Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
            suffixes = "/".join("*" + s for s in IMAGE_SUFFIXES)
            _count(dropped, f"{split}: not an image file (only {suffixes} are read)")
        else:
            records.append(convention.parse(folder / entry.name))
    records.sort(key=lambda r: str(r.path))
    return records


def drop_unusable_train(records: list[ImageRecord], dropped: dict[str, int]) -> list[ImageRecord]:
    """Train without junk and distractor images; what was dropped is counted."""
    kept = []
    for record in records:
        if record.pid == JUNK_PID:
            _count(dropped, f"train: junk (pid {JUNK_PID})")
        elif record.pid == DISTRACTOR_PID:
            _count(dropped, f"train: distractor (pid {DISTRACTOR_PID})")
        else:
            kept.append(record)
    return kept


def load_market_layout(
    root: str | Path,
    *,
    name: str,
    convention: NamingConvention,
    subfolder_prefix: str | None,
) -> ReIDDataset:
    """Read a dataset stored in the Market-1501 folder layout with the given naming.

    ``subfolder_prefix``: the name prefix of the single sub-folder accepted in place of
    the dataset folder itself (``None``: the dataset must be at ``root``).
    """
    folders = tuple(folder for _, folder in SPLIT_FOLDERS)
    layout = f"a {convention.dataset} folder with {', '.join(f + '/' for f in folders)}"
    if subfolder_prefix is not None:
        layout += f" (or a folder holding a single {subfolder_prefix}* folder)"
    root = find_dataset_root(
        root, markers=folders, subfolder_prefix=subfolder_prefix, layout=layout
    )
    require(root, folders, layout)
    dataset = ReIDDataset(name=name, root=root)
    for split, folder in SPLIT_FOLDERS:
        records = scan_images(root / folder, split, convention, dataset.dropped)
        if split == "train":
            records = drop_unusable_train(records, dataset.dropped)
        setattr(dataset, split, records)
    return dataset


def load_market1501(root: str | Path) -> ReIDDataset:
    """Load Market-1501 from ``root`` (see the module docstring for the rules)."""
    return load_market_layout(
        root, name="market1501", convention=MARKET1501_NAMES, subfolder_prefix="Market-1501"
    )


SYNTHETIC_GENERATOR = "reid.data.synthetic"


def load_synthetic(root: str | Path) -> ReIDDataset:
    """Load the output of ``python -m reid.data.synthetic OUT``.

    That is the Market-1501 layout plus ``OUT/meta.json`` whose ``"generator"`` is
    ``"reid.data.synthetic"``; the file is checked so that an arbitrary folder is not
    mistaken for generated data.
    """
    root = Path(root).expanduser().absolute()
    hint = f"generate it with: python -m reid.data.synthetic {root}"
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise DatasetError(f"{meta_path}: not found, so {root} is not a synthetic dataset; {hint}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{meta_path}: unreadable ({exc}); {hint}") from None
    generator = meta.get("generator") if isinstance(meta, dict) else None
    if generator != SYNTHETIC_GENERATOR:
        raise DatasetError(
            f'{meta_path}: expected "generator": "{SYNTHETIC_GENERATOR}", '
            f"found {generator!r}; {hint}"
        )
    return load_market_layout(
        root, name="synthetic", convention=MARKET1501_NAMES, subfolder_prefix=None
    )


def _count(dropped: dict[str, int], reason: str) -> None:
    dropped[reason] = dropped.get(reason, 0) + 1
