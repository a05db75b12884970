"""The read path: fetch metadata, plan the shards a query needs, load them, evaluate.

expression -> metas (one batch read) -> shard maps (immutable, cached) ->
plan (which shards of which segment can contribute) -> one batch read of the
missing shard records -> evaluation on whole in-memory bitmaps, with a
cardinality-only final step when only the count is wanted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from pyroaring import BitMap, FrozenBitMap

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
        self._regions: dict[int, FrozenBitMap] = {}
        self._regions_lock = threading.Lock()

    def region_bitmap(self, mask: int) -> FrozenBitMap:
        """Every ID of the shards in ``mask`` (a few run containers), memoised."""
        hit = self._regions.get(mask)
        if hit is None:
            ranges = BitMap()
            for start, stop in _runs(mask):
                ranges.add_range(start << bm.SHARD_BITS, stop << bm.SHARD_BITS)
            hit = FrozenBitMap(ranges)
            with self._regions_lock:
                if len(self._regions) >= 256:
                    self._regions.pop(next(iter(self._regions)))
                self._regions[mask] = hit
        return hit

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
        masks = {n: (None if need is None else _mask_from(need)) for n, need in needs.items()}
        return {n: bitmap for n, (bitmap, _) in self.load_masks(snap, masks).items()}

    def load_masks(self, snap: Snapshot, needs: dict[str, int | None]) -> dict[str, tuple[BitMap, int]]:
        """Bitmaps exact on the needed shards (a mask; ``None``: every shard), each with
        the mask of the shards it holds."""
        out: dict[str, tuple[BitMap, int]] = {}
        slow: dict[str, set[int] | None] = {}
        for name, need in needs.items():
            shard_map = snap.maps[name]
            entry = self.cache.get(name)
            if entry is not None and entry.map_key == shard_map.key:
                if entry.complete is not None:
                    # Hot and complete at the current version: no per-shard bookkeeping.
                    self.cache.stats.hits += 1
                    out[name] = (entry.bitmap, shard_map.mask)
                    continue
                held = _mask_from(entry.partial)
                if need is not None and need & ~held == 0:
                    self.cache.stats.hits += 1
                    out[name] = (entry.bitmap, held)
                    continue
            slow[name] = None if need is None else _shards_of_mask(need)
        if slow:
            out.update(self._load_sets(snap, slow))
        return out

    def _load_sets(self, snap: Snapshot, needs: dict[str, set[int] | None]) -> dict[str, tuple[BitMap, int]]:
        fetch: list[tuple[str, int, int]] = []
        entries: dict[str, Entry | None] = {}
        for name, need in needs.items():
            shard_map = snap.maps[name]
            entry = self.cache.get(name)
            entries[name] = entry
            missing: set[int] | frozenset[int]
            if entry is not None and entry.map_key == shard_map.key:
                # Same version as cached: only shards never loaded can be missing.
                if entry.complete is not None:
                    self.cache.stats.hits += 1
                    continue
                loaded = entry.partial
                if need is None:
                    missing = shard_map.shards - loaded.keys()
                else:
                    missing = {x for x in need if x not in loaded and shard_map.has(x)}
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
        out: dict[str, tuple[BitMap, int]] = {}
        for name in needs:
            entry = entries[name]
            shard_map = snap.maps[name]
            if entry is not None and not fresh[name] and entry.map_key == shard_map.key:
                out[name] = (entry.bitmap, _held_mask(entry))
                continue
            new_entry = patched(entry, name, shard_map, fresh[name])
            self.cache.put(new_entry)
            out[name] = (new_entry.bitmap, _held_mask(new_entry))
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
            loaded = self.load_masks(snap, plan.needs(expr))
            return ReachResult(_Evaluator(plan, loaded, self.region_bitmap).count(expr), versions)

        return self.retrying(body)

    def evaluate(self, expr: Expr) -> tuple[BitMap, dict[str, int]]:
        def body() -> tuple[BitMap, dict[str, int]]:
            snap = self.snapshot(refs(expr), need_universe=uses_complement(expr))
            versions = {n: m.version for n, m in snap.metas.items()}
            plan = _Planner(snap, self.universe)
            loaded = self.load_masks(snap, plan.needs(expr))
            result = _Evaluator(plan, loaded, self.region_bitmap).eval(expr)
            if any(result is cached for cached, _ in loaded.values()):
                result = result.copy()
            return result, versions

        return self.retrying(body)

    def whole(self, names: Sequence[str]) -> tuple[dict[str, BitMap], Snapshot]:
        """Complete bitmaps of the named segments (shared: do not mutate)."""

        def body() -> tuple[dict[str, BitMap], Snapshot]:
            snap = self.snapshot(names)
            return self.load(snap, {n: None for n in snap.metas}), snap

        return self.retrying(body)


def _held_mask(entry: Entry) -> int:
    return entry.complete.mask if entry.complete is not None else _mask_from(entry.partial)


def _mask_from(shards: Iterable[int]) -> int:
    arr = shards if isinstance(shards, np.ndarray) else np.fromiter(shards, dtype=np.int64)
    if not len(arr):
        return 0
    bits = np.zeros(int(arr.max()) + 1, dtype=np.uint8)
    bits[arr] = 1
    return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")


def _bits(mask: int) -> np.ndarray:
    raw = np.frombuffer(mask.to_bytes((mask.bit_length() + 7) // 8, "little"), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")


def _shards_of_mask(mask: int) -> set[int]:
    return set(np.flatnonzero(_bits(mask)).tolist())


def _runs(mask: int) -> list[tuple[int, int]]:
    """``[start, stop)`` shard ranges of the set bits of ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], _bits(mask).astype(np.int8), [0]))))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


class _Planner:
    """Which shards of which segment can contribute to an expression.

    ``ub(node)`` is an upper bound of the shards where ``node`` can be
    non-empty; a node is only needed exactly on ``R(node) = R(parent) ∩ ub(node)``
    (``R(root) = ub(root)``). Loading each segment on the union of its
    ``R`` values yields a result that is exact everywhere, and so does
    clipping any leaf to its own ``R`` (``region``). Shard sets are
    int bitmasks (bit ``s`` for shard ``s``): a 50M-user segment has ~763
    shards, and an ``&`` of two masks costs nanoseconds where frozensets
    cost tens of microseconds.
    """

    def __init__(self, snap: Snapshot, universe: str) -> None:
        self.snap = snap
        self.universe = universe
        self._ub: dict[int, int] = {}
        self._needs: dict[str, int] = {}
        #: id(leaf) -> R(leaf); for a ``Not``, the region of its universe
        self.region: dict[int, int] = {}

    def mask(self, name: str) -> int:
        return self.snap.maps[name].mask

    def ub(self, node: Expr) -> int:
        key = id(node)
        hit = self._ub.get(key)
        if hit is not None:
            return hit
        if isinstance(node, Ref):
            out = self.mask(node.name)
        elif isinstance(node, Not):
            out = self.mask(self.universe)
        elif isinstance(node, And):
            out = -1
            for op in node.operands:
                out &= self.ub(op)
        elif isinstance(node, Diff):
            out = self.ub(node.operands[0])
            for op in node.operands[1:]:
                self.ub(op)
        else:
            out = 0
            for op in node.operands:
                out |= self.ub(op)
        self._ub[key] = out
        return out

    def needs(self, root: Expr) -> dict[str, int | None]:
        """Mask of the shards needed per segment (``None``: all of them)."""
        self._walk(root, self.ub(root))
        return {n: (None if m == self.mask(n) else m) for n, m in self._needs.items()}

    def _need(self, node: Expr, name: str, region: int) -> None:
        region &= self.mask(name)
        self.region[id(node)] = region
        self._needs[name] = self._needs.get(name, 0) | region

    def _walk(self, node: Expr, region: int) -> None:
        if isinstance(node, Ref):
            self._need(node, node.name, region)
        elif isinstance(node, Not):
            self._need(node, self.universe, region)
            self._walk(node.operand, region & self.ub(node.operand))
        elif isinstance(node, And) and not all(isinstance(op, Not) for op in node.operands):
            # ``~x`` next to a positive operand is a subtraction: ``y & ~x = (y & U) - x``.
            # The universe is an ``&`` operand (galloped over, never complemented).
            for op in node.operands:
                if isinstance(op, Not):
                    self._need(op, self.universe, region)
                    self._walk(op.operand, region & self.ub(op.operand))
                else:
                    self._walk(op, region & self.ub(op))
        else:
            for op in node.operands:
                self._walk(op, region & self.ub(op))


class _Evaluator:
    """Bottom-up evaluation on cached bitmaps, proportional to the planned region.

    * A cached bitmap usually holds the whole segment while the plan needs
      only some of its shards (``... & recent_signups``). A leaf that would be
      walked container by container (an operand of ``|`` or ``^``, the first
      operand of ``-``, the universe of ``~``) is first clipped to its region:
      a copy of just those containers. An operand of ``&`` and a subtracted
      operand stay whole: CRoaring gallops past the containers it does not need.
    * ``~x`` inside an ``&`` that has a positive operand is a subtraction,
      ``y & ~x = (y & U) - x``; the complement is never materialised.
    * Intermediates this evaluator made are updated in place (no allocation
      per operator), except array-heavy subtractions; a cached bitmap is
      never mutated.
    """

    def __init__(
        self,
        plan: _Planner,
        loaded: dict[str, tuple[BitMap, int]],
        region_bitmap: Callable[[int], FrozenBitMap],
    ) -> None:
        self.plan = plan
        self.loaded = loaded
        self.region_bitmap = region_bitmap
        self.universe = plan.universe

    def leaf(self, node: Expr, name: str, clip: bool) -> tuple[BitMap, bool]:
        """``(bitmap, owned)``: an owned bitmap was made for this query and may be mutated."""
        bitmap, held = self.loaded[name]
        region = self.plan.region[id(node)]
        if not clip or held & ~region == 0:
            return bitmap, False
        if region == 0:
            return BitMap(), True
        return BitMap.intersection(bitmap, self.region_bitmap(region)), True

    def value(self, node: Expr, clip: bool = True) -> tuple[BitMap, bool]:
        if isinstance(node, Ref):
            return self.leaf(node, node.name, clip)
        if isinstance(node, Not):
            whole, owned = self.leaf(node, self.universe, True)
            operand, _ = self.value(node.operand, clip=False)
            return _apply(whole, owned, operand, _SUB)
        if isinstance(node, And):
            return self._and(node.operands)
        if isinstance(node, Diff):
            acc, owned = self.value(node.operands[0])
            for op in node.operands[1:]:
                acc, owned = _apply(acc, owned, self.value(op, clip=False)[0], _SUB)
            return acc, owned
        kind = _OR if isinstance(node, Or) else _XOR
        values = [self.value(op) for op in node.operands]
        # Accumulate into an owned operand when there is one.
        values.sort(key=lambda pair: not pair[1])
        acc, owned = values[0]
        for value, _ in values[1:]:
            acc, owned = _apply(acc, owned, value, kind)
        return acc, owned

    def _and(self, operands: Sequence[Expr], last_subtrahend: bool = False) -> tuple[BitMap, bool]:
        positive = [op for op in operands if not isinstance(op, Not)]
        negative = [op.operand for op in operands if isinstance(op, Not)]
        if not positive:
            # ~a & ~b = ~(a | b): one complement instead of several.
            acc, owned = self.leaf(operands[0], self.universe, True)
        else:
            values = sorted(self._and_operands(operands, positive), key=lambda p: len(p[0]))
            acc, owned = values[0]
            for value, _ in values[1:]:
                acc, owned = _apply(acc, owned, value, _AND)
        for op in negative:
            acc, owned = _apply(acc, owned, self.value(op, clip=False)[0], _SUB)
        return acc, owned

    def _and_operands(self, operands: Sequence[Expr], positive: Sequence[Expr]) -> list[tuple[BitMap, bool]]:
        """The positive operands of an ``&``, plus the universe when some operand is ``~x``."""
        values = [self.value(op, clip=False) for op in positive]
        complement = next((op for op in operands if isinstance(op, Not)), None)
        if complement is not None:
            values.append(self.leaf(complement, self.universe, False))
        return values

    def eval(self, node: Expr) -> BitMap:
        """Materialise a node. May return a cached bitmap: never mutate an unowned result."""
        return self.value(node)[0]

    def count(self, node: Expr) -> int:
        """Cardinality of a node: the last operation is a ``*_cardinality`` call, nothing is materialised."""
        if isinstance(node, Ref):
            return len(self.leaf(node, node.name, True)[0])
        if isinstance(node, Not):
            whole, _ = self.leaf(node, self.universe, True)
            return len(whole) - whole.intersection_cardinality(self.value(node.operand, clip=False)[0])
        if isinstance(node, And):
            positive = [op for op in node.operands if not isinstance(op, Not)]
            negative = [op.operand for op in node.operands if isinstance(op, Not)]
            if not positive:
                return len(self._and(node.operands)[0])
            values = sorted(self._and_operands(node.operands, positive), key=lambda p: len(p[0]))
            subtract = [self.value(op, clip=False)[0] for op in negative]
            # The last operation is cardinality-only: a subtrahend if there is one, else the largest operand.
            last = subtract.pop() if subtract else values.pop()[0]
            acc, owned = values[0]
            for value, _ in values[1:]:
                acc, owned = _apply(acc, owned, value, _AND)
            for value in subtract:
                acc, owned = _apply(acc, owned, value, _SUB)
            if negative:
                return acc.difference_cardinality(last)
            return acc.intersection_cardinality(last)
        if isinstance(node, Diff):
            acc, owned = self.value(node.operands[0])
            rest = [self.value(op, clip=False)[0] for op in node.operands[1:]]
            for value in rest[:-1]:
                acc, owned = _apply(acc, owned, value, _SUB)
            return acc.difference_cardinality(rest[-1])
        kind = _OR if isinstance(node, Or) else _XOR
        values = [self.value(op) for op in node.operands]
        values.sort(key=lambda pair: not pair[1])
        acc, owned = values[0]
        for value, _ in values[1:-1]:
            acc, owned = _apply(acc, owned, value, kind)
        last = values[-1][0]
        if kind == _OR:
            return acc.union_cardinality(last)
        return acc.symmetric_difference_cardinality(last)


_AND, _OR, _SUB, _XOR = range(4)


def _apply(acc: BitMap, owned: bool, value: BitMap, kind: int) -> tuple[BitMap, bool]:
    """``acc <op> value``, in place when ``acc`` is owned.

    Except one case: CRoaring subtracts array containers in place with scalar
    code but out of place with AVX2 (5x faster), so an array-heavy ``acc`` is
    subtracted out of place.
    """
    if owned and kind == _SUB:
        stats = acc.get_statistics()
        owned = stats["n_array_containers"] <= stats["n_bitset_containers"]
    if owned:
        if kind == _AND:
            acc &= value
        elif kind == _OR:
            acc |= value
        elif kind == _SUB:
            acc -= value
        else:
            acc ^= value
        return acc, True
    if kind == _AND:
        return acc & value, True
    if kind == _OR:
        return acc | value, True
    if kind == _SUB:
        return acc - value, True
    return acc ^ value, True

