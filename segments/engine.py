"""The query path: read a consistent version, plan, load what the plan needs, evaluate.

expression -> metas and shard maps of one committed version (:mod:`.records`)
-> plan: which shards of which segment can contribute (:mod:`.plan`) -> the
missing shard records, loaded into the cache once however many threads ask
(:meth:`Engine.load`) -> evaluation on in-memory bitmaps with a
cardinality-only final step when only the count is wanted (:mod:`.evaluate`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pyroaring import BitMap, FrozenBitMap

from . import bitmap as bm
from .cache import Entry, SegmentCache, patched
from .catalog import Meta, ShardMap, decode_meta, runs_in, shards_in
from .evaluate import Evaluator, holds
from .expressions import Expr, Ref, refs, uses_complement
from .expressions.ast import facts
from .plan import Plan, Planner
from .records import RecordReader, Snapshot
from .storage.base import Record

#: bitmaps as loaded for a query: the bitmap and the mask of the shards it is exact on
Loaded = dict[str, tuple[BitMap, int]]


@dataclass(frozen=True)
class ReachResult:
    reach: int
    #: version of every segment read
    versions: dict[str, int]
    #: definition version of every audience the expression used
    audiences: dict[str, int] = field(default_factory=dict)
    #: age (seconds) of the metadata the answer used: 0 when read for this query
    staleness: float = 0.0


#: where a query's metadata comes from: (names, universe or None) -> (snapshot, its age in seconds)
MetadataSource = Callable[[Sequence[str], "str | None"], tuple[Snapshot, float]]


@dataclass(frozen=True)
class InsightRow:
    """How one segment is represented in an audience."""

    segment: str
    #: users in both the audience and the segment
    both: int
    #: share of the audience in the segment
    share_of_audience: float
    #: share of the universe in the segment
    share_of_universe: float
    #: lift: ``share_of_audience / share_of_universe * 100`` (``None`` when the segment is empty)
    index: float | None


@dataclass(frozen=True)
class Insights:
    reach: int
    universe: int
    rows: list[InsightRow]
    versions: dict[str, int]
    audiences: dict[str, int] = field(default_factory=dict)


class Engine:
    """Answers queries through a shared cache; safe to use from many threads."""

    def __init__(self, reader: RecordReader, cache: SegmentCache, universe: str) -> None:
        self.reader = reader
        self.cache = cache
        self.universe = universe
        self._regions: dict[int, FrozenBitMap] = {}
        self._regions_lock = threading.Lock()
        self._universe_counts: dict[tuple[str, str], int] = {}
        #: the metadata of queries; by default read from the store for every query (:meth:`read_metadata`)
        self.metadata: MetadataSource = self.read_metadata
        #: segment -> its last meta record as read and its decoding (a record unchanged is not decoded again)
        self._metas: dict[str, tuple[Record, Meta]] = {}
        self._plans: dict[tuple[int, tuple[tuple[str, str], ...]], tuple[Expr, Plan, dict[str, int | None]]] = {}

    # -- queries ----------------------------------------------------------

    def reach(self, expr: Expr) -> ReachResult:
        def body() -> ReachResult:
            snap, age = self._snapshot(expr)
            versions = {n: m.version for n, m in snap.metas.items()}
            if isinstance(expr, Ref):
                return ReachResult(snap.metas[expr.name].cardinality, versions, staleness=age)
            plan, needs = self._plan(expr, snap)
            loaded = self.load(snap, needs)
            count = Evaluator(plan, loaded, self.region_bitmap).count(expr)
            return ReachResult(count, versions, staleness=age)

        return self.reader.consistent(body)

    def _plan(self, expr: Expr, snap: Snapshot) -> tuple[Plan, dict[str, int | None]]:
        """The plan of ``expr`` over these versions, remembered: the same query on unchanged
        segments (the hot case) is planned once."""
        # Keyed by the tree object itself (the planner's regions are keyed by node identity), which
        # the entry keeps alive so its id cannot be reused; parsed texts are cached, so the same
        # text gives the same object.
        key = (id(expr), tuple((n, m.key) for n, m in snap.maps.items()))
        hit = self._plans.get(key)
        if hit is not None and hit[0] is expr:
            return hit[1], hit[2]
        plan, needs = Planner(snap.maps, self.universe).plan(expr)
        with self._regions_lock:
            if len(self._plans) >= 1024:
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = (expr, plan, needs)
        return plan, needs

    def evaluate(self, expr: Expr) -> tuple[BitMap, dict[str, int]]:
        def body() -> tuple[BitMap, dict[str, int]]:
            snap, _ = self._snapshot(expr)
            versions = {n: m.version for n, m in snap.metas.items()}
            plan, needs = self._plan(expr, snap)
            loaded = self.load(snap, needs)
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

    def matches(self, snap: Snapshot, expr: Expr, uids: Sequence[int]) -> list[bool]:
        """Whether each user is selected by ``expr``, reading only the users' shards.

        ``snap`` must hold every segment ``expr`` names (and the universe when
        it has a complement). Run inside :meth:`RecordReader.consistent`.
        """
        names = set(refs(expr))
        if uses_complement(expr):
            names.add(self.universe)
        shards = 0
        for uid in uids:
            shards |= 1 << bm.shard_of(uid)
        loaded = self.load(snap, {n: shards & snap.maps[n].mask for n in names})
        bitmaps = {n: b for n, (b, _) in loaded.items()}
        return [holds(expr, uid, bitmaps, self.universe) for uid in uids]

    def insights(self, expr: Expr, names: Sequence[str], derived: Mapping[str, Expr] | None = None) -> Insights:
        """For each named segment: its overlap with the audience ``expr`` and its lift. One version.

        ``derived`` adds rows that are expressions (audiences, windowed segments) under their names.
        """
        derived = dict(derived or {})

        def body() -> Insights:
            extra = [r for e in derived.values() for r in facts(e).refs]
            snap = self.reader.snapshot([*refs(expr), *names, *extra], universe=self.universe)
            audience = self._evaluate_in(snap, expr)
            whole = self.load(snap, {n: None for n in dict.fromkeys([*names, self.universe])})
            universe, _ = whole[self.universe]
            members = {name: whole[name][0] for name in names}
            members.update({name: self._evaluate_in(snap, tree) for name, tree in derived.items()})
            size, total = len(audience), len(universe)
            rows = []
            for name, bitmap in members.items():
                both = audience.intersection_cardinality(bitmap)
                if name in derived:
                    in_universe = bitmap.intersection_cardinality(universe)
                else:
                    in_universe = self._in_universe(name, bitmap, snap.maps[name], snap.maps[self.universe], universe)
                share_a = both / size if size else 0.0
                share_u = in_universe / total if total else 0.0
                index = share_a / share_u * 100 if share_u else None
                rows.append(InsightRow(name, both, share_a, share_u, index))
            rows.sort(key=lambda r: (r.index is None, -(r.index or 0.0), r.segment))
            versions = {n: m.version for n, m in snap.metas.items()}
            return Insights(size, total, rows, versions)

        return self.reader.consistent(body)

    def _evaluate_in(self, snap: Snapshot, expr: Expr) -> BitMap:
        """``expr`` evaluated on the versions of ``snap`` (may be a cached bitmap: do not mutate)."""
        plan = Planner(snap.maps, self.universe)
        loaded = self.load(snap, plan.needs(expr))
        return Evaluator(plan, loaded, self.region_bitmap).eval(expr)

    def _in_universe(self, name: str, members: BitMap, smap: ShardMap, umap: ShardMap, universe: BitMap) -> int:
        """``|segment & universe|``, remembered per pair of versions (it changes only when one does)."""
        key = (smap.key, umap.key)
        hit = self._universe_counts.get(key)
        if hit is None:
            hit = members.intersection_cardinality(universe)
            with self._regions_lock:
                if len(self._universe_counts) >= 4096:
                    self._universe_counts.pop(next(iter(self._universe_counts)))
                self._universe_counts[key] = hit
        return hit

    def read_metadata(self, names: Sequence[str], universe: str | None) -> tuple[Snapshot, float]:
        """The current version of the named segments (and the universe): one batch read of their meta
        records, as :meth:`RecordReader.snapshot` does, but a record unchanged since this engine last read
        it (the same generation and bins; a store may even return the same object) keeps its decoded
        :class:`Meta` instead of being decoded again. The version check is the read itself, so the answer
        is as fresh as without the memo; shard maps come through the reader (and its cache) as before."""
        wanted = list(dict.fromkeys(names))
        if universe is not None and universe not in wanted:
            wanted.append(universe)
        records = self.reader.store.get_many(self.reader.sets.meta, wanted)
        memo = self._metas
        metas: dict[str, Meta] = {}
        for name, record in zip(wanted, records):
            if record is None:  # unknown (or deleted): the reader says which, precisely
                return self.reader.snapshot(names, universe=universe), 0.0
            hit = memo.get(name)
            if hit is not None and (
                hit[0] is record or (hit[0].generation == record.generation and hit[0].bins == record.bins)
            ):
                metas[name] = hit[1]
                continue
            meta = metas[name] = decode_meta(name, record)
            with self._regions_lock:
                if len(memo) >= 4096 and name not in memo:
                    memo.pop(next(iter(memo)), None)
                memo[name] = (record, meta)
        return Snapshot(metas, self.reader.maps(metas.values())), 0.0

    def snapshot(self, names: Sequence[str]) -> Snapshot:
        """The current version of the named segments (metas and shard maps)."""
        return self.reader.consistent(lambda: self.reader.snapshot(names))

    def _snapshot(self, expr: Expr) -> tuple[Snapshot, float]:
        known = facts(expr)
        return self.metadata(known.refs, self.universe if known.complement else None)

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


__all__ = ["Engine", "MetadataSource", "InsightRow", "Insights", "Loaded", "ReachResult"]
