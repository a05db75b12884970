"""The benchmark harness at a tiny scale (200k users): every method gives every query the same answer.

Runs ``python -m bench --smoke`` (all sections, a few repetitions, no charts)
in a subprocess and checks what it recorded. Nothing here looks at a time:
the point is that the harness runs end to end, that the engine, naive
pyroaring, Python sets, chDB and Redis (when installed), the HTTP API and the
ingest pipeline all agree, and that the report it wrote states only figures
its ``results.json`` holds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.expressions import QUERIES, set_count
from tests.bench.figures import unaccounted

ROOT = Path(__file__).resolve().parents[2]
USERS = 200_000


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--users", str(USERS), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, f"python -m bench --smoke failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return out


@pytest.fixture(scope="module")
def results(out: Path) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads((out / "results.json").read_text())
    return parsed


def _oracle(users: int, seed: int) -> dict[str, int]:
    """Every query's reach from Python sets over the data set the harness used."""
    from bench import datasets

    ds = datasets.load(users, seed, log=lambda _: None)
    sets = {name: set(ds.array(name).tolist()) for name in ds.bitmaps}
    return {q.key: set_count(q.tree, sets) for q in QUERIES}


@pytest.mark.timeout(900)
def test_every_engine_method_agrees_with_python_sets(results: dict[str, Any]) -> None:
    assert results["failures"] == []
    oracle = _oracle(results["dataset"]["users"], results["dataset"]["seed"])
    engine = results["engine"]
    assert [q["key"] for q in engine["queries"]] == [q.key for q in QUERIES]
    for query in engine["queries"]:
        answers = {method: timing["answer"] for method, timing in query["timings"].items()}
        assert answers, query["key"]
        assert set(answers.values()) == {oracle[query["key"]]}, (query["text"], answers, oracle[query["key"]])


@pytest.mark.timeout(900)
def test_every_expected_method_was_measured(results: dict[str, Any]) -> None:
    methods = set(results["engine"]["queries"][0]["timings"])
    assert {"engine", "engine, no store read", "engine (memory://)", "pyroaring (naive)"} <= methods
    skipped = results["engine"]["skipped"]
    for system in ("chDB", "Redis"):
        assert (system in methods) != (system in skipped), (system, skipped)
    if shutil.which("redis-server"):
        assert "Redis" in methods, skipped
    try:
        import chdb  # noqa: F401
    except ImportError:
        pass
    else:
        assert "chDB" in methods, skipped


@pytest.mark.timeout(900)
def test_sets_scaling_and_cold_agree(results: dict[str, Any]) -> None:
    small = _oracle(results["sets"]["users"], results["dataset"]["seed"])
    for query in results["sets"]["queries"]:
        assert {t["answer"] for t in query["timings"].values()} == {small[query["key"]]}
        assert "set" in query["timings"]
    for point in results["scaling"]["points"]:
        expected = _oracle(point["users"], results["dataset"]["seed"])
        for query in point["queries"]:
            assert {t["answer"] for t in query["timings"].values()} == {expected[query["key"]]}
    oracle = _oracle(results["dataset"]["users"], results["dataset"]["seed"])
    for key, timings in results["cold"].items():
        assert {t["answer"] for t in timings.values()} == {oracle[key]}


@pytest.mark.timeout(900)
def test_http_ingest_and_memory_sections_ran(results: dict[str, Any]) -> None:
    http = results["http"]
    assert "error" not in http, http
    assert http["hot"]["requests"] > 0 and http["membership"]["requests"] > 0
    ingest = results["ingest"]
    assert "error" not in ingest, ingest
    if "skipped" not in ingest:
        assert ingest["binary"]["counted_ids"] > 0 and ingest["json"]["counted_ids"] > 0
        assert ingest["freshness"]["n"] > 0
    memory = results["memory"]
    assert "error" not in memory, memory
    for name, row in memory.items():
        assert row["cardinality"] == results["dataset"]["segments"][name]["cardinality"]


@pytest.mark.timeout(900)
def test_the_report_states_only_figures_of_its_results(out: Path, results: dict[str, Any]) -> None:
    markdown = (out / "RESULTS.md").read_text()
    assert "## Goals" in markdown and results["goals"]
    assert unaccounted(markdown, results) == []
