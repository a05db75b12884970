"""``sqlite:///path``: the embedded, durable default store (stdlib sqlite3, WAL).

Several processes on one machine may share the file: WAL mode lets readers
run alongside the single writer, and conditional writes run inside
``BEGIN IMMEDIATE`` transactions so a generation check and its write are atomic.
Each thread gets its own connection.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from ..errors import (
    Conflict,
    CorruptSegment,
    StorageFull,
    StorageMisconfigured,
    StorageTimeout,
    StorageUnavailable,
)
from ._codec import decode_bins, encode_bins
from .base import Bins, Record

_GEN_WRAP = 0xFFFF
_BUSY_TIMEOUT_MS = 10_000
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    set_name TEXT NOT NULL,
    key TEXT NOT NULL,
    generation INTEGER NOT NULL,
    bins BLOB NOT NULL,
    PRIMARY KEY (set_name, key)
) WITHOUT ROWID
"""


def path_from_url(url: str) -> str:
    """``sqlite:///abs/path`` → ``/abs/path``; ``sqlite:///./rel`` or ``sqlite://rel`` → relative."""
    if not url.startswith("sqlite://"):
        raise StorageMisconfigured(f"not a sqlite URL: {url!r}")
    rest = url[len("sqlite://") :]
    if rest.startswith("/./") or rest.startswith("/../"):
        rest = rest[1:]
    if not rest:
        raise StorageMisconfigured("sqlite URL needs a path, e.g. sqlite:///./data/segments.db")
    return rest


@contextmanager
def _translated(path: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise StorageTimeout(f"sqlite store {path} is busy: {text}") from exc
        if "full" in text:
            raise StorageFull(f"sqlite store {path} is full: {text}") from exc
        if "readonly" in text or "read-only" in text:
            raise StorageMisconfigured(f"sqlite store {path} is not writable: {text}") from exc
        raise StorageUnavailable(f"sqlite store {path} failed: {text}") from exc
    except sqlite3.ProgrammingError as exc:
        # "Cannot operate on a closed database": the store is shutting down, the data is fine.
        raise StorageUnavailable(f"sqlite store {path} is closed: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise CorruptSegment(f"sqlite store {path} is damaged: {exc}") from exc


def _checked_generation(conn: sqlite3.Connection, set_name: str, key: str, expected: int | None) -> int:
    """The record's generation (0: missing), after checking it against ``expected``."""
    row = conn.execute(
        "SELECT generation FROM records WHERE set_name = ? AND key = ?", (set_name, key)
    ).fetchone()
    current = 0 if row is None else int(row[0])
    if expected is not None and expected != current:
        raise Conflict(f"record {set_name}/{key} is at generation {current}, expected {expected}")
    return current


class SqliteStore:
    """Records in one SQLite table keyed by ``(set_name, key)``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = path_from_url(url)
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot create directory {directory}: {exc}") from exc
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False
        self._memo: dict[tuple[str, str], tuple[bytes, Record]] = {}
        conn = self._conn()
        with _translated(self.path):
            conn.execute(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageUnavailable(f"sqlite store {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with _translated(self.path):
                conn = sqlite3.connect(
                    self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                    check_same_thread=False,
                )
                conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _write(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn()
        with _translated(self.path):
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def get_many(self, set_name: str, keys: Sequence[str]) -> list[Record | None]:
        if not keys:
            return []
        conn = self._conn()
        found: dict[str, Record] = {}
        with _translated(self.path):
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, generation, bins FROM records WHERE set_name = ? AND key IN ({marks})",
                    [set_name, *chunk],
                ).fetchall()
                for key, gen, blob in rows:
                    found[key] = self._decoded(set_name, key, gen, blob)
        return [found.get(k) for k in keys]

    def _decoded(self, set_name: str, key: str, gen: int, blob: bytes) -> Record:
        """Decode a row, reusing the last decoding of an identical small record.

        Metadata records are read on every query and rarely change; decoding
        them dominates a batch read of a few hundred. Callers treat records as
        read-only.
        """
        if len(blob) > 1024:
            return Record(decode_bins(blob), gen)
        slot = (set_name, key)
        hit = self._memo.get(slot)
        if hit is not None and hit[0] == blob and hit[1].generation == gen:
            return hit[1]
        record = Record(decode_bins(blob), gen)
        if len(self._memo) >= 65536:
            self._memo.clear()
        self._memo[slot] = (blob, record)
        return record

    def put(self, set_name: str, key: str, bins: Bins, *, generation: int | None = None) -> int:
        blob = encode_bins(bins)

        def body(conn: sqlite3.Connection) -> int:
            current = _checked_generation(conn, set_name, key, generation)
            new_gen = current % _GEN_WRAP + 1
            conn.execute(
                "INSERT OR REPLACE INTO records (set_name, key, generation, bins) VALUES (?, ?, ?, ?)",
                (set_name, key, new_gen, blob),
            )
            return new_gen

        return self._write(body)

    def put_many(self, set_name: str, items: Sequence[tuple[str, Bins]]) -> None:
        if not items:
            return
        encoded = [(key, encode_bins(bins)) for key, bins in items]

        def body(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO records (set_name, key, generation, bins) VALUES (?, ?, 1, ?) "
                "ON CONFLICT (set_name, key) DO UPDATE SET "
                "generation = generation % 65535 + 1, bins = excluded.bins",
                [(set_name, key, blob) for key, blob in encoded],
            )

        self._write(body)

    def delete(self, set_name: str, key: str, *, generation: int | None = None) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            if _checked_generation(conn, set_name, key, generation) == 0:
                return False
            conn.execute("DELETE FROM records WHERE set_name = ? AND key = ?", (set_name, key))
            return True

        return self._write(body)

    def delete_many(self, set_name: str, keys: Sequence[str]) -> None:
        if not keys:
            return

        def body(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "DELETE FROM records WHERE set_name = ? AND key = ?", [(set_name, k) for k in keys]
            )

        self._write(body)

    def scan(self, set_name: str) -> Iterator[tuple[str, Record]]:
        conn = self._conn()
        with _translated(self.path):
            rows = conn.execute(
                "SELECT key, generation, bins FROM records WHERE set_name = ?", (set_name,)
            ).fetchall()
        for key, gen, blob in rows:
            yield key, Record(decode_bins(blob), gen)

    def ping(self) -> None:
        conn = self._conn()
        with _translated(self.path):
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        self._closed = True
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
