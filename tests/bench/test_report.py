"""``RESULTS.md`` tells only what ``results.json`` holds (no benchmark runs here: cheap, no timing).

The template is the recorded run, ``bench/results.json``, without its derived
fields. Every number of it is replaced by a distinctive random one (independent
draws), derived again and rendered. Then: every number handed to a formatter
while rendering is a value of the derived results (nothing is computed in
``render``); every figure of the markdown is one that the derived results
account for (``tests/bench/figures.py``: no figure printed another way); and
a figure that stays the same in every draw is fixed text unless it comes from
a string of the results or is a goal's limit (the goals' definition, recorded
with every run).
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.goals import GOALS, headline
from tests.bench.figures import figures, numbers, string_figures, unaccounted

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _strip(node: Any) -> Any:
    """``node`` without the fields ``report.derive`` adds."""
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in report.DERIVED}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _scramble(node: Any, rng: random.Random) -> Any:
    """``node`` with every number replaced by a random one of about the same size (never zero)."""
    if isinstance(node, dict):
        return {k: _scramble(v, rng) for k, v in node.items()}
    if isinstance(node, list):
        return [_scramble(v, rng) for v in node]
    if isinstance(node, bool) or not isinstance(node, int | float):
        return node
    if isinstance(node, int):
        return round(node * rng.uniform(0.5, 2.0)) + rng.randrange(1, 100)
    return node * rng.uniform(0.5, 2.0) if node else rng.uniform(1e-4, 1e-3)


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads((BENCH / "results.json").read_text())
    return parsed


@pytest.fixture(scope="module")
def template(recorded: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = _strip(recorded)
    return raw


def _render(raw: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    results = report.derive(raw)
    return report.render(
        results, ["headline.png", "queries.png", "scaling.png", "memory.png", "http.png"]
    ), results


def test_every_number_the_report_prints_is_a_value_of_its_results(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    results = report.derive(_scramble(template, random.Random(4)))
    values = set(numbers(results))
    printed: list[float] = []

    def checked(fmt: Callable[[float | None], str]) -> Callable[[float | None], str]:
        def call(value: float | None) -> str:
            if value is not None:
                assert value in values, f"{fmt.__name__}({value!r}): a number computed while rendering"
                printed.append(value)
            return fmt(value)

        return call

    for fmt in report.FORMATTERS:
        monkeypatch.setattr(report, fmt.__name__, checked(fmt))
    for unit, fmt in report.UNIT_FORMATS.items():
        monkeypatch.setitem(report.UNIT_FORMATS, unit, checked(fmt))
    report.render(results)
    print(f"{len(printed)} numbers printed, every one a value of the results")
    assert len(printed) > 300


def test_every_figure_of_the_report_is_accounted_for_by_its_results(template: dict[str, Any]) -> None:
    for seed in (1, 2):
        markdown, results = _render(_scramble(template, random.Random(seed)))
        found = figures(markdown)
        print(f"seed {seed}: {len(found)} figures in {len(markdown.splitlines())} lines")
        assert len(found) > 300, "the report lost its tables"
        assert unaccounted(markdown, results) == []


def test_no_figure_is_fixed_text(template: dict[str, Any]) -> None:
    draws = [_render(_scramble(template, random.Random(seed))) for seed in (1, 2, 3)]
    columns = [figures(markdown) for markdown, _ in draws]
    assert len({len(c) for c in columns}) == 1, "the report's layout should not depend on the values"
    limits = {f for g in GOALS for f in figures(report.UNIT_FORMATS[g.unit](g.limit))}
    allowed = string_figures(draws[0][1]) | limits
    fixed = [
        (i, xs[0])
        for i, xs in enumerate(zip(*columns, strict=True))
        if len(set(xs)) == 1 and xs[0] not in allowed
    ]
    assert fixed == []


def test_derive_adds_documented_fields_and_changes_no_recorded_value(template: dict[str, Any]) -> None:
    raw = _scramble(template, random.Random(3))
    derived = report.derive(raw)
    assert _strip(derived) == raw, "derive changed a recorded value"
    assert report.derive(derived) == derived, "derive is not idempotent"
    head = headline(derived)
    assert head is not None
    floor_s = head["floor_bytes"] / derived["bandwidth"]["dram_bytes_per_s"]
    assert head["floor_s"] == pytest.approx(floor_s)
    engine = head["timings"]["engine"]["median_s"]
    for method, t in head["timings"].items():
        assert t["x_floor"] == pytest.approx(t["median_s"] / floor_s)
        if method != "engine":
            assert t["x_engine"] == pytest.approx(t["median_s"] / engine)
    memory = derived["memory"]
    assert derived["memory_total"]["cached_bytes"] == sum(row["cached_bytes"] for row in memory.values())
    assert [g["key"] for g in derived["goals"]] == [g.key for g in GOALS]
    for goal in derived["goals"]:
        # a goal the recorded run could not measure says why (a recorded skip), never "section not run"
        assert goal["measured"] is not None or goal["note"].startswith("not measured: "), goal
        if goal["measured"] is None:
            continue
        assert goal["met"] == (
            goal["measured"] <= goal["limit"] if goal["at_most"] else goal["measured"] >= goal["limit"]
        )


def test_a_goal_is_met_exactly_when_its_measured_value_is_within_the_limit(template: dict[str, Any]) -> None:
    raw = copy.deepcopy(template)
    head = headline(raw)
    assert head is not None
    floor_s = head["floor_bytes"] / raw["bandwidth"]["dram_bytes_per_s"]
    limit = next(g.limit for g in GOALS if g.key == "headline_floor")
    verdicts = []
    for factor in (0.5, 2.0):
        head["timings"]["engine"]["median_s"] = factor * limit * floor_s
        goal = next(g for g in report.derive(raw)["goals"] if g["key"] == "headline_floor")
        verdicts.append(goal["met"])
    assert verdicts == [True, False]


def test_sections_that_did_not_run_are_reported_as_not_measured(template: dict[str, Any]) -> None:
    raw = {k: template[k] for k in ("environment", "bandwidth", "config", "headline")}
    raw["ingest"] = {"skipped": "no broker"}
    raw["http"] = {"error": "RuntimeError: no server"}
    markdown, results = _render(raw)
    assert "not measured: no broker" in markdown
    assert "failed: RuntimeError: no server" in markdown
    assert all(g["met"] is None for g in results["goals"])
    assert unaccounted(markdown, results) == []


def test_the_recorded_report_is_rendered_from_the_recorded_results(recorded: dict[str, Any]) -> None:
    assert report.derive(recorded) == recorded, (
        "bench/results.json lacks derived fields: run python -m bench.report"
    )
    charts = sorted(p.name for p in (BENCH / "charts").glob("*.png"))
    assert (BENCH / "RESULTS.md").read_text() == report.render(recorded, charts), (
        "bench/RESULTS.md is not what python -m bench.report bench/results.json renders"
    )
    assert unaccounted((BENCH / "RESULTS.md").read_text(), recorded) == []
