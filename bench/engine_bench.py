"""Section 1: reach, engine only, against the physical floor and the alternatives.

Methods, all answering the same expression over the same data, timed in
interleaved rounds:

* ``engine``: ``Segments.reach(expr)`` on a ``sqlite:///`` store with every
  segment already cached whole (the steady state of a serving process): one
  batch read of the small meta records, then planning and evaluation.
* ``engine (memory://)``: the same on the in-process store.
* ``engine, no store read``: the same with the meta records memoised by a
  store wrapper: planning, cache lookups and evaluation only.
* ``proposal N``: the engine with ``bench/patches`` 1..N applied (see
  ``proposals.py``), both with and without the store read.
* ``pyroaring (naive)``: whole bitmaps, operators chained left to right, ``len``.
* ``chDB``, ``Redis``: see ``baselines.py``.
* ``set``: Python sets, on a universe 10x smaller (measured next to the engine
  at that size).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import segments
from segments.storage.base import Bins, Record

from . import datasets
from .baselines import ChdbBaseline, RedisBaseline, RedisServer
from .expressions import HEADLINE, QUERIES, Query, container_bytes, naive_count, set_count, touched_bytes
from .machine import Bandwidth
from .proposals import Variant, connect_variant
from .timing import Timing, interleaved

Log = Callable[[str], None]


class MemoizedMeta:
    """A store whose meta-record reads are answered from memory after the first one.

    Everything else goes to the wrapped store. Used to time a query without
    its per-query metadata read (valid while nothing writes).
    """

    def __init__(self, inner: segments.Store, meta_set: str = "segmeta") -> None:
        self.inner = inner
        self.url = inner.url
        self.meta_set = meta_set
        self._memo: dict[tuple[str, ...], list[Record | None]] = {}

    def get_many(self, set_name: str, keys: Sequence[str]) -> list[Record | None]:
        if set_name != self.meta_set:
            return self.inner.get_many(set_name, keys)
        key = tuple(keys)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self.inner.get_many(set_name, keys)
        return hit

    def put(self, set_name: str, key: str, bins: Bins, *, generation: int | None = None) -> int:
        self._memo.clear()
        return self.inner.put(set_name, key, bins, generation=generation)

    def put_many(self, set_name: str, items: Sequence[tuple[str, Bins]]) -> None:
        self._memo.clear()
        self.inner.put_many(set_name, items)

    def delete(self, set_name: str, key: str, *, generation: int | None = None) -> bool:
        self._memo.clear()
        return self.inner.delete(set_name, key, generation=generation)

    def delete_many(self, set_name: str, keys: Sequence[str]) -> None:
        self._memo.clear()
        self.inner.delete_many(set_name, keys)

    def scan(self, set_name: str) -> Iterator[tuple[str, Record]]:
        return self.inner.scan(set_name)

    def ping(self) -> None:
        self.inner.ping()

    def close(self) -> None:
        self.inner.close()


@dataclass
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
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    load_seconds: dict[str, float] = field(default_factory=dict)


def warm(client: segments.Segments, names: Sequence[str]) -> None:
    """Cache every segment whole, as a long-running server would have them."""
    client.overlap(list(names))


def make_clients(
    url: str, names: Sequence[str], variants: Sequence[Variant], *, memo_meta: bool
) -> dict[str, segments.Segments]:
    """``engine`` plus one client per applicable proposal step, warmed."""
    out: dict[str, segments.Segments] = {}
    suffix = ", no store read" if memo_meta else ""
    steps: list[tuple[str, Any]] = [("engine" + suffix, None)]
    steps += [
        (f"proposal {v.key.split('-', 1)[0]}{suffix}", v.module) for v in variants if v.module is not None
    ]
    for label, module in steps:
        client = connect_variant(url, module)
        if memo_meta:
            client = _memoized(client, module)
        warm(client, names)
        out[label] = client
    return out


def _memoized(client: segments.Segments, module: Any) -> segments.Segments:
    store = MemoizedMeta(client.store, client.sets.meta)
    wrapped = segments.Segments(store, universe=client.universe)
    if module is not None:
        from .proposals import install

        install(wrapped, module)
    return wrapped


def run_reach(
    ds: datasets.Dataset,
    bw: Bandwidth,
    variants: Sequence[Variant],
    settings: Settings,
    redis_server: RedisServer | None,
    log: Log,
    *,
    with_memory_store: bool = True,
) -> EngineSection:
    section = EngineSection(ds.users)
    names = list(ds.bitmaps)
    shard_bytes = {n: container_bytes(b) for n, b in ds.bitmaps.items()}
    log("  clients: sqlite, memory, no-store-read, proposals")
    clients = make_clients(ds.store_url, names, variants, memo_meta=False)
    clients.update(make_clients(ds.store_url, names, variants, memo_meta=True))
    if with_memory_store:
        mem = segments.connect("memory://")
        for name, bitmap in ds.bitmaps.items():
            mem.replace(name, bitmap)
        warm(mem, names)
        clients["engine (memory://)"] = mem
        from .proposals import install

        for v in [v for v in variants if v.module is not None][-1:]:
            assert v.module is not None
            pmem = segments.Segments(mem.store)
            install(pmem, v.module)
            warm(pmem, names)
            clients[f"proposal {v.key.split('-', 1)[0]} (memory://)"] = pmem
    chdb = ChdbBaseline()
    why = chdb.prepare(ds)
    if why:
        section.skipped["chDB"] = why
        log(f"  chDB skipped: {why}")
    else:
        section.load_seconds["chDB"] = chdb.load_seconds
    redis_base: RedisBaseline | None = None
    if redis_server is None or redis_server.process is None:
        section.skipped["Redis"] = "no redis-server binary (Debian package redis-server); skipped"
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
            methods: dict[str, Callable[[], int]] = {}
            for label, client in clients.items():
                methods[label] = _bind_reach(client, tree)
            methods["pyroaring (naive)"] = _bind(naive_count, tree, ds.bitmaps)
            slow = {"pyroaring (naive)": settings.slow_rounds}
            if "chDB" not in section.skipped:
                methods["chDB"] = _bind(chdb.reach, chdb.sql(tree))
                slow["chDB"] = settings.slow_rounds
            if redis_base is not None:
                methods["Redis"] = _bind(redis_base.reach, redis_base.plan(tree))
                slow["Redis"] = settings.slow_rounds
            timings = interleaved(
                methods, settings.rounds, expect=expect, slow_rounds=slow, budget_s=settings.budget_s
            )
            floor, per = touched_bytes(tree, shard_bytes)
            result = QueryResult(query.key, query.text, query.terms, expect, floor, per, timings)
            section.queries.append(result)
            fastest = min(t.median for k, t in timings.items() if k.startswith(("engine", "proposal")))
            log(
                f"  {query.key} {query.text:<62} reach={expect:>10,}  engine {timings['engine'].median * 1e3:7.3f} ms"
                f"  best {fastest * 1e3:7.3f} ms  floor {floor / bw.dram * 1e3:6.3f} ms"
            )
    finally:
        chdb.close()
        if redis_base is not None:
            redis_base.close()
        for client in clients.values():
            client.close()
    return section


def _bind_reach(client: segments.Segments, tree: segments.Expr) -> Callable[[], int]:
    def call() -> int:
        return client.reach(tree)

    return call


def _bind(fn: Callable[..., int], *args: Any) -> Callable[[], int]:
    def call() -> int:
        return fn(*args)

    return call


# -- Python sets, at 1/10 scale ------------------------------------------------------


def run_sets(
    ds: datasets.Dataset, variants: Sequence[Variant], settings: Settings, log: Log
) -> EngineSection:
    """Python ``set`` next to the engine and naive pyroaring on the same (smaller) data."""
    section = EngineSection(ds.users)
    started = time.perf_counter()
    sets = {name: set(ds.array(name).tolist()) for name in ds.bitmaps}
    section.load_seconds["set"] = time.perf_counter() - started
    names = list(ds.bitmaps)
    best = [v for v in variants if v.module is not None][-1:]
    clients = make_clients(ds.store_url, names, best, memo_meta=False)
    try:
        for query in settings.queries:
            tree = query.tree
            expect = naive_count(tree, ds.bitmaps)
            methods: dict[str, Callable[[], int]] = {k: _bind_reach(c, tree) for k, c in clients.items()}
            methods["pyroaring (naive)"] = _bind(naive_count, tree, ds.bitmaps)
            methods["set"] = _bind(set_count, tree, sets)
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
        for client in clients.values():
            client.close()
        sets.clear()
    return section


# -- cold queries ------------------------------------------------------------------


def run_cold(
    ds: datasets.Dataset, variants: Sequence[Variant], settings: Settings, log: Log
) -> dict[str, dict[str, Timing]]:
    """A fresh client (empty cache) per query: the segments come from the SQLite store."""
    best = [v for v in variants if v.module is not None][-1:]
    steps: list[tuple[str, Any]] = [("engine", None)] + [
        (f"proposal {v.key.split('-', 1)[0]}", v.module) for v in best
    ]
    out: dict[str, dict[str, Timing]] = {}
    for key in ("q5", "q2a"):
        query = next(q for q in settings.queries if q.key == key)
        tree = query.tree
        expect = naive_count(tree, ds.bitmaps)
        methods: dict[str, Callable[[], int]] = {}
        for label, module in steps:
            methods[label] = _cold_call(ds.store_url, module, tree)
        out[key] = interleaved(methods, settings.cold_rounds, expect=expect, budget_s=settings.budget_s)
        log(f"  cold {key}: " + ", ".join(f"{k} {t.median * 1e3:.1f} ms" for k, t in out[key].items()))
    return out


def _cold_call(url: str, module: Any, tree: segments.Expr) -> Callable[[], int]:
    def call() -> int:
        client = connect_variant(url, module)
        try:
            return client.reach(tree)
        finally:
            client.close()

    return call


# -- where the time goes -------------------------------------------------------------


def run_breakdown(
    ds: datasets.Dataset, variants: Sequence[Variant], settings: Settings, log: Log
) -> dict[str, dict[str, Timing]]:
    """The headline query split into: meta read, snapshot (read + decode + shard maps), the rest."""
    tree = segments.parse(HEADLINE)
    names = sorted(set(segments.expressions.refs(tree)))
    steps: list[tuple[str, Any]] = [("engine", None)] + [
        (f"proposal {v.key.split('-', 1)[0]}", v.module) for v in variants if v.module is not None
    ]
    out: dict[str, dict[str, Timing]] = {}
    for label, module in steps:
        client = connect_variant(ds.store_url, module)
        memo = _memoized(connect_variant(ds.store_url, module), module)
        warm(client, list(ds.bitmaps))
        warm(memo, list(ds.bitmaps))
        expect = naive_count(tree, ds.bitmaps)
        methods: dict[str, Callable[[], int]] = {
            "store.get_many(meta)": _counting(_partial(client.store.get_many, client.sets.meta, names)),
            "engine.snapshot": _counting(_partial(client.engine.snapshot, names)),
            "reach, no store read": _bind_reach(memo, tree),
            "reach": _bind_reach(client, tree),
        }
        out[label] = interleaved(methods, settings.rounds, budget_s=settings.budget_s, check=False, warmup=2)
        for key in ("reach", "reach, no store read"):
            if out[label][key].answer != expect:
                raise AssertionError(f"{label} {key} answered {out[label][key].answer}, expected {expect}")
        client.close()
        memo.close()
        log(
            f"  breakdown {label}: "
            + ", ".join(f"{k} {t.median * 1e6:.0f} µs" for k, t in out[label].items())
        )
    return out


def _partial(fn: Callable[..., object], *args: Any) -> Callable[[], object]:
    def call() -> object:
        return fn(*args)

    return call


def _counting(fn: Callable[[], object]) -> Callable[[], int]:
    """Wrap a call that returns no count (timed with ``check=False``)."""

    def call() -> int:
        fn()
        return 0

    return call


# -- scaling -------------------------------------------------------------------------


def run_scaling_point(
    ds: datasets.Dataset,
    bw: Bandwidth,
    variants: Sequence[Variant],
    settings: Settings,
    redis_server: RedisServer | None,
    log: Log,
) -> EngineSection:
    headline = next(q for q in settings.queries if q.text == HEADLINE)
    best = [v for v in variants if v.module is not None][-1:]
    small = Settings(
        settings.rounds, settings.slow_rounds, settings.set_rounds, settings.cold_rounds,
        settings.budget_s, (headline,),
    )  # fmt: skip
    return run_reach(ds, bw, best, small, redis_server, log, with_memory_store=False)


def floor_seconds(floor_bytes: int, bw: Bandwidth) -> float:
    return floor_bytes / bw.dram


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(samples)
    return float(np.median(arr)), float(np.percentile(arr, 99))
