"""Reading a segment's record graph: meta -> shard map -> shard records.

This module is the one place that knows how a segment's records hang
together when they are read, and so the one place that decides what a
missing record means. Every path reads through :class:`RecordReader`:
queries, user lookups, the writer, ``admin verify``, garbage collection and
export.

A writer publishes a version by swapping the segment's meta record, and only
*then* deletes the records the old version no longer uses. A reader that
followed an old meta can therefore find its map or a shard record gone:

* if the meta, read again, has changed, the record was **moved** by a writer:
  the read starts over from the meta records (:meth:`RecordReader.consistent`);
* if the meta is unchanged, nothing could have deleted the record
  legitimately: the segment is **damaged**, reported as ``CorruptSegment``
  naming it (``admin verify --fix`` repairs it).

``_Moved`` never leaves this module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from pyroaring import BitMap

from . import bitmap as bm
from .cache import SegmentCache
from .catalog import EMPTY_MAP, Meta, Sets, ShardMap, decode_map, decode_meta, shard_key
from .errors import Conflict, CorruptSegment, SegmentNotFound, StorageUnavailable, UniverseNotFound
from .storage.base import Record, Store

_T = TypeVar("_T")
#: attempts of a read that keeps meeting records moved by writers (backoff 1 ms, 2 ms, ... ~1 s in all)
_READ_ATTEMPTS = 10
#: shard records read per round trip when streaming a whole segment
STREAM_BATCH = 64


class _Moved(Exception):
    """A record vanished under a concurrent writer: re-read from the meta records."""


@dataclass(frozen=True)
class Snapshot:
    """One committed version of each of some segments: their metas and shard maps."""

    metas: dict[str, Meta]
    maps: dict[str, ShardMap]

    def only(self, names: Iterable[str]) -> Snapshot:
        keep = list(names)
        return Snapshot({n: self.metas[n] for n in keep}, {n: self.maps[n] for n in keep})


@dataclass
class ReadStats:
    """Counters of the reader (exported as metrics by the API)."""

    moved_retries: int = 0
    damaged: int = 0


class RecordReader:
    """Reads consistent versions of segments; thread-safe."""

    def __init__(self, store: Store, sets: Sets, cache: SegmentCache) -> None:
        self.store = store
        self.sets = sets
        self.cache = cache
        self.stats = ReadStats()
        self._lock = threading.Lock()
        #: called whenever a read met records a writer moved (holders of metadata snapshots drop them)
        self.on_moved: list[Callable[[], None]] = []

    # -- retrying ---------------------------------------------------------

    def consistent(self, body: Callable[[], _T]) -> _T:
        """Run a read built from this reader's methods, starting over when a writer moved records."""
        for attempt in range(_READ_ATTEMPTS):
            try:
                return body()
            except _Moved:
                with self._lock:
                    self.stats.moved_retries += 1
                for listener in self.on_moved:
                    listener()
                time.sleep(0.001 * (2**attempt))
        raise StorageUnavailable("segments kept changing while being read; try again")

    # -- metas --------------------------------------------------------------

    def metas(self, names: Sequence[str]) -> dict[str, Meta | None]:
        """The current meta of each name (``None``: no such segment), one batch read."""
        records = self.store.get_many(self.sets.meta, list(names))
        return {n: (None if r is None else decode_meta(n, r)) for n, r in zip(names, records)}

    def meta(self, name: str) -> Meta | None:
        return self.metas([name])[name]

    def all_metas(self) -> tuple[dict[str, Meta], dict[str, CorruptSegment]]:
        """Every segment's meta (one scan), and the segments whose meta record is damaged."""
        metas: dict[str, Meta] = {}
        damaged: dict[str, CorruptSegment] = {}
        for key, record in self.store.scan(self.sets.meta):
            try:
                metas[key] = decode_meta(key, record)
            except CorruptSegment as exc:
                damaged[key] = exc
        return metas, damaged

    def unchanged(self, meta: Meta) -> bool:
        """Whether ``meta`` is still the segment's current version (one read)."""
        current = self.meta(meta.name)
        return current is not None and _same_version(current, meta)

    # -- maps ---------------------------------------------------------------

    def snapshot(self, names: Iterable[str], *, universe: str | None = None) -> Snapshot:
        """The current version of the named segments (and of ``universe`` when given).

        Raises ``SegmentNotFound`` naming the missing ones (``UniverseNotFound``
        for the universe).
        """
        wanted = list(dict.fromkeys(names))
        if universe is not None and universe not in wanted:
            wanted.append(universe)
        found = self.metas(wanted)
        if universe is not None and found.get(universe) is None:
            raise UniverseNotFound(universe)
        missing = [n for n, m in found.items() if m is None]
        if missing:
            raise SegmentNotFound(missing)
        metas = {n: m for n, m in found.items() if m is not None}
        return Snapshot(metas, self.maps(metas.values()))

    def maps(self, metas: Iterable[Meta]) -> dict[str, ShardMap]:
        """The shard map of each meta (from the cache, else one batch read)."""
        maps: dict[str, ShardMap] = {}
        to_fetch: list[Meta] = []
        for meta in metas:
            if not meta.map_key:
                maps[meta.name] = EMPTY_MAP
                continue
            hit = self.cache.get_map(meta.map_key)
            if hit is None:
                to_fetch.append(meta)
            else:
                maps[meta.name] = hit
        if to_fetch:
            records = self.store.get_many(self.sets.map, [m.map_key for m in to_fetch])
            for meta, record in zip(to_fetch, records):
                if record is None:
                    self._missing(meta, f"shard map {meta.map_key!r}")
                shard_map = decode_map(meta.name, meta.map_key, record)
                self.cache.put_map(shard_map)
                maps[meta.name] = shard_map
        return maps

    # -- shards -------------------------------------------------------------

    def shards(self, metas: Mapping[str, Meta], wanted: Sequence[tuple[str, int, int]]) -> list[BitMap]:
        """The bitmaps of ``(segment, shard, rid)`` records of the versions ``metas``, one batch read."""
        if not wanted:
            return []
        records = self.store.get_many(self.sets.shard, [shard_key(n, s, rid) for n, s, rid in wanted])
        return [self._shard(metas[n], s, record) for (n, s, _), record in zip(wanted, records)]

    def _shard(self, meta: Meta, shard: int, record: Record | None) -> BitMap:
        if record is None:
            self._missing(meta, f"shard {shard} record")
        raw = record.bins.get("bm")
        if not isinstance(raw, bytes):
            self._damaged(meta.name, f"shard {shard} record has no bitmap")
        try:
            part = bm.deserialize(raw, untrusted=False)
        except CorruptSegment as exc:
            self._damaged(meta.name, f"shard {shard} record: {exc}")
        return part

    def stream(self, name: str, batch: int = STREAM_BATCH) -> Iterator[tuple[int, BitMap]]:
        """Every shard of the current version of a segment, in ID order, ``batch`` records per read.

        Memory stays bounded by ``batch`` whatever the segment's size. The
        first read starts over while writers move records; once shards were
        yielded the stream cannot start over, so a writer replacing the
        segment meanwhile ends it with ``Conflict``.
        """

        def first() -> tuple[Snapshot, list[tuple[str, int, int]], list[BitMap]]:
            snap = self.snapshot([name])
            entries = [(name, s, r) for s, _, r in snap.maps[name].triples()]
            return snap, entries, self.shards(snap.metas, entries[:batch])

        snap, entries, parts = self.consistent(first)
        yield from zip((s for _, s, _ in entries[:batch]), parts)
        for start in range(batch, len(entries), batch):
            chunk = entries[start : start + batch]
            try:
                parts = self.shards(snap.metas, chunk)
            except _Moved:
                raise Conflict(
                    f"segment {name!r} changed while it was being read shard by shard; read it again"
                ) from None
            yield from zip((s for _, s, _ in chunk), parts)

    # -- deciding -----------------------------------------------------------

    def _missing(self, meta: Meta, what: str) -> NoReturn:
        """A record ``meta`` refers to is gone: moved by a writer, or damage."""
        if not self.unchanged(meta):
            raise _Moved(meta.name)
        self._damaged(
            meta.name,
            f"its {what} is missing although its metadata (version {meta.version}) still refers to it",
        )

    def _damaged(self, name: str, what: str) -> NoReturn:
        with self._lock:
            self.stats.damaged += 1
        raise CorruptSegment(
            f"segment {name!r} is damaged: {what}; `segments admin verify --fix` repairs it", segment=name
        )


def _same_version(a: Meta, b: Meta) -> bool:
    return a.version == b.version and a.map_key == b.map_key and a.generation == b.generation


__all__ = ["STREAM_BATCH", "ReadStats", "RecordReader", "Snapshot"]
