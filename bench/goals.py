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
#: what the limit and the measured value are: seconds, a ratio, or IDs per second
Unit = Literal["s", "ratio", "ids_per_s"]


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
        "membership_p99",
        "User lookup `GET /v1/users/{{id}}/segments` over HTTP: p99 at most {limit}",
        2e-3, "s", True, _section_field("http", "membership", "latency", "p99_s"),
    ),
    Goal(
        "ingest_binary",
        "Ingest, binary messages: at least {limit} per consumer process",
        1e6, "ids_per_s", False, _section_field("ingest", "binary", "ids_per_s"),
    ),
    Goal(
        "freshness_p99",
        "Freshness, default settings: p99 from produce to visible in a reach at most {limit}",
        1.0, "s", True, _section_field("ingest", "freshness", "p99_s"),
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
