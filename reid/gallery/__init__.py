"""Gallery library: durable FAISS search over re-ID embeddings with SQLite metadata.

See ``docs/GALLERY.md`` for the design (durability, locking, index choice, recall).
"""

from reid.gallery.gallery import Gallery, measure_recall
from reid.gallery.index import IndexSettings
from reid.gallery.types import (
    MAX_CAMERA,
    MAX_ID,
    Entry,
    EntryMetadata,
    EntryPage,
    GalleryClosedError,
    GalleryError,
    GalleryStorageError,
    Match,
    SearchFilters,
)

__all__ = [
    "MAX_CAMERA",
    "MAX_ID",
    "Entry",
    "EntryMetadata",
    "EntryPage",
    "Gallery",
    "GalleryClosedError",
    "GalleryError",
    "GalleryStorageError",
    "IndexSettings",
    "Match",
    "SearchFilters",
    "measure_recall",
]
