"""Operator tools: verify/fix, garbage collection, snapshot/restore, stats."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import segments
from segments import admin


@pytest.fixture
def segs(store_url: str) -> Iterator[segments.Segments]:
    s = segments.connect(store_url)
    yield s
    s.close()


def test_verify_reports_and_fixes_drift(segs: segments.Segments) -> None:
    segs.replace("a", range(0, 200000, 3))
    segs.replace("b", [1, 2])
    assert all(r.ok for r in admin.verify(segs))
    # simulate drift: metadata claims a wrong cardinality
    record = segs.store.get_many(segs.sets.meta, ["a"])[0]
    assert record is not None
    bins = dict(record.bins)
    bins["card"] = 5
    segs.store.put(segs.sets.meta, "a", bins)
    reports = {r.name: r for r in admin.verify(segs)}
    assert not reports["a"].ok and "cardinality is 5 in metadata" in reports["a"].problems[0]
    assert reports["b"].ok
    admin.verify(segs, fix=True)
    assert all(r.ok for r in admin.verify(segs))
    assert segs.info("a").cardinality == len(range(0, 200000, 3))


def test_gc_removes_only_old_unreferenced_records(segs: segments.Segments) -> None:
    segs.replace("a", [1, 70000])
    segs.store.put(segs.sets.shard, "a/0/dead", {"bm": b"", "card": 0, "at": 0})
    segs.store.put(segs.sets.shard, "a/0/inflight", {"bm": b"", "card": 0, "at": 2**62})
    counts = admin.collect_garbage(segs)
    assert counts[segs.sets.shard] == 1
    keys = {k for k, _ in segs.store.scan(segs.sets.shard)}
    assert "a/0/dead" not in keys and "a/0/inflight" in keys
    assert sorted(segs.evaluate("a")) == [1, 70000]


def test_snapshot_restore_round_trip(store_url: str, tmp_path: Path) -> None:
    with segments.connect(store_url) as src:
        src.replace("a", range(0, 300000, 7))
        src.replace("b", [])
        buf = io.StringIO()
        assert admin.write_snapshot(src, buf) == 2
    with segments.connect(f"sqlite:///{tmp_path}/copy.db") as dst:
        assert admin.restore_snapshot(dst, io.StringIO(buf.getvalue())) == 2
        assert dst.evaluate("a") == segments.connect(store_url).evaluate("a")
        assert dst.info("b").cardinality == 0


def test_damaged_snapshot_changes_nothing(tmp_path: Path) -> None:
    with segments.connect(f"sqlite:///{tmp_path}/s.db") as s:
        s.replace("a", [1])
        buf = io.StringIO()
        admin.write_snapshot(s, buf)
        lines = buf.getvalue().splitlines()
        item = json.loads(lines[1])
        item["cardinality"] = 2
        bad = "\n".join([lines[0], json.dumps(item)]) + "\n"
        with pytest.raises(segments.InvalidInput):
            admin.restore_snapshot(s, io.StringIO(bad))
        with pytest.raises(segments.InvalidInput):
            admin.restore_snapshot(s, io.StringIO("not json\n"))
        assert s.info("a").version == 1


def test_stats(segs: segments.Segments) -> None:
    segs.replace("a", [1, 70000])
    out = admin.stats(segs)
    assert out["segments"] == 1 and out["shard_records"] == 2 and out["total_memberships"] == 2


def test_admin_cli(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    with segments.connect(url) as s:
        s.replace("a", [1, 2, 3])
    snap = tmp_path / "snap.jsonl"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "segments", "admin", *args], capture_output=True,
                              text=True, timeout=120)

    out = run("verify", "--store", url)
    assert out.returncode == 0 and json.loads(out.stdout.splitlines()[0])["ok"] is True
    assert run("snapshot", "--store", url, str(snap)).returncode == 0
    url2 = f"sqlite:///{tmp_path}/t.db"
    assert run("restore", "--store", url2, str(snap)).returncode == 0
    with segments.connect(url2) as t:
        assert sorted(t.evaluate("a")) == [1, 2, 3]
    missing = run("restore", "--store", url2, str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "No such file" in missing.stderr
    assert json.loads(run("stats", "--store", url).stdout)["segments"] == 1
