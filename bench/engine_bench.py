"""Reach, engine only, against the physical floor and the alternatives.

Methods, all answering the same expression over the same data, timed in
interleaved rounds:

* ``engine``: ``Segments.reach(expr)`` on a ``sqlite:///`` store with every
  segment already cached whole (the steady state of a serving process): one
  batch read of the small meta records, then planning and evaluation.
* ``engine (memory://)``: the same on the in-process store.
* ``engine, no store read``: the same with the meta records memoised by a
  store wrapper: planning, cache lookups and evaluation only.
* ``pyroaring (naive)``: whole bitmaps, operators chained left to right, ``len``.
* ``chDB``, ``Redis``: see ``baselines.py``.
* ``fused kernel (prototype)``: the whole expression in one pass of compiled
  code over dense bitsets (``kernel_proto.py``): what a compiled kernel
  reaches, for the distance to the floor that pyroaring's operators leave.
* ``set``: Python sets, on a smaller universe (measured next to the engine
  at that size).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import segments
from segments.storage.base import Record
from segments.storage.forwarding import WRITES, ForwardingStore

from . import datasets
from .baselines import ChdbBaseline, RedisBaseline, RedisServer
from .expressions import HEADLINE, QUERIES, Query, container_bytes, naive_count, set_count, touched_bytes
from .kernel_proto import FusedKernel
from .machine import Bandwidth
from .processes import Log
from .timing import Timing, interleaved

#: the method name of the compiled-kernel prototype
KERNEL = "fused kernel (prototype)"


class MemoizedMeta(ForwardingStore):
    """A store whose meta-record reads are answered from memory after the first one.

    Everything else goes to the wrapped store. Used to time a query without
    its per-query metadata read (valid while nothing writes).
    """

    def __init__(self, inner: segments.Store, meta_set: str = "segmeta") -> None:
        super().__init__(inner)
        self.meta_set = meta_set
        self._memo: dict[tuple[str, ...], list[Record | None]] = {}

    def before(self, op: str, set_name: str | None) -> None:
        if op in WRITES:
            self._memo.clear()

    def get_many(self, set_name: str, keys: Sequence[str]) -> list[Record | None]:
        if set_name != self.meta_set:
            return self.inner.get_many(set_name, keys)
        key = tuple(keys)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self.inner.get_many(set_name, keys)
        return hit


@dataclass(frozen=True)
class Settings:
    rounds: int
    slow_rounds: int
    set_rounds: int
    cold_rounds: int
    budget_s: float
    queries: tuple[Query, ...] = QUERIES


@dataclass
class QueryResult:
    key: str
    text: str
    terms: int
    answer: int
    floor_bytes: int
    floor_by_segment: dict[str, int]
    timings: dict[str, Timing]

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "text": self.text,
            "terms": self.terms,
            "answer": self.answer,
            "floor_bytes": self.floor_bytes,
            "floor_by_segment": self.floor_by_segment,
            "timings": {k: v.as_dict() for k, v in self.timings.items()},
        }


@dataclass
class EngineSection:
    users: int
    queries: list[QueryResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    load_seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "queries": [q.as_dict() for q in self.queries],
            "skipped": self.skipped,
            "load_seconds": self.load_seconds,
        }


def hot_client(url: str, names: Sequence[str], *, memo_meta: bool = False) -> segments.Segments:
    """A client with every segment cached whole, as a long-running server has them.

    ``memo_meta``: its store answers meta-record reads from memory after the first one.
    """
    client = segments.connect(url)
    if memo_meta:
        client = segments.Segments(MemoizedMeta(client.store, client.sets.meta), universe=client.universe)
    client.overlap(list(names))
    return client


def run_reach(
    ds: datasets.Dataset,
    bw: Bandwidth,
    settings: Settings,
    redis_server: RedisServer | None,
    log: Log,
    *,
    with_memory_store: bool = True,
) -> EngineSection:
    section = EngineSection(ds.users)
    names = list(ds.bitmaps)
    shard_bytes = {n: container_bytes(b) for n, b in ds.bitmaps.items()}
    log("  clients: sqlite, no store read" + (", memory://" if with_memory_store else ""))
    clients = {
        "engine": hot_client(ds.store_url, names),
        "engine, no store read": hot_client(ds.store_url, names, memo_meta=True),
    }
    if with_memory_store:
        mem = segments.connect("memory://")
        for name, bitmap in ds.bitmaps.items():
            mem.replace(name, bitmap)
        mem.overlap(names)
        clients["engine (memory://)"] = mem
    kernel: FusedKernel | None = None
    if with_memory_store:
        started = time.perf_counter()
        kernel = FusedKernel(ds.bitmaps, ds.users)
        if kernel.skipped:
            section.skipped[KERNEL] = kernel.skipped
            kernel = None
        else:
            section.load_seconds[KERNEL] = time.perf_counter() - started
    chdb = ChdbBaseline()
    why = chdb.prepare(ds)
    if why:
        section.skipped["chDB"] = why
        log(f"  chDB skipped: {why}")
    else:
        section.load_seconds["chDB"] = chdb.load_seconds
    redis_base: RedisBaseline | None = None
    if redis_server is None or redis_server.process is None:
        section.skipped["Redis"] = "redis-server did not start (see redis-server in the environment)"
    else:
        redis_base = RedisBaseline(redis_server)
        why = redis_base.prepare(ds)
        if why:
            section.skipped["Redis"] = why
            redis_base = None
        else:
            section.load_seconds["Redis"] = redis_base.load_seconds
    try:
        for query in settings.queries:
            tree = query.tree
            expect = naive_count(tree, ds.bitmaps)
            methods: dict[str, Callable[[], int]] = {k: partial(c.reach, tree) for k, c in clients.items()}
            methods["pyroaring (naive)"] = partial(naive_count, tree, ds.bitmaps)
            if kernel is not None:
                methods[KERNEL] = partial(kernel.count, kernel.program(tree))
            slow = {"pyroaring (naive)": settings.slow_rounds}
            if "chDB" not in section.skipped:
                methods["chDB"] = partial(chdb.reach, chdb.sql(tree))
                slow["chDB"] = settings.slow_rounds
            if redis_base is not None:
                methods["Redis"] = partial(redis_base.reach, redis_base.plan(tree))
                slow["Redis"] = settings.slow_rounds
            timings = interleaved(
                methods, settings.rounds, expect=expect, slow_rounds=slow, budget_s=settings.budget_s
            )
            floor, per = touched_bytes(tree, shard_bytes)
            section.queries.append(
                QueryResult(query.key, query.text, query.terms, expect, floor, per, timings)
            )
            log(
                f"  {query.key} {query.text:<62} reach={expect:>10,}  engine {timings['engine'].median * 1e3:7.3f} ms"
                f"  floor {floor / bw.dram * 1e3:6.3f} ms"
            )
    finally:
        chdb.close()
        if redis_base is not None:
            redis_base.close()
        for client in clients.values():
            client.close()
    return section


# -- Python sets, on a smaller universe ----------------------------------------------


def run_sets(ds: datasets.Dataset, settings: Settings, log: Log) -> EngineSection:
    """Python ``set`` next to the engine and naive pyroaring on the same (smaller) data."""
    section = EngineSection(ds.users)
    started = time.perf_counter()
    sets = {name: set(ds.array(name).tolist()) for name in ds.bitmaps}
    section.load_seconds["set"] = time.perf_counter() - started
    client = hot_client(ds.store_url, list(ds.bitmaps))
    try:
        for query in settings.queries:
            tree = query.tree
            expect = naive_count(tree, ds.bitmaps)
            methods: dict[str, Callable[[], int]] = {
                "engine": partial(client.reach, tree),
                "pyroaring (naive)": partial(naive_count, tree, ds.bitmaps),
                "set": partial(set_count, tree, sets),
            }
            timings = interleaved(
                methods,
                settings.set_rounds * 4,
                expect=expect,
                slow_rounds={"set": settings.set_rounds},
                budget_s=settings.budget_s,
            )
            section.queries.append(QueryResult(query.key, query.text, query.terms, expect, 0, {}, timings))
            log(
                f"  {query.key} set {timings['set'].median * 1e3:9.2f} ms  engine {timings['engine'].median * 1e3:7.3f} ms"
            )
    finally:
        client.close()
        sets.clear()
    return section


# -- cold queries ------------------------------------------------------------------

#: the queries timed cold
COLD = ("q5", "q2a")


def run_cold(ds: datasets.Dataset, settings: Settings, log: Log) -> dict[str, dict[str, Timing]]:
    """A fresh client (empty cache) per query: the segments come from the SQLite store."""
    out: dict[str, dict[str, Timing]] = {}
    for key in COLD:
        tree = next(q for q in settings.queries if q.key == key).tree
        methods = {"engine": partial(_cold_reach, ds.store_url, tree)}
        expect = naive_count(tree, ds.bitmaps)
        out[key] = interleaved(methods, settings.cold_rounds, expect=expect, budget_s=settings.budget_s)
        log(f"  cold {key}: " + ", ".join(f"{k} {t.median * 1e3:.1f} ms" for k, t in out[key].items()))
    return out


def _cold_reach(url: str, tree: segments.Expr) -> int:
    with segments.connect(url) as client:
        return client.reach(tree)


# -- where the time goes -------------------------------------------------------------


def run_breakdown(ds: datasets.Dataset, settings: Settings, log: Log) -> dict[str, Timing]:
    """The headline query split into: meta read, snapshot (read + decode + shard maps), the rest."""
    tree = segments.parse(HEADLINE)
    names = sorted(set(segments.expressions.refs(tree)))
    client = hot_client(ds.store_url, list(ds.bitmaps))
    memo = hot_client(ds.store_url, list(ds.bitmaps), memo_meta=True)
    expect = naive_count(tree, ds.bitmaps)
    methods: dict[str, Callable[[], int]] = {
        "store.get_many(meta)": _counting(partial(client.store.get_many, client.sets.meta, names)),
        "engine.snapshot": _counting(partial(client.engine.snapshot, names)),
        "reach, no store read": partial(memo.reach, tree),
        "reach": partial(client.reach, tree),
    }
    try:
        out = interleaved(methods, settings.rounds, budget_s=settings.budget_s, check=False, warmup=2)
    finally:
        client.close()
        memo.close()
    for key in ("reach", "reach, no store read"):
        if out[key].answer != expect:
            raise AssertionError(f"breakdown {key} answered {out[key].answer}, expected {expect}")
    log("  breakdown: " + ", ".join(f"{k} {t.median * 1e6:.0f} µs" for k, t in out.items()))
    return out


def _counting(fn: Callable[[], object]) -> Callable[[], int]:
    """Wrap a call that returns no count (timed with ``check=False``)."""

    def call() -> int:
        fn()
        return 0

    return call


# -- scaling -------------------------------------------------------------------------


def run_scaling_point(
    ds: datasets.Dataset, bw: Bandwidth, settings: Settings, redis_server: RedisServer | None, log: Log
) -> EngineSection:
    """The headline query alone on a universe of another size."""
    headline = tuple(q for q in settings.queries if q.text == HEADLINE)
    return run_reach(ds, bw, replace(settings, queries=headline), redis_server, log, with_memory_store=False)
