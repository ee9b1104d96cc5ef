from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Box(_message.Message):
    __slots__ = ("x", "y", "w", "h")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    H_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    w: float
    h: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., w: _Optional[float] = ..., h: _Optional[float] = ...) -> None: ...

class QueryImage(_message.Message):
    __slots__ = ("image", "camera")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    camera: int
    def __init__(self, image: _Optional[bytes] = ..., camera: _Optional[int] = ...) -> None: ...

class QueryEmbedding(_message.Message):
    __slots__ = ("values", "camera")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    camera: int
    def __init__(self, values: _Optional[_Iterable[float]] = ..., camera: _Optional[int] = ...) -> None: ...

class SearchFilters(_message.Message):
    __slots__ = ("include_cameras", "exclude_cameras", "time_from", "time_to", "min_score", "exclude_same_camera")
    INCLUDE_CAMERAS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_CAMERAS_FIELD_NUMBER: _ClassVar[int]
    TIME_FROM_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SAME_CAMERA_FIELD_NUMBER: _ClassVar[int]
    include_cameras: _containers.RepeatedScalarFieldContainer[int]
    exclude_cameras: _containers.RepeatedScalarFieldContainer[int]
    time_from: float
    time_to: float
    min_score: float
    exclude_same_camera: bool
    def __init__(self, include_cameras: _Optional[_Iterable[int]] = ..., exclude_cameras: _Optional[_Iterable[int]] = ..., time_from: _Optional[float] = ..., time_to: _Optional[float] = ..., min_score: _Optional[float] = ..., exclude_same_camera: _Optional[bool] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("queries", "embeddings", "k", "full_ranking", "filters")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FULL_RANKING_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[QueryImage]
    embeddings: _containers.RepeatedCompositeFieldContainer[QueryEmbedding]
    k: int
    full_ranking: bool
    filters: SearchFilters
    def __init__(self, queries: _Optional[_Iterable[_Union[QueryImage, _Mapping]]] = ..., embeddings: _Optional[_Iterable[_Union[QueryEmbedding, _Mapping]]] = ..., k: _Optional[int] = ..., full_ranking: _Optional[bool] = ..., filters: _Optional[_Union[SearchFilters, _Mapping]] = ...) -> None: ...

class Match(_message.Message):
    __slots__ = ("id", "score", "camera", "timestamp", "track", "box", "source", "thumbnail_url", "extra_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    TRACK_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_URL_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    id: int
    score: float
    camera: int
    timestamp: float
    track: int
    box: Box
    source: str
    thumbnail_url: str
    extra_json: str
    def __init__(self, id: _Optional[int] = ..., score: _Optional[float] = ..., camera: _Optional[int] = ..., timestamp: _Optional[float] = ..., track: _Optional[int] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., source: _Optional[str] = ..., thumbnail_url: _Optional[str] = ..., extra_json: _Optional[str] = ...) -> None: ...

class QueryResult(_message.Message):
    __slots__ = ("matches", "query_camera")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    QUERY_CAMERA_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[Match]
    query_camera: int
    def __init__(self, matches: _Optional[_Iterable[_Union[Match, _Mapping]]] = ..., query_camera: _Optional[int] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[QueryResult]
    def __init__(self, results: _Optional[_Iterable[_Union[QueryResult, _Mapping]]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, images: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("dim", "embeddings")
    DIM_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    dim: int
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    def __init__(self, dim: _Optional[int] = ..., embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ...) -> None: ...

class EntryMetadata(_message.Message):
    __slots__ = ("camera", "timestamp", "track", "box", "source", "extra_json", "key")
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    TRACK_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    camera: int
    timestamp: float
    track: int
    box: Box
    source: str
    extra_json: str
    key: str
    def __init__(self, camera: _Optional[int] = ..., timestamp: _Optional[float] = ..., track: _Optional[int] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., source: _Optional[str] = ..., extra_json: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class GalleryEntry(_message.Message):
    __slots__ = ("image", "metadata")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    metadata: EntryMetadata
    def __init__(self, image: _Optional[bytes] = ..., metadata: _Optional[_Union[EntryMetadata, _Mapping]] = ...) -> None: ...

class AddToGalleryRequest(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[GalleryEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[GalleryEntry, _Mapping]]] = ...) -> None: ...

class AddToGalleryResponse(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class DeleteFromGalleryRequest(_message.Message):
    __slots__ = ("ids", "allow_missing")
    IDS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    allow_missing: bool
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., allow_missing: _Optional[bool] = ...) -> None: ...

class DeleteFromGalleryResponse(_message.Message):
    __slots__ = ("deleted", "missing")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    deleted: _containers.RepeatedScalarFieldContainer[int]
    missing: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, deleted: _Optional[_Iterable[int]] = ..., missing: _Optional[_Iterable[int]] = ...) -> None: ...

class GalleryStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GalleryStatsResponse(_message.Message):
    __slots__ = ("size", "dim", "stats_json")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    STATS_JSON_FIELD_NUMBER: _ClassVar[int]
    size: int
    dim: int
    stats_json: str
    def __init__(self, size: _Optional[int] = ..., dim: _Optional[int] = ..., stats_json: _Optional[str] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfoResponse(_message.Message):
    __slots__ = ("name", "dim", "info_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    INFO_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    info_json: str
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., info_json: _Optional[str] = ...) -> None: ...

class ListGalleryRequest(_message.Message):
    __slots__ = ("offset", "limit", "cameras", "time_from", "time_to")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CAMERAS_FIELD_NUMBER: _ClassVar[int]
    TIME_FROM_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIELD_NUMBER: _ClassVar[int]
    offset: int
    limit: int
    cameras: _containers.RepeatedScalarFieldContainer[int]
    time_from: float
    time_to: float
    def __init__(self, offset: _Optional[int] = ..., limit: _Optional[int] = ..., cameras: _Optional[_Iterable[int]] = ..., time_from: _Optional[float] = ..., time_to: _Optional[float] = ...) -> None: ...

class StoredEntry(_message.Message):
    __slots__ = ("id", "metadata", "created", "thumbnail_url")
    ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_URL_FIELD_NUMBER: _ClassVar[int]
    id: int
    metadata: EntryMetadata
    created: float
    thumbnail_url: str
    def __init__(self, id: _Optional[int] = ..., metadata: _Optional[_Union[EntryMetadata, _Mapping]] = ..., created: _Optional[float] = ..., thumbnail_url: _Optional[str] = ...) -> None: ...

class ListGalleryResponse(_message.Message):
    __slots__ = ("entries", "total", "offset", "limit")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[StoredEntry]
    total: int
    offset: int
    limit: int
    def __init__(self, entries: _Optional[_Iterable[_Union[StoredEntry, _Mapping]]] = ..., total: _Optional[int] = ..., offset: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class SearchByEntryRequest(_message.Message):
    __slots__ = ("id", "k", "full_ranking", "filters")
    ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FULL_RANKING_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    id: int
    k: int
    full_ranking: bool
    filters: SearchFilters
    def __init__(self, id: _Optional[int] = ..., k: _Optional[int] = ..., full_ranking: _Optional[bool] = ..., filters: _Optional[_Union[SearchFilters, _Mapping]] = ...) -> None: ...
