"""SQLite store: the gallery's source of truth (embeddings, metadata, thumbnail paths).

One writer connection, guarded by a mutex, runs every write as one ``BEGIN IMMEDIATE``
transaction; the database is in WAL mode with ``synchronous=FULL``, so a committed
transaction is fsync'd before ``commit`` returns. Readers use one connection per
thread (WAL lets them read while the writer writes). Thumbnails are files under
``thumbnails/`` written through a temporary file, fsync'd and renamed (and their
directory fsync'd) *before* the rows naming them are committed, so no row ever points
at a missing file. Files left by a crash between the two steps belong to no row and are
removed on open. A ``gallery.lock`` file held with ``flock`` keeps a second process
from opening the same directory (the kernel drops it when the process dies).
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import numbers
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from reid.gallery.types import EntryMetadata, GalleryError, GalleryStorageError

DB_NAME = "gallery.sqlite3"
THUMBNAILS = "thumbnails"
LOCK_NAME = "gallery.lock"
_SHARD = 1000  # thumbnails per sub-directory
_CHUNK = 500  # ids per "IN (...)" query

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    embedding BLOB NOT NULL,
    camera INTEGER,
    timestamp REAL,
    track INTEGER,
    box_x REAL, box_y REAL, box_w REAL, box_h REAL,
    source TEXT,
    extra TEXT NOT NULL,
    thumbnail TEXT,
    created REAL NOT NULL,
    key TEXT
);
"""
_KEY_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS entries_key ON entries (key) WHERE key IS NOT NULL"
_META_COLUMNS = (
    "id, camera, timestamp, track, box_x, box_y, box_w, box_h, source, extra, thumbnail, "
)
_META_COLUMNS += "created, key"

Row = tuple[EntryMetadata, bool, float]  # metadata, has_thumbnail, created


class Store:
    """The SQLite database and thumbnail files of one gallery directory."""

    def __init__(self, directory: str | Path, dim: int | None, *, create: bool) -> None:
        self.directory = Path(directory)
        db_path = self.directory / DB_NAME
        if not db_path.exists():
            if not create:
                raise GalleryError(f"no gallery at {self.directory} (and create=False)")
            if dim is None:
                raise GalleryError(f"creating a gallery at {self.directory} needs dim")
        if dim is not None and (isinstance(dim, bool) or int(dim) != dim or dim < 1):
            raise GalleryError(f"dim must be a positive integer, got {dim!r}")
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / THUMBNAILS).mkdir(exist_ok=True)
        self._lock_file = _lock_directory(self.directory / LOCK_NAME)
        self._write_mutex = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_mutex = threading.Lock()
        try:
            self._conn = self._connect(db_path)
            self._conn.executescript(_SCHEMA)
            self._add_key_column()
            self.dim = self._check_dim(dim)
            self._next_id = self._max_allocated_id() + 1
            _fsync_directory(self.directory)
        except BaseException:
            self.close()
            raise

    # -- connections -------------------------------------------------------------------

    def _connect(self, path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(self.directory / DB_NAME)
            self._local.conn = conn
            with self._readers_mutex:
                self._readers.append(conn)
        return conn

    def _check_dim(self, dim: int | None) -> int:
        row = self._conn.execute("SELECT value FROM settings WHERE key = 'dim'").fetchone()
        if row is None:
            if dim is None:
                raise GalleryError(f"{self.directory}: gallery has no dim recorded; pass dim")
            with self._write_mutex:
                self._conn.execute("INSERT INTO settings VALUES ('dim', ?)", (str(int(dim)),))
            return int(dim)
        stored = int(row[0])
        if dim is not None and int(dim) != stored:
            raise GalleryError(
                f"{self.directory}: gallery has dim {stored}, opened with dim {int(dim)}"
            )
        return stored

    def _add_key_column(self) -> None:
        """Galleries written before entry keys existed get the (empty) column."""
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(entries)")}
        with self._write_mutex:
            if "key" not in columns:
                self._conn.execute("ALTER TABLE entries ADD COLUMN key TEXT")
            self._conn.execute(_KEY_INDEX)

    def _max_allocated_id(self) -> int:
        """The largest id ever committed (deleted ids included: ids are never reused)."""
        row = self._conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'entries'"
        ).fetchone()
        top = self._conn.execute("SELECT MAX(id) FROM entries").fetchone()[0]
        return max(row[0] if row else 0, top or 0)

    def close(self) -> None:
        """Close every connection and release the directory lock (idempotent)."""
        with self._readers_mutex:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        conn = getattr(self, "_conn", None)
        if conn is not None:
            with self._write_mutex:
                conn.close()
            self._conn = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    # -- writes ------------------------------------------------------------------------

    def insert(
        self,
        vectors: np.ndarray,
        metadata: Sequence[EntryMetadata],
        thumbnails: Sequence[bytes | None],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Store one batch in one transaction; return its ids once it is durable, and
        which of them are new.

        An item whose ``key`` is already stored (or repeats an earlier item of the batch)
        is not stored again: its id is the stored entry's, and it is not new.
        """
        with self._write_mutex:
            ids, new, repeats = self._resolve_keys(metadata)
            fresh = np.flatnonzero(new)
            ids[fresh] = np.arange(self._next_id, self._next_id + len(fresh), dtype=np.int64)
            for item, first in repeats:
                ids[item] = ids[first]
            paths = self._write_thumbnails(ids[fresh], [thumbnails[i] for i in fresh])
            now = time.time()
            rows = [
                _row_values(int(ids[i]), vectors[i], metadata[i], path, now)
                for i, path in zip(fresh, paths, strict=True)
            ]
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    "INSERT INTO entries (id, embedding, camera, timestamp, track, box_x, box_y, "
                    "box_w, box_h, source, extra, thumbnail, created, key) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._conn.execute("COMMIT")
            except BaseException as error:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                for path in paths:
                    if path is not None:
                        (self.directory / path).unlink(missing_ok=True)
                converted = storage_error(error, "add the entries")
                if converted is error:
                    raise
                raise converted from error
            self._next_id += len(fresh)
            return ids, new

    def _resolve_keys(
        self, metadata: Sequence[EntryMetadata]
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
        """The ids of the items whose key is stored (else 0), which items are to store,
        and ``(item, first)`` pairs for a key repeated within the batch (the item takes
        the id of the batch's first item with that key)."""
        ids = np.zeros(len(metadata), dtype=np.int64)
        new = np.ones(len(metadata), dtype=bool)
        keys = [m.key for m in metadata]
        wanted = sorted({k for k in keys if k is not None})
        if not wanted:
            return ids, new, []
        stored: dict[str, int] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, id FROM entries WHERE key IN ({marks})"
            stored.update(self._conn.execute(query, chunk).fetchall())
        first: dict[str, int] = {}
        repeats: list[tuple[int, int]] = []
        for i, key in enumerate(keys):
            if key is None:
                continue
            if key in stored:
                ids[i], new[i] = stored[key], False
            elif key in first:
                new[i] = False
                repeats.append((i, first[key]))
            else:
                first[key] = i
        return ids, new, repeats

    def _write_thumbnails(
        self, ids: np.ndarray, thumbnails: Sequence[bytes | None]
    ) -> list[str | None]:
        """Write each thumbnail durably; return relative paths (None where absent)."""
        paths: list[str | None] = []
        try:
            self._write_files(ids, thumbnails, paths)
        except BaseException as error:
            for path in paths:
                if path is not None:
                    (self.directory / path).unlink(missing_ok=True)
            for entry_id in ids:  # a temporary file the failed write left behind
                shard = self.directory / THUMBNAILS / f"{int(entry_id) // _SHARD:06d}"
                (shard / f".{int(entry_id)}.jpg.tmp").unlink(missing_ok=True)
            converted = storage_error(error, "store the thumbnails")
            if converted is error:
                raise
            raise converted from error
        return paths

    def _write_files(
        self, ids: np.ndarray, thumbnails: Sequence[bytes | None], paths: list[str | None]
    ) -> None:
        directories: set[Path] = set()
        root = self.directory / THUMBNAILS
        for entry_id, data in zip(ids, thumbnails, strict=True):
            if data is None:
                paths.append(None)
                continue
            shard = root / f"{int(entry_id) // _SHARD:06d}"
            if not shard.exists():
                shard.mkdir()
                directories.add(root)
            target = shard / f"{int(entry_id)}.jpg"
            tmp = shard / f".{target.name}.tmp"
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
            directories.add(shard)
            paths.append(str(target.relative_to(self.directory)))
        for directory in directories:
            _fsync_directory(directory)

    def delete(self, ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """Delete rows (and then their thumbnails); return ``(deleted, missing)``, sorted."""
        wanted = sorted({int(i) for i in ids})
        with self._write_mutex:
            found = self._select(self._conn, "id, thumbnail", wanted)
            deleted = sorted(row[0] for row in found)
            if deleted:
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    for start in range(0, len(deleted), _CHUNK):
                        chunk = deleted[start : start + _CHUNK]
                        marks = ",".join("?" * len(chunk))
                        self._conn.execute(f"DELETE FROM entries WHERE id IN ({marks})", chunk)
                    self._conn.execute("COMMIT")
                except BaseException as error:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    converted = storage_error(error, "delete the entries")
                    if converted is error:
                        raise
                    raise converted from error
            for _, path in found:
                if path is not None:
                    (self.directory / path).unlink(missing_ok=True)
        present = set(deleted)
        return deleted, [i for i in wanted if i not in present]

    def remove_orphan_thumbnails(self) -> int:
        """Delete thumbnail files that no row names (left by a crash); return how many."""
        root = self.directory / THUMBNAILS
        known = {
            row[0]
            for row in self._conn.execute(
                "SELECT thumbnail FROM entries WHERE thumbnail IS NOT NULL"
            )
        }
        removed = 0
        for shard in root.iterdir() if root.exists() else []:
            for path in shard.iterdir() if shard.is_dir() else [shard]:
                if str(path.relative_to(self.directory)) not in known:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # -- reads -------------------------------------------------------------------------

    def _select(self, conn: sqlite3.Connection, columns: str, ids: Sequence[int]) -> list[tuple]:
        rows: list[tuple] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = [int(i) for i in ids[start : start + _CHUNK]]
            marks = ",".join("?" * len(chunk))
            rows.extend(conn.execute(f"SELECT {columns} FROM entries WHERE id IN ({marks})", chunk))
        return rows

    def rows(self, ids: Sequence[int]) -> dict[int, Row]:
        """Metadata, thumbnail flag and creation time of the given ids that exist."""
        found = self._select(self._reader(), _META_COLUMNS, ids)
        return {row[0]: _row_to_entry(row) for row in found}

    def page(
        self,
        offset: int,
        limit: int,
        cameras: Sequence[int] | None = None,
        time_from: float | None = None,
        time_to: float | None = None,
    ) -> tuple[list[tuple[int, Row]], int]:
        """``limit`` rows from ``offset`` in id order among those passing the filters, and
        how many pass them in all; both read from one snapshot of the database.

        ``cameras`` keeps those cameras (None: all, empty: none); the time bounds are
        inclusive. A row without a camera or timestamp fails those filters. Only one page
        is ever held in memory (SQL ``LIMIT``/``OFFSET`` and ``COUNT``).
        """
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise GalleryError(f"offset must be an integer >= 0, got {offset!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise GalleryError(f"limit must be an integer >= 1, got {limit!r}")
        where, values = _page_filter(cameras, time_from, time_to)
        conn = self._reader()
        conn.execute("BEGIN")  # one read snapshot for the count and the page (WAL)
        try:
            total = conn.execute(f"SELECT COUNT(*) FROM entries{where}", values).fetchone()[0]
            rows = conn.execute(
                f"SELECT {_META_COLUMNS} FROM entries{where} ORDER BY id LIMIT ? OFFSET ?",
                [*values, limit, offset],
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        return [(row[0], _row_to_entry(row)) for row in rows], int(total)

    def count(self) -> int:
        """Number of rows."""
        return int(self._reader().execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def thumbnail_path(self, entry_id: int) -> Path | None:
        """Absolute path of an entry's thumbnail, or None (no entry or no thumbnail)."""
        row = (
            self._reader()
            .execute("SELECT thumbnail FROM entries WHERE id = ?", (int(entry_id),))
            .fetchone()
        )
        return None if row is None or row[0] is None else self.directory / row[0]

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ids, cameras, timestamps)`` of every row in id order (camera -1 / NaN if None)."""
        rows = self._reader().execute("SELECT id, camera, timestamp FROM entries ORDER BY id")
        table = np.array(
            [(i, -1 if c is None else c, np.nan if t is None else t) for i, c, t in rows],
            dtype=[("id", np.int64), ("camera", np.int64), ("time", np.float64)],
        )
        return table["id"].copy(), table["camera"].copy(), table["time"].copy()

    def embeddings(self, ids: Sequence[int]) -> np.ndarray:
        """float32[len(ids), dim] in the order of ``ids`` (which must all exist)."""
        found = dict(self._select(self._reader(), "id, embedding", ids))
        if len(found) != len(set(int(i) for i in ids)):
            raise KeyError("some ids have no row")
        blob = b"".join(found[int(i)] for i in ids)
        return np.frombuffer(blob, dtype="<f4").reshape(len(ids), self.dim).astype(np.float32)

    def iter_embeddings(self, chunk: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every ``(ids, vectors)`` in id order, ``chunk`` rows at a time."""
        conn, last = self._reader(), 0
        while True:
            rows = conn.execute(
                "SELECT id, embedding FROM entries WHERE id > ? ORDER BY id LIMIT ?",
                (last, chunk),
            ).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            blob = b"".join(r[1] for r in rows)
            yield ids, np.frombuffer(blob, dtype="<f4").reshape(len(rows), self.dim)
            last = int(ids[-1])

    def summary(self) -> dict:
        """Counts per camera, time range and number of thumbnails."""
        conn = self._reader()
        cameras = {
            cam: count
            for cam, count in conn.execute(
                "SELECT camera, COUNT(*) FROM entries WHERE camera IS NOT NULL "
                "GROUP BY camera ORDER BY camera"
            )
        }
        low, high = conn.execute("SELECT MIN(timestamp), MAX(timestamp) FROM entries").fetchone()
        thumbs = conn.execute("SELECT COUNT(thumbnail) FROM entries").fetchone()[0]
        return {
            "cameras": cameras,
            "time_range": None if low is None else [low, high],
            "with_thumbnails": thumbs,
        }


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


def storage_error(error: BaseException, action: str) -> BaseException:
    """``GalleryStorageError`` for a failed write to the disk or the database (disk
    full, read-only, I/O error); any other exception unchanged."""
    if isinstance(error, GalleryStorageError):
        return error
    if isinstance(error, OSError):
        reason = (
            "full" if error.errno in _FULL else "read-only" if error.errno in _READ_ONLY else "io"
        )
        detail = error.strerror or str(error)
    elif isinstance(error, sqlite3.OperationalError | sqlite3.DatabaseError) and not isinstance(
        error, sqlite3.IntegrityError | sqlite3.ProgrammingError
    ):
        text = str(error).lower()
        reason = "full" if "full" in text else "read-only" if "readonly" in text else "io"
        detail = str(error)
    else:
        return error
    return GalleryStorageError(f"the gallery could not {action}: {detail}", reason)


def _row_values(
    entry_id: int, vector: np.ndarray, meta: EntryMetadata, thumbnail: str | None, now: float
) -> tuple:
    box = meta.box or (None, None, None, None)
    return (
        entry_id,
        np.asarray(vector, dtype="<f4").tobytes(),
        meta.camera,
        meta.timestamp,
        meta.track,
        *box,
        meta.source,
        json.dumps(meta.extra),
        thumbnail,
        now,
        meta.key,
    )


def _page_filter(
    cameras: Sequence[int] | None, time_from: float | None, time_to: float | None
) -> tuple[str, list[object]]:
    """The ``WHERE`` clause and values of a page's filters (checked here: a library)."""
    clauses: list[str] = []
    values: list[object] = []
    if cameras is not None:
        if isinstance(cameras, (str, bytes)) or not isinstance(cameras, Iterable):
            raise GalleryError(f"cameras must be a sequence of camera ids, got {cameras!r}")
        wanted = list(cameras)
        for camera in wanted:
            if isinstance(camera, bool) or not isinstance(camera, numbers.Integral):
                raise GalleryError(f"cameras must be integers, got {camera!r}")
        # One bound value whatever the number of cameras (no SQLite variable limit).
        clauses.append("camera IN (SELECT value FROM json_each(?))")
        values.append(json.dumps(sorted({int(c) for c in wanted})))
    for name, op, bound in (("time_from", ">=", time_from), ("time_to", "<=", time_to)):
        if bound is None:
            continue
        if isinstance(bound, bool) or not isinstance(bound, numbers.Real):
            raise GalleryError(f"{name} must be a number or None, got {bound!r}")
        if not math.isfinite(bound):
            raise GalleryError(f"{name} must be finite, got {bound}")
        clauses.append(f"timestamp {op} ?")
        values.append(float(bound))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), values


def _row_to_entry(row: tuple) -> Row:
    _, camera, timestamp, track, bx, by, bw, bh, source, extra, thumbnail, created, key = row
    box = None if bx is None else (bx, by, bw, bh)
    meta = EntryMetadata.stored(camera, timestamp, track, box, source, json.loads(extra), key)
    return meta, thumbnail is not None, created


def _lock_directory(path: Path) -> object:
    handle = open(path, "a+b")  # noqa: SIM115 - held open until close()
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise GalleryError(f"{path.parent} is already open (by this or another process)") from None
    return handle


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
