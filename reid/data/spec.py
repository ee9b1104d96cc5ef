"""Dataset spec strings (``FORMAT:PATH``) and the closed set of formats they name.

Every command line takes a dataset as one string, for example
``market1501:/data/Market-1501`` or ``folder:runs/cams/manifest.csv``. ``~`` is
expanded and relative paths are read from the current directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reid.data.base import DatasetError, ReIDDataset
from reid.data.dukemtmc import load_dukemtmc
from reid.data.folder import load_folder
from reid.data.market1501 import load_market1501, load_synthetic
from reid.data.msmt17 import load_msmt17

Loader = Callable[[Path], ReIDDataset]

DATASET_FORMATS: dict[str, Loader] = {
    "market1501": load_market1501,
    "dukemtmc": load_dukemtmc,
    "msmt17": load_msmt17,
    "folder": load_folder,
    "synthetic": load_synthetic,
}

FORMAT_LAYOUTS = {
    "market1501": "bounding_box_train/, bounding_box_test/, query/; names 0002_c1s1_000451_03.jpg",
    "dukemtmc": "bounding_box_train/, bounding_box_test/, query/; names 0001_c2_f0046182.jpg",
    "msmt17": "list_{train,val,query,gallery}.txt + train/,test/ (V1) or mask_*_v2/ (V2)",
    "folder": "a CSV manifest path,pid,camid[,timestamp][,frame][,split]; empty pid = unlabeled",
    "synthetic": "the output of python -m reid.data.synthetic OUT (Market layout + meta.json)",
}
"""One line per format describing what its path must hold (for help texts)."""

SPEC_FORM = "FORMAT:PATH, for example market1501:/data/Market-1501"


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec: the format name (a key of ``DATASET_FORMATS``) and the path."""

    format: str
    path: Path

    def __str__(self) -> str:
        return f"{self.format}:{self.path}"


def _valid_formats() -> str:
    return ", ".join(sorted(DATASET_FORMATS))


def parse_spec(spec: str | DatasetSpec) -> DatasetSpec:
    """Split ``FORMAT:PATH`` and check the format; ``DatasetError`` when malformed."""
    if isinstance(spec, DatasetSpec):
        return spec
    fmt, sep, path = str(spec).strip().partition(":")
    if not sep:
        raise DatasetError(
            f"dataset spec {spec!r} lacks ':' between format and path; expected {SPEC_FORM} "
            f"(formats: {_valid_formats()})"
        )
    fmt = fmt.strip().lower()
    if fmt not in DATASET_FORMATS:
        raise DatasetError(
            f"unknown dataset format {fmt!r} in spec {spec!r}; "
            f"valid formats: {_valid_formats()} (spec form {SPEC_FORM})"
        )
    if not path.strip():
        raise DatasetError(f"dataset spec {spec!r} has no path; expected {SPEC_FORM}")
    return DatasetSpec(format=fmt, path=Path(path.strip()).expanduser())


def load_dataset(spec: str | DatasetSpec) -> ReIDDataset:
    """Load the dataset a spec string names, e.g. ``load_dataset("market1501:~/data/market")``."""
    parsed = parse_spec(spec)
    return DATASET_FORMATS[parsed.format](parsed.path)
