"""The goals a run is judged against: one row each, the limit and how the run's results measure it.

A goal's ``text`` states what is asked without a figure: ``{limit}`` stands
for the limit, formatted in the goal's unit. ``measure`` reads the measured
value from the results after ``report.derive`` added the derived fields, and
returns it with a note naming what it refers to (``""`` when obvious); the
value is ``None`` when the run did not measure it, the note then says why.
``report.derive`` records every goal with its limit, measured value and
verdict in ``results.json``.

To add a goal, add a row to ``GOALS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Results = dict[str, Any]
Measured = tuple[float | None, str]
#: what the limit and the measured value are: seconds, a ratio, IDs per second, or a count
Unit = Literal["s", "ratio", "ids_per_s", "count"]


@dataclass(frozen=True)
class Goal:
    key: str
    text: str
    limit: float
    unit: Unit
    at_most: bool  #: met when measured <= limit (else when measured >= limit)
    measure: Callable[[Results], Measured]

    def evaluate(self, results: Results) -> dict[str, Any]:
        value, note = self.measure(results)
        met = None if value is None else (value <= self.limit if self.at_most else value >= self.limit)
        return {
            "key": self.key,
            "text": self.text,
            "limit": self.limit,
            "unit": self.unit,
            "at_most": self.at_most,
            "measured": value,
            "note": note,
            "met": met,
        }


def why_not_measured(section: object) -> str:
    """Why a section of the results holds no measurement."""
    if section is None:
        return "not measured (section not run)"
    if isinstance(section, dict):
        if isinstance(section.get("skipped"), str):
            return f"not measured: {section['skipped']}"
        if "error" in section:
            return f"failed: {section['error']}"
    return "not measured"


def headline(results: Results) -> dict[str, Any] | None:
    """The headline query's row of the engine section (``results["headline"]`` is its text), if it ran."""
    engine = results.get("engine")
    if not isinstance(engine, dict):
        return None
    return next((q for q in engine.get("queries", []) if q["text"] == results.get("headline")), None)


def _headline_field(method: str, field: str) -> Callable[[Results], Measured]:
    def measure(results: Results) -> Measured:
        head = headline(results)
        if head is None:
            return None, why_not_measured(results.get("engine"))
        if method not in head["timings"]:
            return None, f"not measured: {results['engine'].get('skipped', {}).get(method, '')}"
        return float(head["timings"][method][field]), ""

    return measure


def _section_field(section: str, key: str, *path: str) -> Callable[[Results], Measured]:
    def measure(results: Results) -> Measured:
        part = results.get(section)
        if not isinstance(part, dict) or key not in part:
            return None, why_not_measured(part)
        value = part[key]
        for name in path:
            value = value[name]
        return float(value), ""

    return measure


def _memory_total(results: Results) -> Measured:
    total = results.get("memory_total")
    if not isinstance(total, dict):
        return None, why_not_measured(results.get("memory"))
    return float(total["x_serialized"]), ""


def _memory_worst(results: Results) -> Measured:
    memory = results.get("memory")
    if not isinstance(memory, dict) or not memory or "error" in memory:
        return None, why_not_measured(memory)
    name = max(memory, key=lambda n: memory[n]["x_serialized"])
    return float(memory[name]["x_serialized"]), f"`{name}`"


def _worst_query(results: Results) -> Measured:
    engine = results.get("engine")
    if not isinstance(engine, dict) or not engine.get("queries"):
        return None, why_not_measured(engine)
    worst = max(engine["queries"], key=lambda q: q["timings"]["engine"].get("x_floor") or 0.0)
    return float(worst["timings"]["engine"]["x_floor"]), f"`{worst['text']}`"


def _tiny_overhead(method: str) -> Callable[[Results], Measured]:
    def measure(results: Results) -> Measured:
        part = (results.get("overhead") or {}).get("tiny") if isinstance(results.get("overhead"), dict) else None
        if not isinstance(part, dict) or not part.get("queries"):
            return None, why_not_measured(results.get("overhead"))
        query = part["queries"][0]
        return float(query["timings"][method]["overhead_s"]), f"`{query['text']}`"

    return measure


def _realdata(results: Results) -> Measured:
    overhead = results.get("overhead")
    part = overhead.get("realdata") if isinstance(overhead, dict) else None
    if not isinstance(part, dict) or "median_x_pyroaring" not in part:
        return None, why_not_measured(part if part is not None else overhead)
    return float(part["median_x_pyroaring"]), "median over every query of every data set"


def _path(*path: str, note: str = "") -> Callable[[Results], Measured]:
    """The value at ``path`` of the results (``None`` with the reason when a part is missing)."""

    def measure(results: Results) -> Measured:
        node: Any = results
        for i, name in enumerate(path):
            if not isinstance(node, dict) or name not in node:
                return None, why_not_measured(node if i else None)
            node = node[name]
        return float(node), note

    return measure


def _scale_points(results: Results) -> Measured:
    scale = results.get("scale")
    if not isinstance(scale, dict) or "points" not in scale:
        return None, why_not_measured(scale)
    return float(len(scale["points"])), "universe sizes measured; the model is in its section"


GOALS: tuple[Goal, ...] = (
    Goal(
        "headline_floor",
        "Hot reach of the headline query, engine (`Segments.reach`, sqlite store): at most {limit} the measured floor",
        1.5, "ratio", True, _headline_field("engine", "x_floor"),
    ),
    Goal(
        "ahead_of_chdb",
        "… chDB takes at least {limit} the engine's time on it (same data, same rounds)",
        2.0, "ratio", False, _headline_field("chDB", "x_engine"),
    ),
    Goal(
        "ahead_of_redis",
        "… Redis takes at least {limit} the engine's time on it",
        2.0, "ratio", False, _headline_field("Redis", "x_engine"),
    ),
    Goal(
        "http_p50",
        "The same over HTTP (`POST /v1/reach`, keep-alive client process, one connection): p50 at most {limit}",
        5e-3, "s", True, _section_field("http", "hot", "latency", "median_s"),
    ),
    Goal("http_p99", "… p99 at most {limit}", 15e-3, "s", True, _section_field("http", "hot", "latency", "p99_s")),
    Goal(
        "queries_floor",
        "Every query of the benchmark's set, hot (`Segments.reach`, sqlite store): at most {limit} its floor "
        "(measured: the worst)",
        1.5, "ratio", True, _worst_query,
    ),
    Goal(
        "overhead_memory",
        "Fixed per-query overhead on tiny segments, `memory://`, metadata read per query: at most {limit} over "
        "pyroaring doing the same", 10e-6, "s", True, _tiny_overhead("memory://, query_staleness=0"),
    ),
    Goal(
        "overhead_memory_stale",
        "… `memory://`, bounded-staleness metadata (`query_staleness`): at most {limit}",
        10e-6, "s", True, _tiny_overhead("memory://, query_staleness=1"),
    ),
    Goal(
        "overhead_sqlite",
        "… sqlite, metadata read per query: at most {limit}",
        20e-6, "s", True, _tiny_overhead("sqlite, query_staleness=0"),
    ),
    Goal(
        "overhead_sqlite_stale",
        "… sqlite, bounded-staleness metadata: at most {limit}",
        20e-6, "s", True, _tiny_overhead("sqlite, query_staleness=1"),
    ),
    Goal(
        "realdata",
        "CRoaring's real data sets, 4-term reaches: engine at most {limit} pyroaring doing the same",
        3.0, "ratio", True, _realdata,
    ),
    Goal(
        "http_reach_budget",
        "HTTP hot reach p50 at most {limit} (engine time + the budgeted bare Starlette round trips, same client, "
        "same run)", 1.0, "ratio", True, _path("http", "budgets", "reach", "x_budget"),
    ),
    Goal(
        "http_lookup_budget",
        "… user lookups likewise (engine: in-process `segments_of`): at most {limit}",
        1.0, "ratio", True, _path("http", "budgets", "lookup", "x_budget"),
    ),
    Goal(
        "http_match_budget",
        "… per-user checks likewise (`POST /v1/users/{{id}}/match`, engine: `Segments.matches`): at most {limit}",
        1.0, "ratio", True, _path("http", "budgets", "match", "x_budget"),
    ),
    Goal(
        "membership_p99",
        "User lookup `GET /v1/users/{{id}}/segments` over HTTP, sqlite: p99 at most {limit}",
        1e-3, "s", True, _section_field("http", "membership", "latency", "p99_s"),
    ),
    Goal(
        "lookup_http_p99_aerospike",
        "… Aerospike (test server, or the real one of `SEGMENTS_TEST_AEROSPIKE`): p99 at most {limit}",
        1e-3, "s", True, _path("http", "aerospike", "membership", "latency", "p99_s"),
    ),
    Goal(
        "lookup_p99_sqlite",
        "User lookup in this process (`segments_of`, default staleness), sqlite: p99 at most {limit}",
        0.3e-3, "s", True, _path("http", "membership_engine", "lookup_staleness=0.25", "p99_s"),
    ),
    Goal(
        "lookup_p99_aerospike",
        "… Aerospike: p99 at most {limit}",
        0.3e-3, "s", True, _path("http", "aerospike", "engine", "lookup_staleness=0.25", "p99_s"),
    ),
    Goal(
        "ingest_binary",
        "Ingest, binary messages: at least {limit} per consumer process",
        20e6, "ids_per_s", False, _section_field("ingest", "binary", "ids_per_s"),
    ),
    Goal(
        "freshness_p99",
        "Freshness, default settings: p99 from produce to visible in a reach at most {limit}",
        0.1, "s", True, _section_field("ingest", "freshness", "p99_s"),
    ),
    Goal(
        "workers",
        "`--workers N` hot reach throughput at least {limit} N × one worker's (same client, concurrent connections)",
        0.9, "ratio", False, _path("http", "hot_c8_workers", "x_one_worker_each"),
    ),
    Goal(
        "coldstart_sqlite",
        "Cold start, sqlite: first reach after a restart (5 dense segments) at most {limit} one batch read of "
        "its records", 2.0, "ratio", True, _path("coldstart", "sqlite", "x_batch_read"),
    ),
    Goal(
        "coldstart_aerospike",
        "… Aerospike: at most {limit}",
        2.0, "ratio", True, _path("coldstart", "aerospike", "x_batch_read"),
    ),
    Goal(
        "scale_points",
        "Scale model: measured at {limit} universe sizes at least",
        4, "count", False, _scale_points,
    ),
    Goal(
        "memory_total",
        "Cached memory of all segments together: at most {limit} their serialized size",
        1.2, "ratio", True, _memory_total,
    ),
    Goal(
        "memory_each",
        "… and of every segment on its own: at most {limit} (measured: the largest ratio)",
        1.2, "ratio", True, _memory_worst,
    ),
)  # fmt: skip
