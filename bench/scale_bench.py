"""The scale model's measurements: the same data shapes at several universe sizes.

For each size of ``Config.scale_users`` (the data set of ``bench/datasets.py``
at that size, SQLite store):

* **per-query time**: the hot queries of ``SCALE_QUERIES`` (``Segments.reach``,
  every segment cached), interleaved with naive pyroaring, medians;
* **cache memory per segment**: what the engine's cache accounts for each
  segment cached whole (``Entry.nbytes``: the bitmap's containers and their
  bookkeeping; the heap measurement of ``memory_bench`` at the main size shows
  how close that is to the real footprint);
* **ingest (write) time**: one ``Segments.replace`` of the 10 %-dense segment
  (``s10``) and one ``Segments.add`` of a delta of 1 % of the users, random
  IDs, into a fresh SQLite store: the library's write path (what the Kafka
  consumer calls per batch), without the broker.

``report.scale_model`` fits these against the universe size and
extrapolates (its docstring states the arithmetic).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import segments

from . import datasets
from .datasets import bitmap_from_array
from .engine_bench import hot_client
from .expressions import HEADLINE, QUERIES, naive_count
from .processes import Log
from .timing import interleaved

#: the queries timed at every size: the headline one and the densest two-term one
SCALE_QUERIES = (HEADLINE, "s10 & s30")
#: deployment figures the model is asked about (users)
TARGETS = (500_000_000, 1_000_000_000, 1 << 32)
#: segments per deployment assumed by the model (the lookups' benchmark size)
MODEL_SEGMENTS = 500
#: Aerospike replication factor assumed by the model
REPLICATION = 2


def point(ds: datasets.Dataset, rounds: int, budget_s: float, log: Log) -> dict[str, Any]:
    names = list(ds.bitmaps)
    client = hot_client(ds.store_url, names)
    out: dict[str, Any] = {"users": ds.users, "queries": {}, "cache_bytes": {}}
    try:
        for text in SCALE_QUERIES:
            tree = segments.parse(text)
            expect = naive_count(tree, ds.bitmaps)
            timings = interleaved(
                {"engine": partial(client.reach, tree), "pyroaring (naive)": partial(naive_count, tree, ds.bitmaps)},
                rounds,
                expect=expect,
                budget_s=budget_s,
                slow_rounds={"pyroaring (naive)": max(3, rounds // 4)},
            )
            key = next((q.key for q in QUERIES if q.text == text), text)
            out["queries"][key] = {"text": text, "timings": {k: v.as_dict() for k, v in timings.items()}}
        for name in names:
            entry = client.cache.peek(name)
            out["cache_bytes"][name] = entry.nbytes if entry is not None else 0
    finally:
        client.close()
    directory = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        with segments.connect(f"sqlite:///{directory / 'w.db'}") as writer:
            bitmap = ds.bitmaps["s10"]
            t0 = time.perf_counter()
            writer.replace("w", bitmap)
            replace_s = time.perf_counter() - t0
            rng = np.random.default_rng([ds.seed, ds.users, 77])
            delta = bitmap_from_array(np.unique(rng.integers(0, ds.users, size=max(1, ds.users // 100))))
            t0 = time.perf_counter()
            writer.add("w", delta)
            add_s = time.perf_counter() - t0
            if writer.reach("w") != len(bitmap | delta):
                raise AssertionError("the scale model's writes lost IDs")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    out["ingest"] = {
        "replace_ids": len(bitmap),
        "replace_s": replace_s,
        "add_ids": len(delta),
        "add_s": add_s,
    }
    head = out["queries"]["q5"]["timings"]["engine"]["median_s"]
    log(
        f"  scale {ds.users:,}: headline {head * 1e3:.2f} ms, s60 cached {out['cache_bytes']['s60'] / 1e6:.1f} MB, "
        f"replace {len(bitmap) / replace_s / 1e6:.1f}M IDs/s, add {len(delta) / add_s / 1e6:.1f}M IDs/s"
    )
    return out


def run(
    sizes: tuple[int, ...], seed: int, rounds: int, budget_s: float, log: Log, memory_bytes: int
) -> dict[str, Any]:
    points = []
    for users in sizes:
        ds = datasets.load(users, seed, log=log)
        points.append(point(ds, rounds, budget_s, log))
        ds.bitmaps.clear()
    return {
        "points": points,
        "targets": list(TARGETS),
        "assumptions": {
            "segments": MODEL_SEGMENTS,
            "replication": REPLICATION,
            "replica_memory_bytes": memory_bytes,
        },
    }
