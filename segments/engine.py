"""The query path: read a consistent version, plan, load what the plan needs, evaluate.

expression -> metas and shard maps of one committed version (:mod:`.records`)
-> plan: which shards of which segment can contribute (:mod:`.plan`) -> the
missing shard records, loaded into the cache once however many threads ask
(:meth:`Engine.load`) -> evaluation on in-memory bitmaps with a
cardinality-only final step when only the count is wanted (:mod:`.evaluate`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from pyroaring import BitMap, FrozenBitMap

from . import bitmap as bm
from .cache import Entry, SegmentCache, patched
from .catalog import ShardMap, runs_in, shards_in
from .evaluate import Evaluator
from .expressions import Expr, Ref, refs, uses_complement
from .plan import Planner
from .records import RecordReader, Snapshot

#: bitmaps as loaded for a query: the bitmap and the mask of the shards it is exact on
Loaded = dict[str, tuple[BitMap, int]]


@dataclass(frozen=True)
class ReachResult:
    reach: int
    versions: dict[str, int]


class Engine:
    """Answers queries through a shared cache; safe to use from many threads."""

    def __init__(self, reader: RecordReader, cache: SegmentCache, universe: str) -> None:
        self.reader = reader
        self.cache = cache
        self.universe = universe
        self._regions: dict[int, FrozenBitMap] = {}
        self._regions_lock = threading.Lock()

    # -- queries ----------------------------------------------------------

    def reach(self, expr: Expr) -> ReachResult:
        def body() -> ReachResult:
            snap = self._snapshot(expr)
            versions = {n: m.version for n, m in snap.metas.items()}
            if isinstance(expr, Ref):
                return ReachResult(snap.metas[expr.name].cardinality, versions)
            plan = Planner(snap.maps, self.universe)
            loaded = self.load(snap, plan.needs(expr))
            return ReachResult(Evaluator(plan, loaded, self.region_bitmap).count(expr), versions)

        return self.reader.consistent(body)

    def evaluate(self, expr: Expr) -> tuple[BitMap, dict[str, int]]:
        def body() -> tuple[BitMap, dict[str, int]]:
            snap = self._snapshot(expr)
            versions = {n: m.version for n, m in snap.metas.items()}
            plan = Planner(snap.maps, self.universe)
            loaded = self.load(snap, plan.needs(expr))
            result = Evaluator(plan, loaded, self.region_bitmap).eval(expr)
            if any(result is cached for cached, _ in loaded.values()):
                result = result.copy()
            return result, versions

        return self.reader.consistent(body)

    def whole(self, names: Sequence[str]) -> tuple[dict[str, BitMap], Snapshot]:
        """Complete bitmaps of the named segments (shared: do not mutate)."""

        def body() -> tuple[dict[str, BitMap], Snapshot]:
            snap = self.reader.snapshot(names)
            loaded = self.load(snap, {n: None for n in snap.metas})
            return {n: bitmap for n, (bitmap, _) in loaded.items()}, snap

        return self.reader.consistent(body)

    def snapshot(self, names: Sequence[str]) -> Snapshot:
        """The current version of the named segments (metas and shard maps)."""
        return self.reader.consistent(lambda: self.reader.snapshot(names))

    def _snapshot(self, expr: Expr) -> Snapshot:
        universe = self.universe if uses_complement(expr) else None
        return self.reader.snapshot(refs(expr), universe=universe)

    # -- loading ----------------------------------------------------------

    def load(self, snap: Snapshot, needs: dict[str, int | None]) -> Loaded:
        """Bitmaps exact on the needed shards (a mask; ``None``: every shard) of each segment.

        Run inside :meth:`RecordReader.consistent` (a shard record a writer
        moved starts the read over). Single-flight: a segment that another
        thread is loading is waited for, not fetched again.
        """
        out: Loaded = {}
        slow: dict[str, int | None] = {}
        for name, need in needs.items():
            hit = self._cached(name, snap.maps[name], need)
            if hit is None:
                slow[name] = need
            else:
                out[name] = hit
        if not slow:
            self.cache.count(hits=len(out))
            return out
        with self.cache.loading(slow):
            todo: dict[str, int | None] = {}
            for name, need in slow.items():
                hit = self._cached(name, snap.maps[name], need)
                if hit is None:
                    todo[name] = need
                else:
                    out[name] = hit
            self.cache.count(hits=len(out), misses=len(todo))
            if todo:
                out.update(self._fetch(snap, todo))
        return out

    def _cached(self, name: str, shard_map: ShardMap, need: int | None) -> tuple[BitMap, int] | None:
        entry = self.cache.get(name)
        if entry is None or entry.map_key != shard_map.key:
            return None
        if entry.complete is not None:
            return entry.bitmap, shard_map.mask
        held = entry.held_mask
        if need is not None and need & ~held == 0:
            return entry.bitmap, held
        return None

    def _fetch(self, snap: Snapshot, needs: dict[str, int | None]) -> Loaded:
        wanted: list[tuple[str, int, int]] = []
        entries: dict[str, Entry | None] = {}
        for name, need in needs.items():
            shard_map = snap.maps[name]
            entry = entries[name] = self.cache.get(name)
            mask = shard_map.mask if need is None else need & shard_map.mask
            valid = entry.valid_shards(shard_map) if entry is not None else set()
            rids = shard_map.rids()
            wanted.extend((name, s, rids[s]) for s in shards_in(mask) if s not in valid)
        fresh: dict[str, dict[int, BitMap]] = {name: {} for name in needs}
        if wanted:
            self.cache.count(shard_fetches=len(wanted))
            for (name, shard, _), part in zip(wanted, self.reader.shards(snap.metas, wanted)):
                fresh[name][shard] = part
        out: Loaded = {}
        for name in needs:
            new_entry = patched(entries[name], name, snap.maps[name], fresh[name])
            if new_entry is not entries[name]:
                self.cache.put(new_entry)
            out[name] = (new_entry.bitmap, new_entry.held_mask)
        return out

    def region_bitmap(self, mask: int) -> FrozenBitMap:
        """Every ID of the shards in ``mask`` (a few run containers), memoised."""
        hit = self._regions.get(mask)
        if hit is None:
            ranges = BitMap()
            for start, stop in runs_in(mask):
                ranges.add_range(start << bm.SHARD_BITS, stop << bm.SHARD_BITS)
            hit = FrozenBitMap(ranges)
            with self._regions_lock:
                if len(self._regions) >= 256:
                    self._regions.pop(next(iter(self._regions)))
                self._regions[mask] = hit
        return hit


__all__ = ["Engine", "Loaded", "ReachResult"]
