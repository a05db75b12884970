"""Hot segments kept in memory as whole bitmaps, loaded and patched shard by shard.

An entry remembers which shards it holds and at which record id (``rid``); a
new version of the segment changes the rids of exactly the shards it
rewrote, so a refresh fetches only those. Entries are never mutated once
published: a refresh builds a new bitmap and swaps the entry, so a query
running on another thread keeps a consistent view.

Everything the cache holds (segment entries and shard maps) counts against
one byte budget and is evicted in one least-recently-used order; other caches
of the process (the key translation cache) charge what they hold to the same
budget (:meth:`SegmentCache.charge`). Loads are
single-flight: while one thread fetches a segment's shards, other threads
that need the same segment wait for it (:meth:`SegmentCache.loading`) and
then find it cached, so a herd of cold queries reads each shard once.
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from pyroaring import BitMap

from .catalog import ShardMap, mask_of

#: stripes of the single-flight locks (bounded memory whatever the number of segments)
_FLIGHT_STRIPES = 64
#: what an entry costs beyond its bitmap's containers
_ENTRY_OVERHEAD = 200
#: what each container costs beyond its payload (CRoaring's per-container struct, key and pointer,
#: and the allocator's share: 16 sparse bitmaps of 65,536 containers measured 75 B a container)
_CONTAINER_OVERHEAD = 75


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    shard_fetches: int = 0
    evictions: int = 0


@dataclass(frozen=True)
class Entry:
    """One segment as far as it is loaded.

    A complete entry (the usual, hot case) points at the shard map it holds
    every shard of and keeps no per-shard bookkeeping; a partial entry keeps
    ``shard -> rid`` of the shard records merged into ``bitmap``.
    """

    name: str
    map_key: str
    bitmap: BitMap
    partial: dict[int, int] = field(default_factory=dict)
    nbytes: int = 0
    complete: ShardMap | None = None

    @property
    def loaded(self) -> dict[int, int]:
        """shard -> rid of every shard held (built on each call for complete entries)."""
        return self.complete.rids() if self.complete is not None else self.partial

    @property
    def held_mask(self) -> int:
        return self.complete.mask if self.complete is not None else mask_of(self.partial)

    def holds(self, shard: int) -> bool:
        if self.complete is not None:
            return self.complete.has(shard)
        return shard in self.partial

    def valid_shards(self, shard_map: ShardMap) -> set[int]:
        """Loaded shards that are still current under ``shard_map``."""
        if shard_map.key == self.map_key:
            return set(self.loaded)
        rids = shard_map.rids()
        return {s for s, rid in self.loaded.items() if rids.get(s) == rid}


_Key = tuple[bool, str]  # (is a shard map, name or map key)


class SegmentCache:
    """An LRU of segment entries and shard maps bounded by their bytes."""

    def __init__(self, max_bytes: int = 4 << 30) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[_Key, tuple[Entry | ShardMap, int]] = OrderedDict()
        self._entries: dict[str, Entry] = {}
        #: segment -> the key of its shard map in the cache
        self._map_of: dict[str, str] = {}
        self._bytes = 0
        self._charged: dict[str, int] = {}  # bytes other caches of the process hold, by owner
        self._lock = threading.Lock()
        self._flights = [threading.Lock() for _ in range(_FLIGHT_STRIPES)]
        self.stats = CacheStats()

    # -- entries ------------------------------------------------------------

    def get(self, name: str) -> Entry | None:
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:
                self._items.move_to_end((False, name))
            return entry

    def peek(self, name: str) -> Entry | None:
        """Read without touching the LRU order (lock-free: a dict read is atomic)."""
        return self._entries.get(name)

    def put(self, entry: Entry) -> None:
        with self._lock:
            self._entries[entry.name] = entry
            self._store((False, entry.name), entry, entry.nbytes)

    def drop(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)
            held = self._items.pop((False, name), None)
            if held is not None:
                self._bytes -= held[1]

    # -- shard maps ---------------------------------------------------------

    def get_map(self, key: str) -> ShardMap | None:
        with self._lock:
            held = self._items.get((True, key))
            if held is None:
                return None
            self._items.move_to_end((True, key))
            value = held[0]
            assert isinstance(value, ShardMap)
            return value

    def put_map(self, shard_map: ShardMap) -> None:
        """Cache a shard map; the segment's previous map goes (a superseded version is not read
        again once its successor is known, and a large map is ~0.9 MiB)."""
        segment = shard_map.key.rpartition("/")[0]
        with self._lock:
            previous = self._map_of.get(segment)
            if previous is not None and previous != shard_map.key:
                held = self._items.pop((True, previous), None)
                if held is not None:
                    self._bytes -= held[1]
            self._map_of[segment] = shard_map.key
            self._store((True, shard_map.key), shard_map, shard_map.nbytes)

    # -- accounting ---------------------------------------------------------

    def _store(self, key: _Key, value: Entry | ShardMap, nbytes: int) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        self._items[key] = (value, nbytes)
        self._bytes += nbytes
        self._evict()

    def charge(self, owner: str, nbytes: int) -> None:
        """Count ``nbytes`` held by another cache of the process (``owner``: e.g. ``"keys"``, the
        key translation cache) against this budget, evicting entries to make room."""
        with self._lock:
            self._charged[owner] = nbytes
            self._evict()

    def _evict(self) -> None:
        limit = self.max_bytes - sum(self._charged.values())
        while self._bytes > limit and len(self._items) > 1:
            (is_map, name), (_, size) = self._items.popitem(last=False)
            self._bytes -= size
            if is_map:
                segment = name.rpartition("/")[0]
                if self._map_of.get(segment) == name:
                    del self._map_of[segment]
            else:
                self._entries.pop(name, None)
            self.stats.evictions += 1

    def count(self, *, hits: int = 0, misses: int = 0, shard_fetches: int = 0) -> None:
        """Add to the statistics (under the lock: queries run on many threads)."""
        with self._lock:
            self.stats.hits += hits
            self.stats.misses += misses
            self.stats.shard_fetches += shard_fetches

    @contextmanager
    def loading(self, names: Iterable[str]) -> Iterator[None]:
        """Hold the single-flight locks of ``names`` (in a fixed order, so never a deadlock)."""
        stripes = sorted({zlib.crc32(n.encode()) % _FLIGHT_STRIPES for n in names})
        with ExitStack() as stack:
            for stripe in stripes:
                stack.enter_context(self._flights[stripe])
            yield

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._entries)


def make_entry(name: str, shard_map: ShardMap, bitmap: BitMap, loaded: dict[int, int]) -> Entry:
    """An entry, compacted to a complete one when it holds every shard of ``shard_map``."""
    if len(loaded) == len(shard_map.entries):
        return Entry(name, shard_map.key, bitmap, {}, _size(bitmap), shard_map)
    return Entry(name, shard_map.key, bitmap, loaded, _size(bitmap) + 16 * len(loaded))


def patched(entry: Entry | None, name: str, shard_map: ShardMap, fresh: dict[int, BitMap]) -> Entry:
    """A new entry: ``entry`` minus stale shards plus ``fresh`` shards, under ``shard_map``."""
    rids = shard_map.rids()
    if entry is None:
        bitmap = BitMap.union(BitMap(), *fresh.values()) if fresh else BitMap()
        bitmap.shrink_to_fit()
        return make_entry(name, shard_map, bitmap, {s: rids[s] for s in fresh})
    keep = entry.valid_shards(shard_map) - set(fresh)
    stale = set(entry.loaded) - keep
    if not stale and not fresh and entry.map_key == shard_map.key:
        return entry
    held = entry.loaded
    loaded = {s: held[s] for s in keep}
    loaded.update({s: rids[s] for s in fresh})
    if not stale and not fresh:
        return make_entry(name, shard_map, entry.bitmap, loaded)
    base = entry.bitmap.copy()
    for s in stale:
        base.remove_range(s << 16, (s + 1) << 16)
    bitmap = BitMap.union(base, *fresh.values()) if fresh else base
    bitmap.shrink_to_fit()
    return make_entry(name, shard_map, bitmap, loaded)


def _size(bitmap: BitMap) -> int:
    stats = bitmap.get_statistics()
    return _ENTRY_OVERHEAD + int(
        stats["n_bytes_array_containers"]
        + stats["n_bytes_run_containers"]
        + stats["n_bytes_bitset_containers"]
        + _CONTAINER_OVERHEAD * stats["n_containers"]
    )
