"""The benchmark's own arithmetic and loaders, on small made-up inputs (nothing is timed here).

* ``report.scale_model`` fits ``a + b × users in millions`` by least squares and evaluates it at the
  targets: on points lying exactly on a line it gives that line back, and the values at the targets.
* ``overhead_bench.load_realdata`` reads CRoaring's ``realdata`` layout (a folder of ``.txt`` files of
  comma-separated integers per data set, or a ``.zip`` of them), and ``realdata`` measures the engine
  against pyroaring on it with every answer checked; without a folder it says how to get one.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from bench import overhead_bench, report


def _point(users: int, query_s: float, segment_bytes: float, replace_s: float) -> dict[str, object]:
    timing = {"timings": {"engine": {"median_s": query_s}}, "text": "s10 & s30"}
    return {
        "users": users,
        "queries": {"q5": timing},
        "cache_bytes": {"s60": segment_bytes * 2, "s1": 0.0},
        "ingest": {"replace_s": replace_s, "replace_ids": 1, "add_s": 1.0, "add_ids": 1},
    }


def test_the_scale_model_gives_back_a_line_and_its_values_at_the_targets() -> None:
    points = [_point(u, 1e-4 + 2e-6 * u / 1e6, 1000 + 50 * u / 1e6, 0.01 * u / 1e6) for u in (5e6, 10e6, 50e6, 100e6)]
    scale = {
        "points": points,
        "targets": [1_000_000_000],
        "assumptions": {"segments": 10, "replication": 2, "replica_memory_bytes": 1 << 20},
    }
    model = report.scale_model(scale, http_p50_limit=5e-3)
    fit = model["fits"]["query_s[q5]"]
    assert fit["intercept"] == pytest.approx(1e-4) and fit["per_million"] == pytest.approx(2e-6)
    seg = model["fits"]["segment_bytes"]  # mean over the shapes: (2x + 0) / 2
    assert seg["intercept"] == pytest.approx(1000) and seg["per_million"] == pytest.approx(50)
    target = model["targets"][0]
    assert target["millions"] == 1000
    assert target["values"]["query_s[q5]"] == pytest.approx(1e-4 + 2e-6 * 1000)
    assert target["replica_bytes"] == pytest.approx(10 * (1000 + 50 * 1000))
    assert target["replicas_for_memory"] == -(-target["replica_bytes"] // (1 << 20))
    assert target["aerospike_nodes"] == -(-(2 * target["replica_bytes"]) // (1 << 20))
    limits = model["limits"]
    assert limits["memory_users"] == pytest.approx(((1 << 20) / 10 - 1000) / 50 * 1e6)
    assert limits["latency_users"] == pytest.approx((5e-3 - 1e-4) / 2e-6 * 1e6)


def _write(path: Path, ids: list[int]) -> None:
    path.write_text(",".join(map(str, ids)))


def test_realdata_is_read_in_croarings_layout_and_measured_with_checked_answers(tmp_path: Path) -> None:
    folder = tmp_path / "realdata"
    census = folder / "census_like"
    census.mkdir(parents=True)
    for i in range(6):
        _write(census / f"{i}.txt", list(range(i, 3000 + 40 * i, 3 + i)))
    (census / "README").write_text("not a bitmap")
    with zipfile.ZipFile(folder / "zipped.zip", "w") as archive:
        for i in range(5):
            archive.writestr(f"zipped/{i}.txt", ",".join(map(str, range(7 * i, 500_000, 97 + i))))
    loaded = overhead_bench.load_realdata(folder)
    assert sorted(loaded) == ["census_like", "zipped"]
    assert [len(b) for b in loaded["census_like"]] == [len(range(i, 3000 + 40 * i, 3 + i)) for i in range(6)]
    out = overhead_bench.realdata(folder, rounds=3, budget_s=0.5, log=lambda _: None)
    for name, part in out["sets"].items():
        bitmaps = loaded[name]
        assert part["queries"], name
        for q in part["queries"]:
            i = int(q["text"].split()[0].strip("(b"))
            a, b, c, d = bitmaps[i : i + 4]
            assert q["answer"] == len(((a | b) & c) - d), q["text"]
    print({n: [q["text"] for q in p["queries"]] for n, p in out["sets"].items()})


def test_without_realdata_the_benchmark_says_how_to_get_it(tmp_path: Path) -> None:
    for where in (None, tmp_path / "missing", tmp_path):
        skipped = overhead_bench.realdata(where, rounds=1, budget_s=0.1, log=lambda _: None)["skipped"]
        assert "benchmarks/realdata" in skipped and "--realdata" in skipped, skipped
