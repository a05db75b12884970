"""Fixed per-query overhead: tiny segments, and CRoaring's real data sets, against pyroaring doing the same.

**Tiny segments.** Four segments of ``TINY_IDS`` random IDs each (seeded), in
a ``memory://`` store and in a SQLite file, every one cached. Each query runs
as ``Segments.reach(text)`` (the text parsed as the API passes it; parsed
texts are cached) with ``query_staleness`` 0 (the segments' metadata read
for every query, the default) and ``STALENESS`` (a bounded-staleness
metadata snapshot reused), next to pyroaring computing the same count on
the same bitmaps (``intersection_cardinality``; for the 4-term query one
union, one in-place ``&=`` and a ``difference_cardinality``), in the same
interleaved rounds. The overhead of a method is its median minus
pyroaring's (``report.derive``); the largest ``ReachResult.staleness`` the
stale clients reported is recorded with them.

**Real data** (``--realdata DIR``): CRoaring's ``benchmarks/realdata`` folder
(``census1881``, ``census-income``, ``weather_sept_85``, ``wikileaks-noquotes``,
...: one sub-folder per data set, one text file of comma-separated sorted
integers per bitmap). Each data set's bitmaps become segments of a
``memory://`` store; 4-term reaches ``(b[i] | b[i+1]) & b[i+2] - b[i+3]`` over
``REALDATA_QUERIES`` windows of consecutive bitmaps are timed against
pyroaring doing the same, same rounds. The data sets are not shipped by any
package this machine can install; ``REALDATA_HELP`` says how to get them.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from pyroaring import BitMap

import segments

from .datasets import bitmap_from_array
from .processes import Log
from .timing import interleaved

TINY_IDS = 1000
#: the universe the tiny segments are drawn from (16 shards)
TINY_UNIVERSE = 1 << 20
#: ``query_staleness`` of the stale clients, seconds
STALENESS = 1.0
TINY_QUERIES = ("a & b", "(a | b) & c - d")
#: windows of consecutive bitmaps per real data set
REALDATA_QUERIES = 8
REALDATA_HELP = (
    "CRoaring's real data sets are not on this machine and no package it can install ships them "
    "(checked: pyroaring's and croaring's sources and the roaringbitmap wheel from PyPI, the npm package "
    "roaring). To measure them: copy the folder benchmarks/realdata of the CRoaring repository "
    "(RoaringBitmap/CRoaring: git clone, or its source archive) to this machine and run "
    "python -m bench --realdata PATH/TO/realdata (sub-folders census1881, census-income, weather_sept_85, "
    "wikileaks-noquotes, ...; their .zip files are read too)"
)


def _pyroaring(text: str, bitmaps: dict[str, BitMap]) -> int:
    a, b, c, d = (bitmaps[k] for k in "abcd")
    if text == "a & b":
        return a.intersection_cardinality(b)
    acc = a | b
    acc &= c
    return acc.difference_cardinality(d)


def tiny(seed: int, rounds: int, budget_s: float, sqlite_path: Path, log: Log) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 16])
    bitmaps = {
        name: bitmap_from_array(np.sort(rng.choice(TINY_UNIVERSE, size=TINY_IDS, replace=False)))
        for name in "abcd"
    }
    stores = {"memory://": "memory://", "sqlite": f"sqlite:///{sqlite_path}"}
    clients: dict[str, segments.Segments] = {}
    for label, url in stores.items():
        writer = segments.connect(url)
        for name, bitmap in bitmaps.items():
            writer.replace(name, bitmap)
        for staleness in (0.0, STALENESS):
            client = writer if staleness == 0 else segments.Segments(writer.store, query_staleness=staleness)
            client.overlap(list(bitmaps))
            clients[f"{label}, query_staleness={staleness:g}"] = client
    out: dict[str, Any] = {"ids_per_segment": TINY_IDS, "staleness_s": STALENESS, "queries": []}
    try:
        for text in TINY_QUERIES:
            expect = _pyroaring(text, bitmaps)
            ages: dict[str, float] = {}

            def timed(client: segments.Segments, label: str, text: str = text, ages: dict[str, float] = ages) -> int:
                result = client.reach_detailed(text)
                ages[label] = max(ages.get(label, 0.0), result.staleness)
                return result.reach

            methods: dict[str, Callable[[], int]] = {
                label: partial(timed, client, label) for label, client in clients.items()
            }
            methods["pyroaring"] = partial(_pyroaring, text, bitmaps)
            timings = interleaved(methods, rounds, expect=expect, budget_s=budget_s, warmup=3)
            out["queries"].append(
                {
                    "text": text,
                    "answer": expect,
                    "timings": {k: v.as_dict() for k, v in timings.items()},
                    "max_staleness_s": ages,
                }
            )
            base = timings["pyroaring"].median
            log(
                f"  tiny {text!r}: pyroaring {base * 1e6:.1f} µs; "
                + ", ".join(f"{k} +{(t.median - base) * 1e6:.1f} µs" for k, t in timings.items() if k != "pyroaring")
            )
    finally:
        for label, client in clients.items():
            if label.endswith("=0"):
                client.close()  # the stale clients share its store
    return out


# -- CRoaring's real data sets ----------------------------------------------------


def _natural(name: str) -> tuple[int | str, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _parse_ids(text: str) -> BitMap:
    values = np.array([int(v) for v in re.split(r"[,\s]+", text.strip()) if v], dtype=np.uint64)
    return bitmap_from_array(values.astype(np.uint32))


def load_realdata(directory: Path) -> dict[str, list[BitMap]]:
    """Every data set of a CRoaring ``realdata`` folder: a sub-folder or ``.zip`` of ``.txt`` files each."""
    found: dict[str, list[BitMap]] = {}
    for path in sorted(directory.iterdir()):
        if path.is_dir():
            files = sorted((p for p in path.iterdir() if p.suffix == ".txt"), key=lambda p: _natural(p.name))
            if files:
                found[path.name] = [_parse_ids(p.read_text()) for p in files]
        elif path.suffix == ".zip" and path.stem not in found:
            with zipfile.ZipFile(path) as archive:
                names = sorted((n for n in archive.namelist() if n.endswith(".txt")), key=_natural)
                if names:
                    found[path.stem] = [_parse_ids(archive.read(n).decode()) for n in names]
    return found


def _direct(bitmaps: Sequence[BitMap]) -> int:
    a, b, c, d = bitmaps
    acc = a | b
    acc &= c
    return acc.difference_cardinality(d)


def realdata(directory: Path | None, rounds: int, budget_s: float, log: Log) -> dict[str, Any]:
    if directory is None:
        return {"skipped": f"no --realdata DIR given. {REALDATA_HELP}"}
    if not directory.is_dir():
        return {"skipped": f"--realdata {directory} is not a folder. {REALDATA_HELP}"}
    sets = load_realdata(directory)
    if not sets:
        return {"skipped": f"{directory} holds no data set (sub-folders of .txt files). {REALDATA_HELP}"}
    out: dict[str, Any] = {"directory": str(directory), "sets": {}}
    for set_name, bitmaps in sets.items():
        client = segments.connect("memory://", universe="u")
        names = [f"b{i}" for i in range(len(bitmaps))]
        for name, bitmap in zip(names, bitmaps, strict=True):
            client.replace(name, bitmap)
        client.overlap(names)
        queries = []
        windows = max(1, min(REALDATA_QUERIES, len(bitmaps) - 3))
        step = max(1, (len(bitmaps) - 3) // windows)
        for i in range(0, step * windows, step):
            if i + 4 > len(bitmaps):
                break
            text = f"(b{i} | b{i + 1}) & b{i + 2} - b{i + 3}"
            tree = client.parse(text)
            operands = bitmaps[i : i + 4]
            timings = interleaved(
                {"engine": partial(client.reach, tree), "pyroaring": partial(_direct, operands)},
                rounds,
                budget_s=budget_s / windows,
                warmup=2,
            )
            queries.append({"text": text, "answer": timings["engine"].answer,
                            "timings": {k: v.as_dict() for k, v in timings.items()}})  # fmt: skip
        client.close()
        out["sets"][set_name] = {
            "bitmaps": len(bitmaps),
            "ids": sum(len(b) for b in bitmaps),
            "queries": queries,
        }
        ratios = [q["timings"]["engine"]["median_s"] / q["timings"]["pyroaring"]["median_s"] for q in queries]
        log(f"  realdata {set_name}: {len(bitmaps)} bitmaps, engine/pyroaring median {float(np.median(ratios)):.1f}×")
    return out
