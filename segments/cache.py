"""Hot segments kept in memory as whole bitmaps, loaded and patched shard by shard.

An entry remembers which shards it holds and at which record id (``rid``); a
new version of the segment changes the rids of exactly the shards it
rewrote, so a refresh fetches only those. Entries are never mutated once
published: a refresh builds a new bitmap and swaps the entry, so a query
running on another thread keeps a consistent view.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from pyroaring import BitMap

from .catalog import ShardMap


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

    def holds(self, shard: int) -> bool:
        if self.complete is not None:
            return self.complete.has(shard)
        return shard in self.partial

    def held_count(self) -> int:
        return len(self.complete.entries) if self.complete is not None else len(self.partial)

    def valid_shards(self, shard_map: ShardMap) -> set[int]:
        """Loaded shards that are still current under ``shard_map``."""
        if shard_map.key == self.map_key:
            return set(self.loaded)
        rids = shard_map.rids()
        return {s for s, rid in self.loaded.items() if rids.get(s) == rid}

    def is_complete(self, shard_map: ShardMap) -> bool:
        return shard_map.key == self.map_key and self.held_count() == len(shard_map.entries)


def make_entry(name: str, shard_map: ShardMap, bitmap: BitMap, loaded: dict[int, int], nbytes: int) -> Entry:
    """An entry, compacted to a complete one when it holds every shard of ``shard_map``."""
    if len(loaded) == len(shard_map.entries):
        return Entry(name, shard_map.key, bitmap, {}, nbytes, shard_map)
    return Entry(name, shard_map.key, bitmap, loaded, nbytes)


class SegmentCache:
    """An LRU of entries bounded by bitmap bytes."""

    def __init__(self, max_bytes: int = 4 << 30) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._maps: OrderedDict[str, ShardMap] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.stats = CacheStats()

    def get(self, name: str) -> Entry | None:
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:
                self._entries.move_to_end(name)
            return entry

    def peek(self, name: str) -> Entry | None:
        """Read without touching the LRU order (lock-free: a dict read is atomic)."""
        return self._entries.get(name)

    def put(self, entry: Entry) -> None:
        with self._lock:
            old = self._entries.pop(entry.name, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[entry.name] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.stats.evictions += 1

    def drop(self, name: str) -> None:
        with self._lock:
            old = self._entries.pop(name, None)
            if old is not None:
                self._bytes -= old.nbytes

    def get_map(self, key: str) -> ShardMap | None:
        with self._lock:
            return self._maps.get(key)

    def put_map(self, shard_map: ShardMap) -> None:
        with self._lock:
            self._maps[shard_map.key] = shard_map
            while len(self._maps) > 4096:
                self._maps.popitem(last=False)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._entries)


def patched(entry: Entry | None, name: str, shard_map: ShardMap, fresh: dict[int, BitMap]) -> Entry:
    """A new entry: ``entry`` minus stale shards plus ``fresh`` shards, under ``shard_map``."""
    rids = shard_map.rids()
    if entry is None:
        bitmap = BitMap.union(BitMap(), *fresh.values()) if fresh else BitMap()
        loaded = {s: rids[s] for s in fresh}
    else:
        keep = entry.valid_shards(shard_map) - set(fresh)
        stale = set(entry.loaded) - keep
        if not stale and not fresh:
            if entry.map_key == shard_map.key:
                return entry
            return make_entry(name, shard_map, entry.bitmap, dict(entry.loaded), entry.nbytes)
        base = entry.bitmap.copy()
        for s in stale:
            base.remove_range(s << 16, (s + 1) << 16)
        bitmap = BitMap.union(base, *fresh.values()) if fresh else base
        held = entry.loaded
        loaded = {s: held[s] for s in keep}
        loaded.update({s: rids[s] for s in fresh})
    bitmap.shrink_to_fit()
    return make_entry(name, shard_map, bitmap, loaded, _size(bitmap))


def _size(bitmap: BitMap) -> int:
    stats = bitmap.get_statistics()
    return int(
        stats["n_bytes_array_containers"]
        + stats["n_bytes_run_containers"]
        + stats["n_bytes_bitset_containers"]
    )
