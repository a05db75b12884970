"""String user keys: translation rates, side by side with plain integer IDs.

    python -m bench.keys_bench --store sqlite [--count 1000000] [--batch 10000]
    python -m bench.keys_bench --store aerospike      # starts the Aerospike test server
    python -m bench.keys_bench --store aerospike --aerospike 10.0.0.5:3000/test   # a real one

With ``--store aerospike`` and no ``--aerospike``, ``SEGMENTS_TEST_AEROSPIKE`` (``host:port[/ns]``)
names a real server as in the tests; otherwise the test server from ``tests/support`` runs on a free
loopback port for the run and is stopped by pid afterwards.

What one process measures, each on a fresh table, in batches of ``--batch`` keys:

* **new keys**: ``create`` of ``--count`` keys never seen (customer numbers and UUIDs, seeded);
* **known, warm**: ``translate`` of the same keys again, all answered by the translation cache;
* **known, cold**: the same with the cache emptied (one batch read per batch);
* **reverse, cold / warm**: IDs back to keys;
* **baseline**: building a plain ``BitMap`` of the same count of integer IDs, in the same batches:
  what a deployment with integer IDs does instead of translating;
* **floor**: looking the keys up in a plain ``dict`` (what no in-process cache can beat; on a
  shared, loaded machine it also shows how much CPU the run got).

Every step checks its answers (same IDs every time, one ID per key, keys back from reverse).
The issue's goals: at least 200,000 new keys/s and 1,000,000 known keys/s (warm) per process.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from pyroaring import BitMap

import segments

_T = TypeVar("_T")

GOALS = {"new keys": 200_000.0, "known, warm": 1_000_000.0}


def make_keys(count: int, seed: int) -> list[str]:
    """Half customer numbers, half UUIDs, shuffled (seeded)."""
    rng = random.Random(seed)
    half = count // 2
    keys = [f"cust_{n:09d}" for n in rng.sample(range(10**9), half)]
    keys += [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(count - half)]
    rng.shuffle(keys)
    return keys


def batches(items: list[_T], size: int) -> Iterator[list[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _note(rates: dict[str, float], name: str, rate: float) -> None:
    rates[name] = rate
    print(f"  {name}: {rate:,.0f} keys/s", flush=True)


def timed(run: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    answer = run()
    return time.perf_counter() - start, answer


@contextmanager
def store_url(kind: str, aerospike: str | None) -> Iterator[str]:
    """A fresh, empty store of ``kind`` for the run."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="keys-bench-") as directory:
            yield f"sqlite:///{directory}/segments.db"
        return
    if kind == "memory":
        yield f"memory://keys-bench-{uuid.uuid4().hex}"
        return
    prefix = f"kb{uuid.uuid4().hex[:8]}_"
    target = aerospike or os.environ.get("SEGMENTS_TEST_AEROSPIKE", "").strip()
    if target:
        address, _, namespace = target.partition("/")
        yield f"aerospike://{address}/{namespace or 'test'}?prefix={prefix}"
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.aerospike_server import start_aerospike_server

    # in memory only: the test server's data file is rewritten on every flush, far too slow for 1M records
    with start_aerospike_server(namespaces=("test",), persist=False) as server:
        print(f"Aerospike test server pid {server.pid} on 127.0.0.1:{server.port}")
        # patient timeouts: the test server is one Python process, and pauses (garbage collection of
        # a million records) on a loaded machine longer than a real node ever would
        slack = "write_timeout_ms=30000&timeout_ms=30000&batch_timeout_ms=60000"
        yield f"aerospike://127.0.0.1:{server.port}/test?prefix={prefix}&{slack}"


def run(url: str, count: int, batch: int, seed: int) -> dict[str, float]:
    keys = make_keys(count, seed)
    rates: dict[str, float] = {}
    # a budget whose translation cache (a quarter) keeps every pair: its young half holds them all
    with segments.connect(url, cache_bytes=4 * 2 * count * 400) as segs:
        table = segs.keys

        def create() -> list[int]:
            out: list[int] = []
            for chunk in batches(keys, batch):
                out += table.create(chunk)
            return out

        def translate() -> list[int | None]:
            out: list[int | None] = []
            for chunk in batches(keys, batch):
                out += table.translate(chunk)
            return out

        seconds, answer = timed(create)
        ids = answer if isinstance(answer, list) else []
        assert len(ids) == count and len(set(ids)) == count, "every key has its own ID"
        _note(rates, "new keys", count / seconds)
        assert len(table.cache) == count, "the cache holds every pair"

        seconds, answer = timed(translate)
        assert answer == ids, "known keys translate to the IDs they were given"
        _note(rates, "known, warm", count / seconds)

        table.cache.clear()
        seconds, answer = timed(translate)
        assert answer == ids
        _note(rates, "known, cold", count / seconds)

        def reverse() -> list[str | None]:
            out: list[str | None] = []
            for chunk in batches(ids, batch):
                out += table.reverse(chunk)
            return out

        table.cache.clear()
        seconds, answer = timed(reverse)
        assert answer == keys, "IDs reverse to their keys"
        _note(rates, "reverse, cold", count / seconds)
        seconds, answer = timed(reverse)
        assert answer == keys
        _note(rates, "reverse, warm", count / seconds)

        def baseline() -> int:
            total = BitMap()
            for chunk in batches(ids, batch):
                total |= BitMap(chunk)
            return len(total)

        seconds, answer = timed(baseline)
        assert answer == count
        _note(rates, "baseline: integer BitMap", count / seconds)

        plain = dict(zip(keys, ids, strict=True))

        def lookups() -> list[int | None]:
            out: list[int | None] = []
            for chunk in batches(keys, batch):
                out += map(plain.get, chunk)
            return out

        seconds, answer = timed(lookups)
        assert answer == ids
        _note(rates, "floor: dict lookups", count / seconds)
        stats = table.stats
        assert stats.created == count and stats.lost == 0
        print(f"table: {count:,} keys, {stats.reserved:,} IDs reserved, {stats.reserved - stats.created:,} gaps")
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.keys_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["sqlite", "aerospike", "memory"], default="sqlite")
    parser.add_argument("--count", type=int, default=1_000_000, help="keys (default 1,000,000)")
    parser.add_argument("--batch", type=int, default=10_000, help="keys per call (default 10,000)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--aerospike", help="host:port[/namespace] of a real Aerospike (default: test server)")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    print(f"{args.store}: {args.count:,} keys in batches of {args.batch:,}; {os.cpu_count()} CPUs, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    with store_url(args.store, args.aerospike) as url:
        rates = run(url, args.count, args.batch, args.seed)
    base = rates["baseline: integer BitMap"]
    print(f"{'':26} {'keys/s':>12} {'integer IDs / this':>20} {'goal':>12}")
    for name, rate in rates.items():
        goal = GOALS.get(name)
        verdict = "" if goal is None else f"{goal:>10,.0f} {'met' if rate >= goal else 'MISSED'}"
        print(f"{name:26} {rate:>12,.0f} {base / rate:>19,.1f}x {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
