"""Real images for the parity gate and INT8 calibration, through ``reid.preprocess``.

Images are read with ``reid.data.io.read_image_rgb`` and prepared with
``reid.preprocess.preprocess_batch`` using the manifest's settings: the same path
the trainer's evaluation and the server use.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.errors import ExportError
from reid.data import DatasetError, ImageRecord, label_arrays, load_dataset
from reid.data.io import read_image_rgb
from reid.preprocess import PreprocessConfig, preprocess_batch

DEFAULT_MAX_IMAGES = 400
DEFAULT_SYNTHETIC_IDS = 10


@dataclass
class GateImages:
    """Preprocessed images of a query set and a gallery set (or unlabeled images only)."""

    description: str
    images: np.ndarray  # float32[N, 3, H, W]: queries first, then gallery
    num_query: int
    q_pids: np.ndarray | None = None
    g_pids: np.ndarray | None = None
    q_camids: np.ndarray | None = None
    g_camids: np.ndarray | None = None

    @property
    def can_rank(self) -> bool:
        """Whether CMC/mAP can be computed (labeled query and gallery images)."""
        return self.q_pids is not None and self.num_query > 0 and len(self) > self.num_query

    def __len__(self) -> int:
        return len(self.images)


def read_batch(records: Sequence[ImageRecord], config: PreprocessConfig) -> np.ndarray:
    """Read and preprocess records into ``float32[N, 3, H, W]``."""
    return preprocess_batch([read_image_rgb(r.path) for r in records], config)


def spread(records: Sequence[ImageRecord], count: int) -> list[ImageRecord]:
    """At most ``count`` records, evenly spaced over the (sorted) list, deterministic."""
    if count >= len(records):
        return list(records)
    picks = np.linspace(0, len(records) - 1, num=max(count, 0)).round().astype(int)
    return [records[i] for i in picks]


def select_eval_records(
    query: Sequence[ImageRecord], gallery: Sequence[ImageRecord], max_images: int
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Bound query + gallery to ``max_images``, keeping the chosen queries' matches first."""
    total = len(query) + len(gallery)
    if total <= max_images:
        return list(query), list(gallery)
    n_query = max(1, round(max_images * len(query) / total))
    chosen = spread(sorted(query, key=lambda r: str(r.path)), n_query)
    pids = {r.pid for r in chosen}
    matches = [r for r in gallery if r.pid in pids]
    others = [r for r in gallery if r.pid not in pids]
    n_gallery = max_images - len(chosen)
    kept = spread(matches, n_gallery)
    kept += spread(others, n_gallery - len(kept))
    return chosen, kept


def load_gate_images(
    spec: str, config: PreprocessConfig, max_images: int = DEFAULT_MAX_IMAGES
) -> GateImages:
    """Query + gallery images of dataset ``spec`` (or any images when it has no such splits)."""
    try:
        dataset = load_dataset(spec)
        if dataset.has_evaluation_splits:
            query, gallery = select_eval_records(dataset.query, dataset.gallery, max_images)
            q_pids, q_camids = label_arrays(query)
            g_pids, g_camids = label_arrays(gallery)
            images = read_batch([*query, *gallery], config)
            text = f"{spec} ({len(query)} query + {len(gallery)} gallery images)"
            return GateImages(text, images, len(query), q_pids, g_pids, q_camids, g_camids)
        records = spread(dataset.train, max_images)
        if not records:
            raise ExportError(f"dataset {spec} has no images")
        images = read_batch(records, config)
        return GateImages(f"{spec} ({len(records)} images, no query/gallery)", images, 0)
    except DatasetError as exc:
        raise ExportError(f"gate data {spec}: {exc}") from None


def calibration_records(spec: str, count: int) -> list[ImageRecord]:
    """Up to ``count`` records of ``spec`` for INT8 calibration (train split first)."""
    try:
        dataset = load_dataset(spec)
    except DatasetError as exc:
        raise ExportError(f"calibration data {spec}: {exc}") from None
    records = dataset.train or [*dataset.query, *dataset.gallery]
    if not records:
        raise ExportError(f"calibration data {spec} has no images")
    return spread(sorted(records, key=lambda r: str(r.path)), count)


@contextlib.contextmanager
def synthetic_gate_data(config: PreprocessConfig) -> Iterator[str]:
    """Generate a small synthetic query/gallery set at the model's input size in a temp dir.

    Yields its dataset spec; the directory is removed afterwards. Used when no
    ``--data`` is given: 10 test identities seen by 3 cameras (~90 images).
    """
    from reid.data.synthetic.generate import GeneratorParams, generate

    height = min(max(config.height, 16), 1024)
    width = min(max(config.width, 8), 1024)
    params = GeneratorParams(
        ids_train=0,
        ids_test=DEFAULT_SYNTHETIC_IDS,
        cameras=3,
        seed=0,
        height=height,
        width=width,
        images_per_id=8.0,
    )
    with tempfile.TemporaryDirectory(prefix="reid-export-gate-") as tmp:
        out = Path(tmp) / "synthetic"
        generate(out, params)
        yield f"synthetic:{out}"
