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
    results["goals"] = [goal.evaluate(results) for goal in GOALS]
    return results


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
        "",
    ]


def _methods(timings: dict[str, Any]) -> list[str]:
    order = [
        "engine",
        "engine, no store read",
        "engine (memory://)",
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
    ("hot", "hot reach, one connection"),
    ("hot_c8", "hot reach, concurrent connections"),
    ("hot_c8_workers", "hot reach, concurrent connections, several workers"),
    ("membership", "user lookup, the API's default staleness, one connection"),
    ("membership_stale", "user lookup, `--lookup-staleness` set, one connection"),
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
    for label, t in http.get("membership_engine", {}).items():
        rows.append(
            (f"user lookup in-process (`Segments.segments_of`, `{label}`, no HTTP)", "", fmt_time(t["median_s"]),
             fmt_time(t["p99_s"]), "")
        )  # fmt: skip
    out = [
        f"Server: {http.get('server', '')}; client: {http.get('client', '')}.",
        "",
        *_table(("measurement", "requests", "p50", "p99", "throughput"), rows),
        "",
    ]
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
    lines += ["## HTTP: reach and user lookups", "", *http_tables(results, charts)]
    lines += ["## Ingest and freshness", "", *ingest_tables(results)]
    lines += ["## Memory per cached segment", "", *memory_table(results, charts)]
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
