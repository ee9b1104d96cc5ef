"""Gallery library: durable FAISS search with SQLite metadata, or a shared Milvus collection.

See ``docs/GALLERY.md`` for the design (durability, locking, index choice, recall).
"""

from pathlib import Path

from reid.gallery.base import GalleryBackend
from reid.gallery.gallery import Gallery, measure_recall
from reid.gallery.index import IndexSettings
from reid.gallery.milvus import MilvusGallery, is_milvus_url
from reid.gallery.types import (
    MAX_CAMERA,
    MAX_ID,
    Entry,
    EntryMetadata,
    EntryPage,
    GalleryClosedError,
    GalleryError,
    GalleryStorageError,
    GalleryUnavailableError,
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
    "GalleryBackend",
    "GalleryClosedError",
    "GalleryError",
    "GalleryStorageError",
    "GalleryUnavailableError",
    "IndexSettings",
    "Match",
    "MilvusGallery",
    "SearchFilters",
    "is_milvus_url",
    "measure_recall",
    "open_gallery",
]


def open_gallery(
    location: str | Path,
    dim: int | None = None,
    *,
    index: str = "auto",
    thumbnail_dir: str | Path | None = None,
) -> GalleryBackend:
    """The gallery at ``location``: ``milvus://HOST:PORT/COLLECTION`` (a shared Milvus
    collection, thumbnails under ``thumbnail_dir``) or a directory (FAISS + SQLite)."""
    if is_milvus_url(location):
        return MilvusGallery.open(str(location), dim, thumbnail_dir=thumbnail_dir, index=index)
    return Gallery.open(location, dim, index=index)
