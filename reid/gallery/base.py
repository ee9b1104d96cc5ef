"""``GalleryBackend``: the interface every gallery implementation satisfies.

``Gallery`` (FAISS + SQLite, one machine, one writer process) and ``MilvusGallery``
(a Milvus collection shared by any number of servers) both implement it; the server
only uses these methods. Array contracts are the FAISS gallery's: embeddings
``float32[N, dim]`` (normalised on the way in), ids int64 ``1..MAX_ID``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from reid.gallery.types import Entry, EntryMetadata, EntryPage, Match, SearchFilters


@runtime_checkable
class GalleryBackend(Protocol):
    """Add, delete, search with exact filters, get, page, stats; see ``Gallery``'s docs."""

    dim: int

    def __len__(self) -> int: ...

    def close(self) -> None: ...

    def is_available(self) -> bool:
        """False while the backend cannot be reached (calls raise ``GalleryUnavailableError``)."""
        ...

    def add(
        self,
        embeddings: np.ndarray,
        metadata: Sequence[EntryMetadata],
        thumbnails: Sequence[bytes | None] | None = None,
    ) -> np.ndarray: ...

    def delete(self, ids: Sequence[int]) -> tuple[list[int], list[int]]: ...

    def search(
        self, queries: np.ndarray, k: int | None = 10, filters: SearchFilters | None = None
    ) -> list[list[Match]]: ...

    def search_arrays(
        self, queries: np.ndarray, k: int | None = 10, filters: SearchFilters | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]: ...

    def get(self, ids: Sequence[int]) -> list[Entry | None]: ...

    def page(
        self,
        offset: int = 0,
        limit: int = 50,
        *,
        cameras: Sequence[int] | None = None,
        time_from: float | None = None,
        time_to: float | None = None,
    ) -> EntryPage: ...

    def embeddings(self, ids: Sequence[int]) -> np.ndarray: ...

    def thumbnail_path(self, id: int) -> Path | None: ...

    def stats(self) -> dict[str, Any]: ...
