"""Fakes for server tests: a deterministic runtime and an in-memory gallery.

``ColourRuntime`` embeds an image by its mean colour per channel, projected to D
dimensions, so a red query is closest to red gallery crops. ``MemoryGallery``
implements the ``reid.gallery.Gallery`` contract in memory (cosine, filters, thumbnails).
"""

from __future__ import annotations

import io
import threading
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from reid.gallery import Entry, EntryMetadata, EntryPage, GalleryError, Match, SearchFilters
from reid.manifest import ExportManifest
from reid.preprocess import PreprocessConfig
from reid.runtimes import Runtime

DIM = 8


def fake_manifest(dim: int = DIM) -> ExportManifest:
    return ExportManifest(
        model_name="colour-fake",
        embedding_dim=dim,
        preprocess=PreprocessConfig(height=32, width=16),
        files={},
        batch={"min": 1, "opt": 8, "max": 64},
    )


class ColourRuntime(Runtime):
    """Mean colour -> fixed projection -> L2 normalised ``float32[N, dim]``."""

    name = "fake"

    def __init__(self, dim: int = DIM, delay: float = 0.0) -> None:
        super().__init__(fake_manifest(dim), device="cpu")
        rng = np.random.default_rng(0)
        self.projection = rng.standard_normal((4, dim)).astype(np.float32)
        self.delay = delay
        self.calls: list[int] = []  # batch size of every call
        self.lock = threading.Lock()

    def _embed(self, images: np.ndarray) -> np.ndarray:
        import time

        with self.lock:
            self.calls.append(len(images))
        if self.delay:
            time.sleep(self.delay)
        if np.any(images[:, 0] > 100):  # a "poison" pixel value the tests use
            raise ValueError("poisoned input")
        means = images.mean(axis=(2, 3))
        feats = np.concatenate([means, np.ones((len(images), 1), np.float32)], axis=1)
        out = feats @ self.projection
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class MemoryGallery:
    """In-memory stand-in for ``reid.gallery.Gallery`` (same method names and semantics)."""

    def __init__(self, dim: int = DIM, directory: Path | None = None) -> None:
        self.dim = dim
        self.directory = directory
        self.vectors: dict[int, np.ndarray] = {}
        self.meta: dict[int, EntryMetadata] = {}
        self.thumbs: dict[int, Path] = {}
        self.next_id = 1
        self.closed = False
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.vectors)

    def is_available(self) -> bool:
        return not self.closed

    def add(self, embeddings, metadata, thumbnails=None) -> np.ndarray:
        embeddings = np.asarray(embeddings, np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise GalleryError(f"expected [N, {self.dim}] embeddings")
        ids = []
        with self.lock:
            for i, (vec, meta) in enumerate(zip(embeddings, metadata, strict=True)):
                entry_id, self.next_id = self.next_id, self.next_id + 1
                self.vectors[entry_id] = vec / np.linalg.norm(vec)
                self.meta[entry_id] = meta
                if thumbnails is not None and thumbnails[i] is not None and self.directory:
                    path = self.directory / f"{entry_id}.jpg"
                    path.write_bytes(thumbnails[i])
                    self.thumbs[entry_id] = path
                ids.append(entry_id)
        return np.asarray(ids, dtype=np.int64)

    def delete(self, ids):
        deleted, missing = [], []
        with self.lock:
            for entry_id in ids:
                if self.vectors.pop(entry_id, None) is None:
                    missing.append(entry_id)
                else:
                    self.meta.pop(entry_id)
                    self.thumbs.pop(entry_id, None)
                    deleted.append(entry_id)
        return deleted, missing

    def _passes(self, meta: EntryMetadata, f: SearchFilters) -> bool:
        if meta.camera is not None and meta.camera in f.exclude_cameras:
            return False
        if f.include_cameras is not None and meta.camera not in f.include_cameras:
            return False
        if f.time_from is not None and (meta.timestamp is None or meta.timestamp < f.time_from):
            return False
        return not (
            f.time_to is not None and (meta.timestamp is None or meta.timestamp > f.time_to)
        )

    def search(self, queries, k=10, filters=None):
        filters = filters or SearchFilters()
        with self.lock:
            items = [(i, v) for i, v in self.vectors.items() if self._passes(self.meta[i], filters)]
            results = []
            for query in np.asarray(queries, np.float32):
                query = query / np.linalg.norm(query)
                scored = sorted(((float(v @ query), i) for i, v in items), reverse=True)
                if filters.min_score is not None:
                    scored = [(sc, i) for sc, i in scored if sc >= filters.min_score]
                if k is not None:
                    scored = scored[:k]
                results.append([Match(i, sc, self.meta[i], i in self.thumbs) for sc, i in scored])
        return results

    def get(self, ids):
        return [
            Entry(i, self.meta[i], i in self.thumbs, 0.0) if i in self.meta else None for i in ids
        ]

    def page(self, offset=0, limit=50, *, cameras=None, time_from=None, time_to=None):
        filters = SearchFilters(
            include_cameras=None if cameras is None else frozenset(cameras),
            time_from=time_from,
            time_to=time_to,
        )
        with self.lock:
            ids = sorted(i for i, meta in self.meta.items() if self._passes(meta, filters))
        chosen = ids[offset : offset + limit]
        entries = [e for e in self.get(chosen) if e is not None]
        return EntryPage(entries=entries, total=len(ids), offset=offset, limit=limit)

    def embeddings(self, ids):
        with self.lock:
            if any(int(i) not in self.vectors for i in ids):
                raise GalleryError("some of the requested ids do not exist")
            return np.array([self.vectors[int(i)] for i in ids], np.float32).reshape(-1, self.dim)

    def thumbnail_path(self, entry_id):
        return self.thumbs.get(entry_id)

    def stats(self) -> dict:
        """The keys ``Gallery.stats`` reports (the server reads them as ``GalleryStats``)."""
        with self.lock:
            cameras = Counter(m.camera for m in self.meta.values() if m.camera is not None)
            times = [m.timestamp for m in self.meta.values() if m.timestamp is not None]
            return {
                "size": len(self.vectors),
                "dim": self.dim,
                "index": "flat",
                "index_requested": "flat",
                "cameras": dict(sorted(cameras.items())),
                "time_range": [min(times), max(times)] if times else None,
                "with_thumbnails": len(self.thumbs),
                "directory": None if self.directory is None else str(self.directory),
            }

    def close(self) -> None:
        self.closed = True


def image_bytes(colour=(255, 0, 0), size=(16, 32), fmt: str = "PNG") -> bytes:
    """An encoded solid-colour image (``size`` is width, height)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()
