"""MSMT17 (V1 or V2), read from its list files.

Layout (``ROOT`` may also hold a single ``MSMT17*`` folder)::

    ROOT/list_train.txt  ROOT/list_val.txt  ROOT/list_query.txt  ROOT/list_gallery.txt
    ROOT/train/  ROOT/test/                        (V1)
    ROOT/mask_train_v2/  ROOT/mask_test_v2/        (V2)

Each list line reads ``0000/0000_000_01_0303morning_0015_0.jpg 0``: a path relative to
the image folder and the identity. ``list_train`` and ``list_val`` refer to the train
folder, ``list_query`` and ``list_gallery`` to the test folder.

* **Train = list_train + list_val**, the common practice (val holds further images
  of the train identities).
* **Identities are shifted by one**: MSMT17 numbers people from ``0``, but ``0``
  marks a distractor in this library, so list pid ``k`` becomes ``k + 1``. MSMT17 has
  no junk or distractor images.
* The camera is the third ``_`` field of the file name (``_01_`` -> camid 0; 15
  cameras). The file names carry no frame number this loader relies on, so
  ``frame`` is ``None``.
* Every listed file must exist; missing files are an error naming the first ones.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from reid.data.base import DatasetError, ImageRecord, ReIDDataset
from reid.data.market1501 import find_dataset_root, require

LIST_FILES = {
    "train": ("list_train.txt", "list_val.txt"),
    "query": ("list_query.txt",),
    "gallery": ("list_gallery.txt",),
}
IMAGE_FOLDERS = {"V1": ("train", "test"), "V2": ("mask_train_v2", "mask_test_v2")}
LINE_FORM = "'RELATIVE/PATH.jpg PID' (for example '0000/0000_000_01_0303morning_0015_0.jpg 0')"
LAYOUT = (
    "an MSMT17 folder with list_train.txt, list_val.txt, list_query.txt, list_gallery.txt "
    "and the image folders train/ + test/ (V1) or mask_train_v2/ + mask_test_v2/ (V2) "
    "(or a folder holding a single MSMT17* folder)"
)
MAX_MISSING_SHOWN = 5
_DIGITS = re.compile(r"[0-9]+")


def load_msmt17(root: str | Path) -> ReIDDataset:
    """Load MSMT17 V1 or V2 from ``root`` (see the module docstring for the rules)."""
    list_names = tuple(name for names in LIST_FILES.values() for name in names)
    root = find_dataset_root(root, markers=list_names, subfolder_prefix="MSMT17", layout=LAYOUT)
    require(root, list_names, LAYOUT)
    train_dir, test_dir = (root / name for name in _image_folders(root))
    dataset = ReIDDataset(name="msmt17", root=root)
    for split, names in LIST_FILES.items():
        image_dir = train_dir if split == "train" else test_dir
        existing = _relative_files(image_dir)
        records = []
        for name in names:
            records += _read_list(root / name, image_dir, existing)
        records.sort(key=lambda r: str(r.path))
        setattr(dataset, split, records)
    return dataset


def _image_folders(root: Path) -> tuple[str, str]:
    """The (train, test) image folder names present under ``root``: V1 first, then V2."""
    for folders in IMAGE_FOLDERS.values():
        if all((root / f).is_dir() for f in folders):
            return folders
    found = [f for folders in IMAGE_FOLDERS.values() for f in folders if (root / f).is_dir()]
    found_text = ", ".join(f + "/" for f in found) if found else "none of them"
    raise DatasetError(
        f"{root}: missing the MSMT17 image folders (found {found_text}); expected "
        "train/ + test/ (V1) or mask_train_v2/ + mask_test_v2/ (V2)"
    )


def _relative_files(folder: Path) -> set[str]:
    """Every file under ``folder`` as a ``/``-separated path relative to it."""
    files = set()
    for dirpath, _, filenames in os.walk(folder):
        rel = PurePosixPath(Path(dirpath).relative_to(folder).as_posix())
        files.update(str(rel / name) for name in filenames)
    return files


def _read_list(list_path: Path, image_dir: Path, existing: set[str]) -> list[ImageRecord]:
    """Parse one list file; malformed lines and missing images are errors."""
    records, missing = [], []
    try:
        text = list_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{list_path}: cannot read the list file ({exc})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        rel, pid = _parse_line(line, list_path, lineno)
        camid = _camera(rel, list_path, lineno)
        if str(PurePosixPath(rel)) not in existing:
            missing.append(rel)
            continue
        records.append(ImageRecord(path=image_dir / rel, pid=pid + 1, camid=camid))
    if missing:
        shown = ", ".join(missing[:MAX_MISSING_SHOWN])
        raise DatasetError(
            f"{list_path}: {len(missing)} listed image(s) missing under {image_dir} "
            f"(first: {shown})"
        )
    return records


def _parse_line(line: str, list_path: Path, lineno: int) -> tuple[str, int]:
    fields = line.split()
    if len(fields) != 2 or not _DIGITS.fullmatch(fields[1]):
        raise DatasetError(f"{list_path}:{lineno}: expected {LINE_FORM}, got {line.strip()!r}")
    return fields[0], int(fields[1])


def _camera(rel: str, list_path: Path, lineno: int) -> int:
    """0-based camera from the third ``_`` field of the file name (``_01_`` -> 0)."""
    fields = PurePosixPath(rel).stem.split("_")
    if len(fields) < 3 or not _DIGITS.fullmatch(fields[2]) or int(fields[2]) < 1:
        raise DatasetError(
            f"{list_path}:{lineno}: file name {PurePosixPath(rel).name!r} does not follow the "
            "MSMT17 convention PPPP_NNN_CC_... with a 1-based camera as the third field "
            "(for example 0000_000_01_0303morning_0015_0.jpg)"
        )
    return int(fields[2]) - 1
