"""Cold start: the first reach of a client with an empty cache, against reading the same records in one call.

For each store (the data set's SQLite file; an Aerospike: the test server of
``tests/support``, or the real server named by ``SEGMENTS_TEST_AEROSPIKE``,
loaded with the query's segments first), every round runs, in a rotating order:

* **first reach**: a fresh client (new store connection, empty cache: what a
  restarted server has) answers ``COLD_QUERY``, five segments whose every shard
  the plan needs; the store is wrapped in a ``CountingStore``, so the round
  records how many calls, records and bytes the reach read, per set;
* **one batch read**: a fresh store connection reads every shard record of the
  same five segments with one ``get_many`` call: the store's own time for the
  bulk of those bytes (meta and map records are listed apart; they are a small
  part).

Connecting is not timed in either. Every first reach's answer is checked
against naive pyroaring, every batch read's record count against the shard
maps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import segments
from segments.catalog import shard_key
from segments.storage import open_store

from . import datasets
from .expressions import naive_count
from .processes import Log
from .stores import CountingStore, aerospike_store
from .timing import Timing, WrongAnswer

#: five segments, all of them needed on every shard
COLD_QUERY = "(s10 | s30) & s60 - s1 ^ skewed"


def _names() -> list[str]:
    return sorted(set(segments.expressions.refs(segments.parse(COLD_QUERY))))


def _shard_keys(url: str, names: list[str]) -> tuple[str, list[str]]:
    with segments.connect(url) as client:
        snap = client.engine.snapshot(names)
        keys = [shard_key(n, s, rid) for n in names for s, _, rid in snap.maps[n].triples()]
        return client.sets.shard, keys


def measure(url: str, ds: datasets.Dataset, rounds: int, budget_s: float) -> dict[str, Any]:
    tree = segments.parse(COLD_QUERY)
    expect = naive_count(tree, ds.bitmaps)
    shard_set, keys = _shard_keys(url, _names())
    reads: dict[str, Any] = {}

    def first_reach() -> Callable[[], None]:
        store = CountingStore(open_store(url))
        client = segments.Segments(store)

        def run() -> None:
            got = client.reach(tree)
            if got != expect:
                raise WrongAnswer(f"cold reach answered {got}, expected {expect}")
            reads.update(
                {
                    "per_set": {
                        s: {"calls": store.calls[s], "records": store.records[s], "bytes": store.bytes[s]}
                        for s in store.calls
                    },
                    **store.totals(),
                }
            )
            client.close()

        return run

    def batch_read() -> Callable[[], None]:
        store = open_store(url)

        def run() -> None:
            found = store.get_many(shard_set, keys)
            missing = sum(r is None for r in found)
            if missing:
                raise WrongAnswer(f"one batch read missed {missing} of {len(keys)} shard records")
            store.close()

        return run

    methods = {"first reach": first_reach, "one batch read": batch_read}
    timings = {name: Timing() for name in methods}
    started = time.perf_counter()
    for r in range(rounds):
        names = list(methods)
        for name in names[r % 2 :] + names[: r % 2]:
            run = methods[name]()  # connect: not timed
            t0 = time.perf_counter()
            run()
            timings[name].samples.append(time.perf_counter() - t0)
        if time.perf_counter() - started > budget_s and r >= 4:
            break
    timings["first reach"].answer = expect
    timings["one batch read"].answer = len(keys)
    return {
        "timings": {k: v.as_dict() for k, v in timings.items()},
        "reads": reads,
        "batch_records": len(keys),
    }


def run(ds: datasets.Dataset, rounds: int, budget_s: float, log: Log) -> dict[str, Any]:
    out: dict[str, Any] = {"query": COLD_QUERY, "segments": _names()}
    out["sqlite"] = measure(ds.store_url, ds, rounds, budget_s)
    _log(log, "sqlite", out["sqlite"])
    try:
        with aerospike_store() as (description, url):
            started = time.perf_counter()
            with segments.connect(url) as writer:
                for name in out["segments"]:
                    writer.replace(name, ds.bitmaps[name])
            load_s = time.perf_counter() - started
            out["aerospike"] = measure(url, ds, rounds, budget_s) | {"server": description, "load_seconds": load_s}
            _log(log, description, out["aerospike"])
    except ImportError as exc:
        out["aerospike"] = {"skipped": f"the aerospike client or the test server is missing ({exc})"}
    return out


def _log(log: Log, label: str, result: dict[str, Any]) -> None:
    t = result["timings"]
    log(
        f"  cold {label}: first reach {t['first reach']['median_s'] * 1e3:.1f} ms, one batch read "
        f"{t['one batch read']['median_s'] * 1e3:.1f} ms ({result['reads']['records']:,} records, "
        f"{result['reads']['bytes'] / 1e6:.1f} MB)"
    )
