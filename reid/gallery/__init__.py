"""Gallery library: durable FAISS search over re-ID embeddings with SQLite metadata.

See ``docs/GALLERY.md`` for the design (durability, locking, index choice, recall).
"""

from reid.gallery.gallery import Gallery, measure_recall
from reid.gallery.index import IndexSettings
from reid.gallery.types import (
    Entry,
    EntryMetadata,
    EntryPage,
    GalleryClosedError,
    GalleryError,
    Match,
    SearchFilters,
)

__all__ = [
    "Entry",
    "EntryMetadata",
    "EntryPage",
    "Gallery",
    "GalleryClosedError",
    "GalleryError",
    "IndexSettings",
    "Match",
    "SearchFilters",
    "measure_recall",
]
