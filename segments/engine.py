"""The read path: fetch metadata, plan the shards a query needs, load them, evaluate.

expression -> metas (one batch read) -> shard maps (immutable, cached) ->
plan (which shards of which segment can contribute) -> one batch read of the
missing shard records -> evaluation on whole in-memory bitmaps, with a
cardinality-only final step when only the count is wanted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pyroaring import BitMap

from . import bitmap as bm
from .cache import Entry, SegmentCache, patched
from .catalog import EMPTY_MAP, Meta, Sets, ShardMap, decode_map, decode_meta, shard_key
from .errors import CorruptSegment, SegmentNotFound, StorageUnavailable, UniverseNotFound
from .expressions import And, Diff, Expr, Not, Or, Ref, refs, uses_complement
from .storage.base import Store

_T = TypeVar("_T")
_READ_ATTEMPTS = 8


class _Moved(Exception):
    """A record vanished under a concurrent writer: re-read from the meta records."""


@dataclass(frozen=True)
class ReachResult:
    reach: int
    versions: dict[str, int]


@dataclass(frozen=True)
class Snapshot:
    """Consistent metadata of the segments a query names."""

    metas: dict[str, Meta]
    maps: dict[str, ShardMap]


class Engine:
    """Reads segments through a shared cache; safe to use from many threads."""

    def __init__(self, store: Store, sets: Sets, cache: SegmentCache, universe: str) -> None:
        self.store = store
        self.sets = sets
        self.cache = cache
        self.universe = universe

    # -- metadata ---------------------------------------------------------

    def read_metas(self, names: Sequence[str]) -> dict[str, Meta | None]:
        records = self.store.get_many(self.sets.meta, list(names))
        return {n: (None if r is None else decode_meta(n, r)) for n, r in zip(names, records)}

    def snapshot(self, names: Iterable[str], *, need_universe: bool = False) -> Snapshot:
        wanted = list(dict.fromkeys(names))
        if need_universe and self.universe not in wanted:
            wanted.append(self.universe)
        found = self.read_metas(wanted)
        if need_universe and found.get(self.universe) is None:
            raise UniverseNotFound(self.universe)
        missing = [n for n, m in found.items() if m is None]
        if missing:
            raise SegmentNotFound(missing)
        metas = {n: m for n, m in found.items() if m is not None}
        return Snapshot(metas, self.read_maps(metas.values()))

    def read_maps(self, metas: Iterable[Meta]) -> dict[str, ShardMap]:
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
                    raise _Moved(meta.name)
                shard_map = decode_map(meta.map_key, record)
                self.cache.put_map(shard_map)
                maps[meta.name] = shard_map
        return maps

    # -- shard loading ----------------------------------------------------

    def load(self, snap: Snapshot, needs: dict[str, set[int] | None]) -> dict[str, BitMap]:
        """Bitmaps exact on the needed shards (``None``: every shard) of each segment."""
        fetch: list[tuple[str, int, int]] = []
        entries: dict[str, Entry | None] = {}
        for name, need in needs.items():
            shard_map = snap.maps[name]
            entry = self.cache.get(name)
            entries[name] = entry
            missing: set[int] | frozenset[int]
            if entry is not None and entry.map_key == shard_map.key:
                # Same version as cached: only shards never loaded can be missing.
                loaded = entry.loaded
                if need is None:
                    if len(loaded) == len(shard_map.entries):
                        self.cache.stats.hits += 1
                        continue
                    missing = shard_map.shards - loaded.keys()
                else:
                    missing = {x for x in need if x not in loaded and x in shard_map.shards}
                    if not missing:
                        self.cache.stats.hits += 1
                        continue
            else:
                wanted = shard_map.shards if need is None else (need & shard_map.shards)
                have = entry.valid_shards(shard_map) if entry is not None else set()
                missing = wanted - have
            if missing:
                self.cache.stats.misses += 1
            else:
                self.cache.stats.hits += 1
            rids = shard_map.rids()
            fetch.extend((name, s, rids[s]) for s in sorted(missing))
        fresh: dict[str, dict[int, BitMap]] = {name: {} for name in needs}
        if fetch:
            self.cache.stats.shard_fetches += len(fetch)
            records = self.store.get_many(
                self.sets.shard, [shard_key(n, s, rid) for n, s, rid in fetch]
            )
            for (name, shard, _), record in zip(fetch, records):
                if record is None:
                    raise _Moved(name)
                raw = record.bins.get("bm")
                if not isinstance(raw, bytes):
                    raise CorruptSegment(f"shard {shard} of segment {name!r} has no bitmap")
                fresh[name][shard] = bm.deserialize(raw, untrusted=False)
        out: dict[str, BitMap] = {}
        for name in needs:
            entry = entries[name]
            shard_map = snap.maps[name]
            if entry is not None and not fresh[name] and entry.map_key == shard_map.key:
                out[name] = entry.bitmap
                continue
            new_entry = patched(entry, name, shard_map, fresh[name])
            self.cache.put(new_entry)
            out[name] = new_entry.bitmap
        return out

    def retrying(self, body: Callable[[], _T]) -> _T:
        """Run a read, starting over if a concurrent writer moved records under it."""
        for attempt in range(_READ_ATTEMPTS):
            try:
                return body()
            except _Moved:
                time.sleep(0.001 * (2**attempt))
        raise StorageUnavailable("segments kept changing while being read; try again")

    # -- queries ----------------------------------------------------------

    def reach(self, expr: Expr) -> ReachResult:
        def body() -> ReachResult:
            snap = self.snapshot(refs(expr), need_universe=uses_complement(expr))
            versions = {n: m.version for n, m in snap.metas.items()}
            if isinstance(expr, Ref):
                return ReachResult(snap.metas[expr.name].cardinality, versions)
            plan = _Planner(snap, self.universe)
            bitmaps = self.load(snap, plan.needs(expr))
            return ReachResult(_count(expr, bitmaps, self.universe), versions)

        return self.retrying(body)

    def evaluate(self, expr: Expr) -> tuple[BitMap, dict[str, int]]:
        def body() -> tuple[BitMap, dict[str, int]]:
            snap = self.snapshot(refs(expr), need_universe=uses_complement(expr))
            versions = {n: m.version for n, m in snap.metas.items()}
            plan = _Planner(snap, self.universe)
            bitmaps = self.load(snap, plan.needs(expr))
            result = _eval(expr, bitmaps, self.universe)
            if isinstance(expr, Ref):
                result = result.copy()
            return result, versions

        return self.retrying(body)

    def whole(self, names: Sequence[str]) -> tuple[dict[str, BitMap], Snapshot]:
        """Complete bitmaps of the named segments (shared: do not mutate)."""

        def body() -> tuple[dict[str, BitMap], Snapshot]:
            snap = self.snapshot(names)
            return self.load(snap, {n: None for n in snap.metas}), snap

        return self.retrying(body)


class _Planner:
    """Which shards of which segment can contribute to an expression.

    ``ub(node)`` is an upper bound of the shards where ``node`` can be
    non-empty; a node is only needed exactly on ``R(node) = R(parent) ∩ ub(node)``
    (``R(root) = ub(root)``). Loading each segment on the union of its
    ``R`` values yields a result that is exact everywhere.
    """

    def __init__(self, snap: Snapshot, universe: str) -> None:
        self.snap = snap
        self.universe = universe
        self._ub: dict[int, frozenset[int]] = {}
        self._needs: dict[str, set[int]] = {}

    def ub(self, node: Expr) -> frozenset[int]:
        key = id(node)
        hit = self._ub.get(key)
        if hit is not None:
            return hit
        if isinstance(node, Ref):
            out = self.snap.maps[node.name].shards
        elif isinstance(node, Not):
            out = self.snap.maps[self.universe].shards
        elif isinstance(node, And):
            parts = sorted((self.ub(op) for op in node.operands), key=len)
            out = parts[0].intersection(*parts[1:])
        elif isinstance(node, Diff):
            out = self.ub(node.operands[0])
            for op in node.operands[1:]:
                self.ub(op)
        else:
            out = frozenset().union(*(self.ub(op) for op in node.operands))
        self._ub[key] = out
        return out

    def needs(self, root: Expr) -> dict[str, set[int] | None]:
        self._walk(root, self.ub(root))
        out: dict[str, set[int] | None] = {}
        for name, shards in self._needs.items():
            complete = len(shards) == len(self.snap.maps[name].entries)
            out[name] = None if complete else shards
        return out

    def _need(self, name: str, shards: frozenset[int]) -> None:
        self._needs.setdefault(name, set()).update(shards)

    def _walk(self, node: Expr, region: frozenset[int]) -> None:
        if isinstance(node, Ref):
            self._need(node.name, region & self.snap.maps[node.name].shards)
        elif isinstance(node, Not):
            self._need(self.universe, region & self.snap.maps[self.universe].shards)
            self._walk(node.operand, region & self.ub(node.operand))
        else:
            for op in node.operands:
                self._walk(op, region & self.ub(op))


def _eval(node: Expr, bitmaps: dict[str, BitMap], universe: str) -> BitMap:
    """Materialise a node. May return a cached bitmap for a ``Ref``: never mutate the result."""
    if isinstance(node, Ref):
        return bitmaps[node.name]
    if isinstance(node, Not):
        return bitmaps[universe] - _eval(node.operand, bitmaps, universe)
    values = [_eval(op, bitmaps, universe) for op in node.operands]
    if isinstance(node, And):
        values.sort(key=len)
        return BitMap.intersection(*values)
    if isinstance(node, Or):
        return BitMap.union(*values)
    if isinstance(node, Diff):
        first, rest = values[0], values[1:]
        return first - (rest[0] if len(rest) == 1 else BitMap.union(*rest))
    result = values[0] ^ values[1]
    for value in values[2:]:
        result ^= value
    return result


def _count(node: Expr, bitmaps: dict[str, BitMap], universe: str) -> int:
    """Cardinality of a node, with no materialised result at the top."""
    if isinstance(node, Ref):
        return len(bitmaps[node.name])
    if isinstance(node, Not):
        whole = bitmaps[universe]
        return len(whole) - whole.intersection_cardinality(_eval(node.operand, bitmaps, universe))
    values = [_eval(op, bitmaps, universe) for op in node.operands]
    if isinstance(node, And):
        values.sort(key=len)
        head = values[0] if len(values) == 2 else BitMap.intersection(*values[:-1])
        return head.intersection_cardinality(values[-1])
    if isinstance(node, Or):
        values.sort(key=len)
        head = values[0] if len(values) == 2 else BitMap.union(*values[:-1])
        return head.union_cardinality(values[-1])
    if isinstance(node, Diff):
        first, rest = values[0], values[1:]
        other = rest[0] if len(rest) == 1 else BitMap.union(*rest)
        return first.difference_cardinality(other)
    head = values[0]
    for value in values[1:-1]:
        head = head ^ value
    return head.symmetric_difference_cardinality(values[-1])
