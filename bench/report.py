"""``RESULTS.md`` from a run's ``results.json``.

Two steps, both pure functions of the results:

* ``derive(results)`` adds the derived figures next to the values they come
  from (the fields of ``DERIVED``, each with its formula) and the goal verdicts
  (``bench/goals.py``); ``write`` stores them in ``results.json`` with the
  measured values.
* ``render(results)`` turns derived results into markdown. It computes
  nothing: every number it prints is a value of the results, formatted by
  one of ``FORMATTERS``; the prose explains methods and names rows, it states
  no figure of its own (``tests/bench/test_report.py`` checks both).

``python -m bench.report DIR/results.json`` derives and renders again, writing
``results.json``, ``RESULTS.md`` and ``charts/`` in ``DIR``.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .goals import GOALS, headline, why_not_measured
from .processes import Log

Results = dict[str, Any]
NA = "–"

#: every field ``derive`` adds, with its formula
DERIVED: dict[str, str] = {
    "floor_s": "a query's `floor_bytes` ÷ the measured DRAM bandwidth (`bandwidth.dram_bytes_per_s`)",
    "x_floor": "a method's median ÷ its query's `floor_s`",
    "x_engine": "a method's median ÷ the median of `engine` on the same query (same rounds); not for `engine`",
    "x_serialized": "a segment's `cached_bytes` ÷ its `serialized_bytes`",
    "bookkeeping_bytes": "a segment's `cached_bytes` − `bitmap_only_bytes` (what the cache keeps besides the bitmap)",
    "memory_total": "the sums of `serialized_bytes` and `cached_bytes` over the segments, and their `x_serialized`",
    "api_overhead_s": "HTTP hot reach p50 − the engine's own `took_ms` p50 in the same requests (`engine_took`)",
    "overhead_s": "a tiny-segment method's median − the median of `pyroaring` on the same query (same rounds)",
    "x_pyroaring": "a real-data query's engine median ÷ pyroaring's (same rounds)",
    "median_x_pyroaring": "the median of `x_pyroaring` over a data set's queries, and over every query of every set",
    "budgets": "per HTTP route: `engine_s` (the engine's p50 for it), `bare_s` (the bare app's p50 for the same "
    "requests), `budget_s` = `engine_s` + `budget_factor` × `bare_s`, `http_s` (the route's p50) and "
    "`x_budget` = `http_s` ÷ `budget_s`",
    "x_one_worker_each": "throughput with `workers` workers ÷ (`workers` × the one-worker throughput, same "
    "connections)",
    "worker_rss_max_bytes": "the largest resident size among a server's worker processes (`worker_rss_bytes`)",
    "worker_rss_total_bytes": "the sum of the resident sizes of a server's worker processes",
    "x_batch_read": "a store's cold first-reach median ÷ its one-batch-read median (same rounds)",
    "model": "the scale model (`scale_model`): least-squares lines over the measured sizes and their values "
    "at each target size",
    "goals": "each row of `bench/goals.py`: its limit, the value it measures (`measured`) and whether it is met",
}


# -- formatting ------------------------------------------------------------------------


def _missing(value: float | None) -> bool:
    return value is None or value != value  # None or nan


def fmt_time(seconds: float | None) -> str:
    if seconds is None or _missing(seconds):
        return NA
    if abs(seconds) < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if abs(seconds) < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(value: float | None) -> str:
    if value is None or _missing(value):
        return NA
    if value >= 100:
        return f"{value:.0f}×"
    if value >= 10:
        return f"{value:.1f}×"
    return f"{value:.2f}×"


def fmt_bytes(n: float | None) -> str:
    if n is None or _missing(n):
        return NA
    if n >= 1 << 30:
        return f"{n / (1 << 30):.2f} GiB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n:.0f} B"


def fmt_bandwidth(bytes_per_s: float | None) -> str:
    return NA if bytes_per_s is None or _missing(bytes_per_s) else f"{bytes_per_s / 1e9:.1f} GB/s"


def fmt_count(n: float | None) -> str:
    return NA if n is None or _missing(n) else f"{round(n):,}"


def fmt_millions(n: float | None) -> str:
    return NA if n is None or _missing(n) else f"{n / 1e6:,.4g}M"


#: every way ``render`` prints a number
FORMATTERS: tuple[Callable[[float | None], str], ...] = (
    fmt_time, fmt_ratio, fmt_bytes, fmt_bandwidth, fmt_count, fmt_millions,
)  # fmt: skip
#: how a goal's limit and measured value are printed, by its unit
UNIT_FORMATS: dict[str, Callable[[float | None], str]] = {
    "s": fmt_time,
    "ratio": fmt_ratio,
    "ids_per_s": lambda v: f"{fmt_millions(v)} IDs/s",
    "count": fmt_count,
}


# -- derived figures -----------------------------------------------------------------


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _med(t: dict[str, Any] | None) -> float | None:
    return None if not t else t.get("median_s")


def _derive_queries(queries: list[dict[str, Any]], bandwidth: float | None) -> None:
    for q in queries:
        timings = q["timings"]
        if q.get("floor_bytes"):
            q["floor_s"] = _div(q["floor_bytes"], bandwidth)
        engine = _med(timings.get("engine"))
        for method, t in timings.items():
            if "floor_s" in q:
                t["x_floor"] = _div(t["median_s"], q["floor_s"])
            if method != "engine" and engine is not None:
                t["x_engine"] = _div(t["median_s"], engine)


def derive(raw: Results) -> Results:
    """A copy of ``raw`` with the fields of ``DERIVED``; idempotent."""
    results = copy.deepcopy(raw)
    bandwidth = results.get("bandwidth", {}).get("dram_bytes_per_s")
    sections = [results.get("engine"), results.get("sets")]
    sections += (
        (results.get("scaling") or {}).get("points", []) if isinstance(results.get("scaling"), dict) else []
    )
    for section in sections:
        if isinstance(section, dict) and "queries" in section:
            _derive_queries(section["queries"], bandwidth)
    memory = results.get("memory")
    if isinstance(memory, dict) and memory and "error" not in memory:
        for row in memory.values():
            row["x_serialized"] = _div(row["cached_bytes"], row["serialized_bytes"])
            row["bookkeeping_bytes"] = row["cached_bytes"] - row["bitmap_only_bytes"]
        serialized = sum(row["serialized_bytes"] for row in memory.values())
        cached = sum(row["cached_bytes"] for row in memory.values())
        results["memory_total"] = {
            "serialized_bytes": serialized,
            "cached_bytes": cached,
            "x_serialized": _div(cached, serialized),
        }
    http = results.get("http")
    if isinstance(http, dict) and "hot" in http and http.get("engine_took"):
        http["api_overhead_s"] = http["hot"]["latency"]["median_s"] - http["engine_took"]["median_s"]
    if isinstance(http, dict) and "hot" in http:
        _derive_http(http)
    overhead = results.get("overhead")
    if isinstance(overhead, dict):
        _derive_overhead(overhead)
    coldstart = results.get("coldstart")
    if isinstance(coldstart, dict):
        for store in ("sqlite", "aerospike"):
            part = coldstart.get(store)
            if isinstance(part, dict) and "timings" in part:
                t = part["timings"]
                part["x_batch_read"] = _div(t["first reach"]["median_s"], t["one batch read"]["median_s"])
    scale = results.get("scale")
    if isinstance(scale, dict) and scale.get("points"):
        scale["model"] = scale_model(scale, http_p50_limit=next(g.limit for g in GOALS if g.key == "http_p50"))
    results["goals"] = [goal.evaluate(results) for goal in GOALS]
    return results


def _derive_overhead(overhead: Results) -> None:
    tiny = overhead.get("tiny")
    if isinstance(tiny, dict):
        for q in tiny.get("queries", []):
            base = q["timings"]["pyroaring"]["median_s"]
            for method, t in q["timings"].items():
                if method != "pyroaring":
                    t["overhead_s"] = t["median_s"] - base
    real = overhead.get("realdata")
    if isinstance(real, dict) and real.get("sets"):
        every: list[float] = []
        for part in real["sets"].values():
            ratios = []
            for q in part["queries"]:
                q["x_pyroaring"] = _div(q["timings"]["engine"]["median_s"], q["timings"]["pyroaring"]["median_s"])
                ratios.append(q["x_pyroaring"])
            part["median_x_pyroaring"] = _median(ratios)
            every += ratios
        real["median_x_pyroaring"] = _median(every)


def _median(values: list[float]) -> float | None:
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return None
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _derive_http(http: Results) -> None:
    for key in ("hot_c8", "hot_c8_workers"):
        row = http.get(key)
        if isinstance(row, dict) and row.get("worker_rss_bytes"):
            row["worker_rss_max_bytes"] = max(row["worker_rss_bytes"])
            row["worker_rss_total_bytes"] = sum(row["worker_rss_bytes"])
    workers, one = http.get("hot_c8_workers"), http.get("hot_c8")
    if isinstance(workers, dict) and isinstance(one, dict) and "workers" in workers:
        workers["x_one_worker_each"] = _div(workers["throughput_rps"], workers["workers"] * one["throughput_rps"])
    factor = http.get("budget_factor")
    if factor is None:
        return
    lookups = http.get("membership_engine") or {}
    sources = {
        "reach": (http.get("engine_took"), http.get("bare_reach"), http.get("hot")),
        "lookup": (lookups.get(http.get("default_lookup", "")), http.get("bare_lookup"), http.get("membership")),
        "match": (lookups.get("matches"), http.get("bare_match"), http.get("match")),
    }
    budgets: dict[str, Any] = {}
    for name, (engine, bare, route) in sources.items():
        if not engine or not bare or not route:
            continue
        engine_s, bare_s, http_s = engine["median_s"], bare["latency"]["median_s"], route["latency"]["median_s"]
        budget = engine_s + factor * bare_s
        budgets[name] = {
            "engine_s": engine_s,
            "bare_s": bare_s,
            "budget_s": budget,
            "http_s": http_s,
            "x_budget": _div(http_s, budget),
        }
    http["budgets"] = budgets


def _line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x``; ``(a, b)`` (one point: through the origin)."""
    n = len(xs)
    if n == 1:
        return 0.0, ys[0] / xs[0] if xs[0] else 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - b * mx, b


def scale_model(scale: Results, *, http_p50_limit: float) -> Results:
    """The scale model: lines fitted over the measured sizes, their values at the targets, and the limits.

    Every quantity ``y`` measured at sizes ``u`` (millions of users) is fitted
    by least squares to ``y = a + b × u`` (``intercept`` a, ``per_million`` b)
    and evaluated at each target (``a + b × millions``):

    * ``query_s[key]``: a query's hot engine median;
    * ``segment_bytes``: cache bytes of one segment, the mean over the data
      set's shapes (``dense_segment_bytes``: of ``s60`` alone, bitmap containers);
    * ``replace_s``: one ``Segments.replace`` of the 10 %-dense segment.

    Then, per target: ``replica_bytes`` = ``segments`` × ``segment_bytes`` (the
    cache one replica needs to hold every segment hot), ``replicas_for_memory``
    = ⌈``replica_bytes`` ÷ ``replica_memory_bytes``⌉, ``aerospike_nodes`` =
    ⌈``replica_bytes`` × ``replication`` ÷ ``replica_memory_bytes``⌉ (an
    in-memory namespace on nodes with this machine's memory). ``limits``: the
    users at which one process's cache of every segment fills its memory
    (``(replica_memory_bytes ÷ segments − a) ÷ b`` millions), and at which the
    headline query reaches the HTTP p50 goal (``(limit − a) ÷ b``).
    """
    points = sorted(scale["points"], key=lambda p: p["users"])
    xs = [p["users"] / 1e6 for p in points]
    assumptions = scale["assumptions"]
    fits: dict[str, Any] = {}

    def fit(name: str, ys: list[float]) -> None:
        a, b = _line(xs, ys)
        fits[name] = {"intercept": a, "per_million": b}

    for key in points[0]["queries"]:
        fit(f"query_s[{key}]", [p["queries"][key]["timings"]["engine"]["median_s"] for p in points])
    fit("segment_bytes", [sum(p["cache_bytes"].values()) / len(p["cache_bytes"]) for p in points])
    fit("dense_segment_bytes", [p["cache_bytes"]["s60"] for p in points])
    fit("replace_s", [p["ingest"]["replace_s"] for p in points])
    memory, count = assumptions["replica_memory_bytes"], assumptions["segments"]
    targets = []
    for users in scale["targets"]:
        millions = users / 1e6
        at = {name: f["intercept"] + f["per_million"] * millions for name, f in fits.items()}
        replica = count * at["segment_bytes"]
        targets.append(
            {
                "users": users,
                "millions": millions,
                "values": at,
                "replica_bytes": replica,
                "replicas_for_memory": -(-replica // memory) if memory else None,
                "aerospike_nodes": -(-(replica * assumptions["replication"]) // memory) if memory else None,
            }
        )
    seg = fits["segment_bytes"]
    head = fits.get("query_s[q5]")
    limits = {
        "memory_users": (memory / count - seg["intercept"]) / seg["per_million"] * 1e6
        if seg["per_million"] > 0
        else None,
        "latency_limit_s": http_p50_limit,
        "latency_users": (http_p50_limit - head["intercept"]) / head["per_million"] * 1e6
        if head and head["per_million"] > 0
        else None,
    }
    return {"fits": fits, "targets": targets, "limits": limits}


# -- the document --------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(row) for row in rows)]


def _users(results: Results) -> str:
    return fmt_millions(results.get("dataset", {}).get("users"))


def header(results: Results) -> list[str]:
    quick = " (quick run)" if results.get("config", {}).get("quick") else ""
    out = [
        f"# Benchmark results{quick}",
        "",
        "Generated by `python -m bench` from `results.json` next to this file (`bench/report.py`). Every figure "
        "here is a value recorded in `results.json`: measured, or derived from measured values by the formulas "
        'at the end ("Derived figures"). `python -m bench.report DIR/results.json` renders it again.',
        "",
    ]
    failures = results.get("failures") or []
    if failures:
        out += ["**Failed sections:**", "", *(f"* {f}" for f in failures), ""]
    return out


def goals_table(results: Results) -> list[str]:
    rows = []
    for g in results.get("goals", []):
        fmt = UNIT_FORMATS[g["unit"]]
        if g["measured"] is None:
            measured = g["note"]
        else:
            measured = fmt(g["measured"]) + (f" ({g['note']})" if g["note"] else "")
        verdict = "not measured" if g["met"] is None else "**met**" if g["met"] else "**missed**"
        rows.append((g["text"].format(limit=fmt(g["limit"])), measured, verdict))
    return _table(("goal", "measured", "verdict"), rows)


def environment_table(results: Results) -> list[str]:
    bw = results["bandwidth"]
    rows = [(k, str(v)) for k, v in results.get("environment", {}).items()]
    rows.append(
        (
            "memory bandwidth (measured)",
            f"DRAM {fmt_bandwidth(bw['dram_bytes_per_s'])} ({fmt_bytes(bw['dram_array_bytes'])} array), "
            f"cache-resident {fmt_bandwidth(bw['cache_bytes_per_s'])} ({fmt_bytes(bw['cache_array_bytes'])}); "
            f"{bw['method']}",
        )
    )
    redis = results.get("redis", {})
    rows.append(("redis-server", str(redis.get("version") or redis.get("skipped", NA))))
    cfg = results.get("config", {})
    rows.append(
        (
            "run",
            f"{fmt_millions(cfg.get('users'))} users, seed {cfg.get('seed')}, {fmt_count(cfg.get('rounds'))} rounds "
            f"({fmt_count(cfg.get('slow_rounds'))} for slow methods), {'quick' if cfg.get('quick') else 'full'}; "
            f"took {fmt_time(results.get('total_seconds'))}",
        )
    )
    return _table(("", ""), rows)


def method_text(results: Results) -> list[str]:
    bw = results["bandwidth"]
    return [
        "* **Data** (`bench/datasets.py`): seeded numpy generators, cached in `bench/.cache/` with a SQLite store "
        "written by `Segments.replace`. `s1`, `s10`, `s30`, `s60`: uniformly random members at the density the "
        "name gives in percent; `clustered`: the newest IDs plus a few older blocks (contiguous ranges, run "
        "containers); `skewed`: per-shard density drawn log-normally, a mix of array and bitmap containers; "
        "`all`: the universe. The members of each segment are in the memory table.",
        "* **Hot** means every segment is cached whole in the client (`Segments.overlap(all names)` first), the "
        "steady state of a serving process. Each `reach` still does its per-query batch read of the meta records; "
        "*no store read* rows use a store wrapper that memoises those records, leaving planning, cache lookups "
        "and evaluation.",
        "* **Rounds**: each round runs every method once, in a rotating order; figures are the median and p99 "
        "over rounds, ratios are ratios of medians from the same rounds. Garbage collection is off inside a round "
        "and runs between rounds at a fixed interval. Slow methods (naive pyroaring, chDB, Redis, sets) run in "
        "the first rounds only (the samples column counts them). Every call's answer is compared with naive "
        "pyroaring's; a mismatch aborts the run.",
        "* **The floor** of a query: the bytes it must read divided by the machine's read bandwidth measured in "
        f"the same run ({bw['method']}; DRAM {fmt_bandwidth(bw['dram_bytes_per_s'])} over a "
        f"{fmt_bytes(bw['dram_array_bytes'])} array). The bytes counted: for every segment the query names, the "
        "serialized payload of its containers in the shards where the planned query needs it. The plan is the "
        "engine's: a node matters only on the shards where its parent can be non-empty and it can be non-empty "
        "itself, and `~x` next to a positive `&` operand is a subtraction (the universe is not read). Headers, "
        "keys and metadata are not counted. Hot operands can sit in the last-level cache (see the environment), "
        "so a hot query may in principle beat this DRAM floor.",
        "* **chDB**: one row of a `Memory` table, one `groupBitmap` aggregate column per segment, the expression "
        "as nested `bitmapAnd/Or/Xor/Andnot` and `bitmapCardinality`. **Redis**: a `redis-server` started by the "
        "benchmark (loopback, no persistence), one bitmap string per segment, the expression as `BITOP` commands "
        "plus `BITCOUNT` in one pipeline (`a - b` is `NOT` then `AND`). **Python sets** run on a smaller "
        "universe, next to the engine at that size.",
        "* **Fused kernel (prototype)** (`bench/kernel_proto.py`): every segment as a plain dense bitset, the "
        "whole expression run as one postfix program of compiled C over blocks of words that stay in the "
        "first-level cache, counted with `popcount`: one read of each operand, nothing written. It shows what a "
        "compiled kernel reaches where pyroaring's operators (one whole bitmap per step, array containers written "
        "member by member) leave the engine; it ignores the plan's shard regions and reads sparse segments as "
        "dense, so it may read more than the floor counts.",
        "",
    ]


def _methods(timings: dict[str, Any]) -> list[str]:
    order = [
        "engine",
        "engine, no store read",
        "engine (memory://)",
        "fused kernel (prototype)",
        "pyroaring (naive)",
        "chDB",
        "Redis",
        "set",
    ]
    return [k for k in order if k in timings] + [k for k in timings if k not in order]


def engine_tables(results: Results, charts: Sequence[str]) -> list[str]:
    engine = results.get("engine")
    if not isinstance(engine, dict) or "queries" not in engine:
        return [why_not_measured(engine), ""]
    out: list[str] = []
    head = headline(results)
    if head:
        t = head["timings"]
        per_segment = ", ".join(f"`{k}` {fmt_bytes(v)}" for k, v in head["floor_by_segment"].items())
        out += [
            f"### The headline query `{head['text']}` ({_users(results)} users, reach {fmt_count(head['answer'])})",
            "",
            f"Floor: {fmt_bytes(head['floor_bytes'])} touched at "
            f"{fmt_bandwidth(results['bandwidth']['dram_bytes_per_s'])} = **{fmt_time(head.get('floor_s'))}** "
            f"({per_segment}).",
            "",
        ]
        methods = [
            (
                f"`{k}`",
                fmt_time(t[k]["median_s"]),
                fmt_time(t[k]["p99_s"]),
                fmt_ratio(t[k].get("x_floor")),
                fmt_ratio(t[k].get("x_engine")),
                fmt_count(t[k]["n"]),
            )
            for k in _methods(t)
        ]
        out += _table(("method", "median", "p99", "× floor", "× engine", "samples"), methods) + [""]
    rows: list[tuple[str, ...]] = []
    for q in engine["queries"]:
        t = q["timings"]

        def cell(key: str, t: dict[str, Any] = t) -> str:
            if key not in t:
                return NA
            return f"{fmt_time(t[key]['median_s'])} ({fmt_ratio(t[key].get('x_engine'))})"

        rows.append(
            (
                f"`{q['text']}`",
                fmt_count(q["terms"]),
                fmt_count(q["answer"]),
                fmt_time(q.get("floor_s")),
                fmt_time(t["engine"]["median_s"]),
                fmt_ratio(t["engine"].get("x_floor")),
                cell("fused kernel (prototype)"),
                cell("pyroaring (naive)"),
                cell("chDB"),
                cell("Redis"),
            )
        )
    out += [
        "### Every query (medians; in brackets × engine, same rounds)",
        "",
        *_table(
            (
                "query",
                "terms",
                "reach",
                "floor",
                "engine",
                "engine × floor",
                "fused kernel prototype",
                "naive pyroaring",
                "chDB",
                "Redis",
            ),
            rows,
        ),
        "",
        "p99 of every method is in `results.json`. Skipped: "
        + (", ".join(f"{k}: {v}" for k, v in engine["skipped"].items()) or "nothing")
        + ". Loading the data into the alternatives took: "
        + (", ".join(f"{k} {fmt_time(v)}" for k, v in engine["load_seconds"].items()) or "nothing")
        + ".",
        "",
    ]
    out += _charts(charts, "headline", "queries")
    return out


def sets_table(results: Results) -> list[str]:
    sets = results.get("sets")
    if not isinstance(sets, dict) or "queries" not in sets:
        return [why_not_measured(sets), ""]
    rows = [
        (
            f"`{q['text']}`",
            fmt_time(q["timings"]["set"]["median_s"]),
            fmt_time(q["timings"]["engine"]["median_s"]),
            fmt_time(q["timings"]["pyroaring (naive)"]["median_s"]),
            fmt_ratio(q["timings"]["set"].get("x_engine")),
        )
        for q in sets["queries"]
    ]
    return [
        f"Python `set` on a {fmt_millions(sets['users'])}-user universe, next to the engine and naive pyroaring on "
        "the same data, same rounds (medians).",
        "",
        *_table(("query", "set", "engine", "naive pyroaring", "set × engine"), rows),
        "",
        f"Building the sets took {fmt_time(sets['load_seconds'].get('set'))}.",
        "",
    ]


def breakdown_table(results: Results) -> list[str]:
    bd = results.get("breakdown")
    if not isinstance(bd, dict) or "reach" not in bd:
        return [why_not_measured(bd), ""]
    rows = [(f"`{part}`", fmt_time(t["median_s"]), fmt_time(t["p99_s"])) for part, t in bd.items()]
    return [
        "The hot headline query and its parts, timed separately in the same interleaved rounds (they need not "
        "add up exactly): `store.get_many(meta)` is the batch read of the query's meta records from SQLite, "
        "`engine.snapshot` adds decoding them and looking up the cached shard maps, *reach, no store read* is "
        "planning, cache lookups and evaluation without the store read.",
        "",
        *_table(("part", "median", "p99"), rows),
        "",
    ]


def cold_table(results: Results) -> list[str]:
    cold = results.get("cold")
    if not isinstance(cold, dict) or not cold or "error" in cold:
        return [why_not_measured(cold), ""]
    engine = results.get("engine")
    texts = {q["key"]: q["text"] for q in engine.get("queries", [])} if isinstance(engine, dict) else {}
    rows = [
        (f"`{texts.get(key, key)}`", method, fmt_time(v["median_s"]), fmt_time(v["p99_s"]), fmt_count(v["n"]))
        for key, timings in cold.items()
        for method, v in timings.items()
    ]
    return [
        "A fresh client (empty cache) per query, every segment it needs fetched from the SQLite store.",
        "",
        *_table(("query", "method", "median", "p99", "samples"), rows),
        "",
    ]


def scaling_points(results: Results) -> list[tuple[int, dict[str, Any]]]:
    """``(users, headline query row)`` of every universe size measured, smallest first."""
    points: list[tuple[int, dict[str, Any]]] = []
    scaling = results.get("scaling")
    if isinstance(scaling, dict):
        points += [(p["users"], p["queries"][0]) for p in scaling.get("points", []) if p["queries"]]
    head = headline(results)
    if head:
        points.append((results["dataset"]["users"], head))
    return sorted(points, key=lambda x: x[0])


SCALING_METHODS = ("engine", "pyroaring (naive)", "chDB", "Redis")


def scaling_table(results: Results, charts: Sequence[str]) -> list[str]:
    points = scaling_points(results)
    if not points:
        return [why_not_measured(results.get("scaling")), ""]
    rows = [
        (
            f"{fmt_millions(users)}",
            fmt_time(q.get("floor_s")),
            *(fmt_time(q["timings"][m]["median_s"]) if m in q["timings"] else NA for m in SCALING_METHODS),
        )
        for users, q in points
    ]
    return [
        "The headline query on universes of several sizes (medians), each data set built the same way.",
        "",
        *_table(("users", "floor", *SCALING_METHODS), rows),
        "",
        *_charts(charts, "scaling"),
    ]


HTTP_ROWS = (
    ("bare_reach", "bare Starlette app, the same reach requests, one connection"),
    ("hot", "hot reach, one connection"),
    ("hot_c8", "hot reach, concurrent connections"),
    ("hot_c8_workers", "hot reach, concurrent connections, several workers"),
    ("membership", "user lookup, the API's default staleness, one connection"),
    ("membership_stale", "user lookup, `--lookup-staleness` set, one connection"),
    ("bare_lookup", "bare Starlette app, the same lookup requests"),
    ("match", "per-user check `POST /v1/users/{id}/match`, one connection"),
    ("bare_match", "bare Starlette app, the same check requests"),
    ("cold", "cold reach: first request of a fresh server"),
)


def http_tables(results: Results, charts: Sequence[str]) -> list[str]:
    http = results.get("http")
    if not isinstance(http, dict) or "hot" not in http:
        return [why_not_measured(http), ""]
    rows = []
    for key, label in HTTP_ROWS:
        if key not in http:
            continue
        r = http[key]
        details = [
            f"{name} {fmt_count(r[field])}"
            for name, field in (
                ("concurrency", "concurrency"),
                ("workers", "workers"),
                ("segments", "segments"),
            )
            if field in r
        ]
        if "lookup_staleness" in r:
            details.append(f"staleness {fmt_time(r['lookup_staleness'])}")
        rows.append(
            (
                label + (f" ({', '.join(details)})" if details else ""),
                fmt_count(r["requests"]),
                fmt_time(r["latency"]["median_s"]),
                fmt_time(r["latency"]["p99_s"]),
                f"{fmt_count(r['throughput_rps'])} req/s" if "throughput_rps" in r else "",
            )
        )
    out = [
        f"Server: {http.get('server', '')}; client: {http.get('client', '')}.",
        "",
        *_table(("measurement", "requests", "p50", "p99", "throughput"), rows),
        "",
    ]
    out += budgets_table(http) + workers_table(http) + lookups_table(http)
    took = http.get("engine_took")
    if took:
        out += [
            f"Engine time inside the server (`took_ms` of the hot one-connection requests): p50 "
            f"{fmt_time(took['median_s'])}, p99 {fmt_time(took['p99_s'])}; the rest of the HTTP p50 "
            f"(`api_overhead_s`: parsing, routing, the threadpool hop, JSON, the loopback round trip and the "
            f"client) is {fmt_time(http.get('api_overhead_s'))}.",
            "",
        ]
    return out + _charts(charts, "http")


def budgets_table(http: Results) -> list[str]:
    budgets = http.get("budgets")
    if not budgets:
        return []
    rows = [
        (name, fmt_time(b["engine_s"]), fmt_time(b["bare_s"]), fmt_time(b["budget_s"]), fmt_time(b["http_s"]),
         fmt_ratio(b["x_budget"]))
        for name, b in budgets.items()
    ]  # fmt: skip
    return [
        f"The HTTP budget of each route: the engine's own p50 for it (reach: `took_ms`; lookup: in-process "
        f"`segments_of` at the API's default staleness; check: in-process `Segments.matches`) plus "
        f"{fmt_ratio(http['budget_factor'])} the bare app's p50 for the same requests, same client, same run.",
        "",
        *_table(("route", "engine p50", "bare round trip p50", "budget", "HTTP p50", "× budget"), rows),
        "",
    ]


def workers_table(http: Results) -> list[str]:
    one, many = http.get("hot_c8"), http.get("hot_c8_workers")
    if not isinstance(one, dict):
        return []
    rows = [("1", f"{fmt_count(one['throughput_rps'])} req/s", "", fmt_bytes(one.get("worker_rss_max_bytes")),
             fmt_bytes(one.get("worker_rss_total_bytes")))]  # fmt: skip
    if isinstance(many, dict):
        rows.append(
            (fmt_count(many.get("workers")), f"{fmt_count(many['throughput_rps'])} req/s",
             fmt_ratio(many.get("x_one_worker_each")), fmt_bytes(many.get("worker_rss_max_bytes")),
             fmt_bytes(many.get("worker_rss_total_bytes")))
        )  # fmt: skip
    return [
        "Hot reach throughput with concurrent connections, one worker and several (each worker holds its own "
        "cache of every segment, so cache memory grows with the workers); resident memory of the worker "
        "processes after the run.",
        "",
        *_table(("workers", "throughput", "× (workers × one worker)", "largest worker RSS", "all workers RSS"),
                rows),  # fmt: skip
        "",
    ]


def _lookup_rows(label: str, engine: Results) -> list[tuple[str, ...]]:
    rows = []
    for name, t in engine.items():
        if name == "matches":
            rows.append((f"{label}: `Segments.matches`", fmt_time(t["median_s"]), fmt_time(t["p99_s"]), "", "", ""))
            continue
        rows.append(
            (
                f"{label}: `segments_of`, `{name}`",
                fmt_time(t["median_s"]),
                fmt_time(t["p99_s"]),
                fmt_time(t.get("max_staleness_s")),
                f"{fmt_count(t.get('scans_per_s'))}/s",
                f"{fmt_bytes(t.get('bytes_per_scan'))} ({fmt_count(t.get('records_per_scan'))} records)",
            )
        )
    return rows


def lookups_table(http: Results) -> list[str]:
    rows = _lookup_rows("sqlite", http.get("membership_engine", {}))
    aero = http.get("aerospike")
    note = ""
    if isinstance(aero, dict) and "engine" in aero:
        rows += _lookup_rows("Aerospike", aero["engine"])
        for key, label in (("membership", "over HTTP, API default staleness"), ("match", "check over HTTP")):
            if key in aero:
                r = aero[key]
                rows.append((f"Aerospike: {label}", fmt_time(r["latency"]["median_s"]),
                             fmt_time(r["latency"]["p99_s"]), "", "", ""))  # fmt: skip
        note = f" Aerospike: {aero['server']}, loaded in {fmt_time(aero['load_seconds'])}."
    elif isinstance(aero, dict):
        note = " Aerospike: " + why_not_measured(aero) + "."
    segs = http.get("membership", {}).get("segments")
    return [
        f"User lookups and per-user checks in this process (no HTTP), {fmt_count(segs)} segments, warm; "
        "*oldest answer* is the largest freshness bound the answers stated (`Lookup.staleness`); *scans* are the "
        "metadata scans that kept the snapshot fresh (`Segments.lookup_refreshes`) per second of lookups, and "
        "what one scan read." + note,
        "",
        *_table(("lookup", "p50", "p99", "oldest answer", "scans", "per scan"), rows),
        "",
    ]


def overhead_tables(results: Results) -> list[str]:
    overhead = results.get("overhead")
    if not isinstance(overhead, dict) or "tiny" not in overhead:
        return [why_not_measured(overhead), ""]
    tiny = overhead["tiny"]
    rows = []
    for q in tiny["queries"]:
        for method, t in q["timings"].items():
            rows.append(
                (
                    f"`{q['text']}`",
                    method,
                    fmt_time(t["median_s"]),
                    fmt_time(t["p99_s"]),
                    fmt_time(t.get("overhead_s")),
                    fmt_time(q["max_staleness_s"].get(method)) if method in q["max_staleness_s"] else "",
                )
            )
    out = [
        f"Segments of {fmt_count(tiny['ids_per_segment'])} IDs, cached; `Segments.reach_detailed(text)` next to "
        "pyroaring computing the same count, same rounds. *Overhead* is the method's median minus pyroaring's; "
        f"*oldest answer* the largest `ReachResult.staleness` the answers stated (the stale clients reuse a "
        f"metadata snapshot up to {fmt_time(tiny['staleness_s'])} old).",
        "",
        *_table(("query", "method", "median", "p99", "overhead", "oldest answer"), rows),
        "",
    ]
    real = overhead.get("realdata")
    if isinstance(real, dict) and real.get("sets"):
        rows = [
            (name, fmt_count(part["bitmaps"]), fmt_count(part["ids"]), fmt_count(len(part["queries"])),
             fmt_ratio(part.get("median_x_pyroaring")))
            for name, part in real["sets"].items()
        ]  # fmt: skip
        out += [
            f"CRoaring's real data sets ({real['directory']}): 4-term reaches, engine (`memory://`) ÷ pyroaring "
            f"doing the same; median over every query {fmt_ratio(real.get('median_x_pyroaring'))}.",
            "",
            *_table(("data set", "bitmaps", "IDs", "queries", "median engine ÷ pyroaring"), rows),
            "",
        ]
    else:
        out += ["CRoaring's real data sets: " + why_not_measured(real), ""]
    return out


def coldstart_table(results: Results) -> list[str]:
    cold = results.get("coldstart")
    if not isinstance(cold, dict) or "sqlite" not in cold:
        return [why_not_measured(cold), ""]
    rows = []
    for store in ("sqlite", "aerospike"):
        part = cold.get(store)
        if not isinstance(part, dict) or "timings" not in part:
            rows.append((store, why_not_measured(part), "", "", "", ""))
            continue
        t, reads = part["timings"], part["reads"]
        label = part.get("server", store)
        rows.append(
            (
                label,
                fmt_time(t["first reach"]["median_s"]),
                fmt_time(t["one batch read"]["median_s"]),
                fmt_ratio(part.get("x_batch_read")),
                f"{fmt_count(reads['calls'])} calls, {fmt_count(reads['records'])} records",
                fmt_bytes(reads["bytes"]),
            )
        )
    return [
        f"A fresh client (empty cache, as after a restart) answers `{cold['query']}`; every shard of its five "
        "segments is needed. Next to it, in the same rounds, one `get_many` call reads every shard record of those "
        "segments from a fresh connection. Connecting is not timed.",
        "",
        *_table(("store", "first reach p50", "one batch read p50", "× batch read", "the reach read", "bytes"), rows),
        "",
    ]


def scale_tables(results: Results) -> list[str]:
    scale = results.get("scale")
    if not isinstance(scale, dict) or "model" not in scale:
        return [why_not_measured(scale), ""]
    points, model = scale["points"], scale["model"]
    keys = list(points[0]["queries"])
    rows = [
        (
            fmt_millions(p["users"]),
            *(fmt_time(p["queries"][k]["timings"]["engine"]["median_s"]) for k in keys),
            fmt_bytes(p["cache_bytes"]["s60"]),
            fmt_bytes(p["cache_bytes"]["s1"]),
            fmt_time(p["ingest"]["replace_s"]),
            fmt_time(p["ingest"]["add_s"]),
        )
        for p in points
    ]
    head = [f"`{points[0]['queries'][k]['text']}`" for k in keys]
    out = [
        "Measured at each size (hot engine medians; cache bytes the engine accounts per segment; one "
        "`Segments.replace` of `s10` and one `Segments.add` of a random delta of a hundredth of the users into "
        "a fresh SQLite store).",
        "",
        *_table(("users", *head, "`s60` cached", "`s1` cached", "replace `s10`", "add delta"), rows),
        "",
    ]
    fits = model["fits"]
    rows = []
    for name, f in fits.items():
        fmt = fmt_bytes if name.endswith("_bytes") else fmt_time
        rows.append((f"`{name}`", fmt(f["intercept"]), fmt(f["per_million"])))
    out += [
        "The model (`report.scale_model`): each quantity fitted by least squares to *a + b × users in millions*.",
        "",
        *_table(("quantity", "a", "b (per million users)"), rows),
        "",
    ]
    a = scale["assumptions"]
    rows = []
    for t in model["targets"]:
        v = t["values"]
        seg = fits["segment_bytes"]
        rows.append(
            (
                fmt_millions(t["users"]),
                *(fmt_time(v[f"query_s[{k}]"]) for k in keys),
                f"{fmt_bytes(seg['intercept'])} + {fmt_bytes(seg['per_million'])} × {fmt_count(t['millions'])} = "
                f"{fmt_bytes(v['segment_bytes'])}",
                f"{fmt_count(a['segments'])} × {fmt_bytes(v['segment_bytes'])} = {fmt_bytes(t['replica_bytes'])}",
                fmt_count(t["replicas_for_memory"]),
                fmt_count(t["aerospike_nodes"]),
                fmt_time(v["replace_s"]),
            )
        )
    lim = model["limits"]
    out += [
        f"Extrapolated (values of the lines at each size). Assumed: {fmt_count(a['segments'])} segments with the "
        f"benchmark's mix of shapes, replicas and Aerospike nodes with this machine's memory "
        f"({fmt_bytes(a['replica_memory_bytes'])}), replication {fmt_count(a['replication'])}.",
        "",
        *_table(
            ("users", *head, "cache per segment", "cache for every segment hot (one replica)",
             "machines' memory it needs", "Aerospike nodes (in memory)", "replace `s10`"),
            rows,
        ),  # fmt: skip
        "",
        f"Where one process stops being enough: its cache of every segment fills this machine's memory at "
        f"{fmt_millions(lim['memory_users'])} users; the headline query reaches the HTTP p50 goal "
        f"({fmt_time(lim['latency_limit_s'])}) at {fmt_millions(lim['latency_users'])} users. Past the first, "
        "a replica cannot hold every segment hot: the deployment gives each replica a cache budget for the hot "
        "set (the rest is read cold, at the cold-start cost above) or runs replicas with more memory; past the "
        "second, a query over every shard no longer fits the latency goal on one core, and the answer is more "
        "cores per query (the engine evaluates a query on one thread) rather than more replicas, which add "
        "throughput, not speed. Aerospike holds the records and scales by nodes as in the table.",
        "",
    ]
    return out


def ingest_tables(results: Results) -> list[str]:
    ingest = results.get("ingest")
    if not isinstance(ingest, dict) or "binary" not in ingest:
        return [why_not_measured(ingest), ""]
    rows = [
        (
            label,
            fmt_count(r["ids"]),
            fmt_count(r["messages"]),
            fmt_time(r["seconds"]),
            UNIT_FORMATS["ids_per_s"](r["ids_per_s"]),
        )
        for key, label in (("binary", "binary roaring messages"), ("json", "JSON messages"))
        if key in ingest
        for r in (ingest[key],)
    ]
    out = [
        "A tansu broker (memory storage, one partition), the public producer (`ingest.producer.SegmentProducer`) "
        "and one consumer process (`python -m segments ingest`) writing to a SQLite store, all on this machine. "
        "Throughput: the topic is filled first, then the consumer starts; the time runs from its partition "
        "assignment to the moment the store shows every ID. Freshness: with the consumer caught up, one ID is "
        "produced (acknowledged by the broker) and `Segments.reach` polled until it shows it.",
        "",
        *_table(("throughput", "IDs", "messages", "time", "rate"), rows),
        "",
    ]
    rows = []
    for key, label in (("freshness", "default consumer settings"), ("freshness_fast", "shortened waits")):
        if key not in ingest:
            continue
        fr = ingest[key]
        settings = ", ".join(f"`{k}={v}`" for k, v in fr.get("settings", {}).items())
        rows.append(
            (
                label + (f": {settings}" if settings else ""),
                fmt_count(fr["n"]),
                fmt_time(fr["median_s"]),
                fmt_time(fr["p99_s"]),
                fmt_time(fr.get("max_s")),
            )
        )
    if rows:
        out += [
            *_table(("freshness (produce → visible in a reach)", "samples", "p50", "p99", "max"), rows),
            "",
        ]
    return out


def memory_table(results: Results, charts: Sequence[str]) -> list[str]:
    memory = results.get("memory")
    if not isinstance(memory, dict) or not memory or "error" in memory:
        return [why_not_measured(memory), ""]
    rows = [
        (
            f"`{name}`",
            fmt_count(v["cardinality"]),
            f"{fmt_count(v['containers'])} ({fmt_count(v['bitset_containers'])}/{fmt_count(v['array_containers'])}/"
            f"{fmt_count(v['run_containers'])})",
            fmt_bytes(v["serialized_bytes"]),
            fmt_bytes(v["cached_bytes"]),
            fmt_ratio(v.get("x_serialized")),
            fmt_bytes(v["bitmap_only_bytes"]),
            fmt_bytes(v.get("bookkeeping_bytes")),
            fmt_bytes(v["cache_accounted_bytes"]),
        )
        for name, v in memory.items()
    ]
    total = results.get("memory_total", {})
    rows.append(
        ("**all together**", "", "", fmt_bytes(total.get("serialized_bytes")), fmt_bytes(total.get("cached_bytes")),
         fmt_ratio(total.get("x_serialized")), "", "", "")
    )  # fmt: skip
    return [
        "Measured in a child process with `PYTHONMALLOC=malloc` (every Python object and every CRoaring container "
        "goes through glibc malloc) as heap bytes in use (`mallinfo2`, after `gc.collect()` and `malloc_trim`) "
        "before and after a fresh client caches the segment whole from a `memory://` store; *bare "
        "`BitMap.deserialize`* is the same measurement for the bitmap alone, *bookkeeping* the difference.",
        "",
        *_table(
            (
                "segment",
                "members",
                "containers (bitmap/array/run)",
                "serialized",
                "cached (heap in use)",
                "× serialized",
                "bare `BitMap.deserialize`",
                "bookkeeping",
                "`cache.nbytes` accounts",
            ),
            rows,
        ),  # fmt: skip
        "",
        *_charts(charts, "memory"),
    ]


def derived_table() -> list[str]:
    return _table(("field", "formula"), [(f"`{name}`", formula) for name, formula in DERIVED.items()])


def _charts(charts: Sequence[str], *names: str) -> list[str]:
    out: list[str] = []
    for name in names:
        if f"{name}.png" in charts:
            out += [f"![{name}](charts/{name}.png)", ""]
    return out


def render(results: Results, charts: Sequence[str] = ()) -> str:
    """The markdown of ``RESULTS.md`` for derived results (``charts``: the PNG files made for them)."""
    lines: list[str] = []
    lines += header(results)
    lines += ["## Goals", "", *goals_table(results), ""]
    lines += ["## Environment", "", *environment_table(results), ""]
    lines += ["## How this is measured", "", *method_text(results)]
    lines += ["## Reach, engine only, hot", "", *engine_tables(results, charts)]
    lines += ["### Python sets", "", *sets_table(results)]
    lines += ["### Where the time goes (headline query)", "", *breakdown_table(results)]
    lines += ["### Cold: a fresh client, segments fetched from SQLite", "", *cold_table(results)]
    lines += ["### Scaling", "", *scaling_table(results, charts)]
    lines += ["### Fixed per-query overhead", "", *overhead_tables(results)]
    lines += ["### Cold start after a restart", "", *coldstart_table(results)]
    lines += ["## HTTP: reach and user lookups", "", *http_tables(results, charts)]
    lines += ["## Ingest and freshness", "", *ingest_tables(results)]
    lines += ["## Memory per cached segment", "", *memory_table(results, charts)]
    lines += ["## Scale model", "", *scale_tables(results)]
    lines += ["## Derived figures", "", *derived_table()]
    return "\n".join(lines) + "\n"


def write(raw: Results, out: Path, *, charts: bool = True, log: Log = print) -> Path:
    """Derive, then write ``results.json``, the charts and ``RESULTS.md`` into ``out``; returns the latter."""
    results = derive(raw)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    made: list[str] = []
    if charts:
        from . import plots

        made = plots.draw(results, out / "charts", log)
    path = out / "RESULTS.md"
    path.write_text(render(results, made))
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.report DIR/results.json", file=sys.stderr)
        return 2
    source = Path(argv[0])
    path = write(json.loads(source.read_text()), source.parent)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
