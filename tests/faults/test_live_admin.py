"""Operator tools on a live store: verify, verify --fix, GC and restore never lose accepted data.

A writer keeps adding to a segment (each write rewrites many shard records and
deletes the ones it replaced) while ``admin verify`` / ``--fix`` / GC run in a
loop against the same store from another connection, and once more as the
``segments admin`` command. At the end the segment must equal the model of
every acknowledged write, and no check may have reported damage that is not
there. Runs on SQLite and on Aerospike (the test server, or a real one with
``SEGMENTS_TEST_AEROSPIKE``).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroaring import BitMap

import segments
from segments import admin

SEED_IDS = range(0, 6_600_000, 33)  # 200,000 members over 101 shards
RUN_SECONDS = 6.0


@pytest.fixture(params=["sqlite", "aerospike"])
def live_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/live.db"
    target = request.getfixturevalue("aerospike_target")
    from tests.support.aerospike_fixture import aerospike_url

    return aerospike_url(target, f"t{uuid.uuid4().hex[:10]}_")


class Writer(threading.Thread):
    """Adds random IDs to ``live`` until stopped; ``model`` holds every acknowledged member."""

    def __init__(self, url: str, *, spread: int) -> None:
        super().__init__(daemon=True)
        self.segs = segments.connect(url)
        self.model = BitMap(SEED_IDS)
        self.spread = spread
        self.stop = threading.Event()
        self.writes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        try:
            while not self.stop.is_set():
                ids = BitMap(rng.randrange(0, 6_600_000) for _ in range(self.spread))
                self.segs.add("live", ids)
                self.model |= ids
                self.writes += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


@pytest.fixture
def writer(live_url: str) -> Iterator[Writer]:
    with segments.connect(live_url) as segs:
        segs.replace("live", BitMap(SEED_IDS))
    w = Writer(live_url, spread=300)
    yield w
    w.stop.set()
    if w.is_alive():
        w.join(30)
    w.segs.close()


def _admin_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segments", "admin", "verify", "--quiet", "--store", url, *args],
        capture_output=True, text=True, timeout=120,
    )


def _final_check(url: str, model: BitMap) -> None:
    with segments.connect(url) as segs:
        stored = segs.evaluate("live")
        assert all(r.ok for r in admin.verify(segs)), "the segment is damaged after the run"
    lost = len(model - stored)
    print(f"members: model {len(model):,}, stored {len(stored):,}, lost {lost:,}")
    assert stored == model


def test_verify_fix_during_writes_loses_nothing_and_reports_no_false_damage(
    live_url: str, writer: Writer
) -> None:
    checker = segments.connect(live_url)
    runs = false_reports = fixes = notes = 0
    writer.start()
    deadline = time.monotonic() + RUN_SECONDS
    try:
        while time.monotonic() < deadline:
            for report in admin.verify(checker, fix=True):
                runs += 1
                false_reports += not report.ok
                fixes += report.fixed
                notes += bool(report.note)
        cli = _admin_cli(live_url, "--fix")
        plain = _admin_cli(live_url)
    finally:
        writer.stop.set()
        writer.join(30)
        checker.close()
    assert writer.error is None, writer.error
    print(f"{writer.writes} writes, {runs} verify --fix checks of the live segment: "
          f"{false_reports} reported damage, {fixes} 'repairs', {notes} skipped as changing")
    assert false_reports == 0 and fixes == 0
    for proc in (cli, plain):
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = [json.loads(line) for line in proc.stdout.splitlines()]
        assert all(line["ok"] for line in lines), lines
    _final_check(live_url, writer.model)


def test_gc_during_writes_keeps_every_live_record(live_url: str, writer: Writer) -> None:
    collector = segments.connect(live_url)
    time.sleep(1.2)  # the seed's shard records are now older than the grace period
    writer.spread = 3  # writes touch a few shards: the other ~98 are carried over, old enough to collect
    rounds = collected = 0
    writer.start()
    deadline = time.monotonic() + RUN_SECONDS
    try:
        while time.monotonic() < deadline:
            counts = admin.collect_garbage(collector, grace_ms=1000)
            rounds += 1
            collected += sum(counts.values())
        cli = _admin_cli(live_url, "--gc", "--gc-grace", "1")
    finally:
        writer.stop.set()
        writer.join(30)
        collector.close()
    assert writer.error is None, writer.error
    print(f"{writer.writes} writes, {rounds} GC rounds collected {collected} records "
          "(superseded ones the writer's own cleanup had not reached)")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    _final_check(live_url, writer.model)


def test_restore_writes_nothing_when_any_line_is_bad(live_url: str, tmp_path: Path) -> None:
    with segments.connect(live_url) as segs:
        segs.replace("a", [1, 2, 3])
        segs.replace("b", [4])
        good = tmp_path / "good.jsonl"
        with good.open("w") as out:
            admin.write_snapshot(segs, out)
    header, *lines = good.read_text().splitlines()
    replaced = [json.loads(line) for line in lines]
    for item in replaced:  # the snapshot now holds other members than the store
        item["roaring"] = __import__("base64").b64encode(segments.bitmap.serialize(BitMap([9, 10]))).decode()
        item["cardinality"] = 2
    bad_line = dict(replaced[0], segment="not a valid name!")
    for bad in (bad_line, {"segment": "c"}, "not json"):
        path = tmp_path / "bad.jsonl"
        rows = [json.dumps(r) for r in replaced] + [bad if isinstance(bad, str) else json.dumps(bad)]
        path.write_text("\n".join([header, *rows]) + "\n")
        proc = subprocess.run(
            [sys.executable, "-m", "segments", "admin", "restore", "--store", live_url, str(path)],
            capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode != 0
        assert f"line {len(rows) + 1}" in proc.stderr, proc.stderr
        with segments.connect(live_url) as segs:
            assert sorted(segs.evaluate("a")) == [1, 2, 3] and sorted(segs.evaluate("b")) == [4]
            assert "c" not in segs.names()


def test_closed_sqlite_store_is_unavailable_not_corrupt(tmp_path: Path) -> None:
    segs = segments.connect(f"sqlite:///{tmp_path}/closing.db")
    segs.replace("a", [1])
    # what a request thread sees when shutdown closed the connections under it
    for conn in list(segs.store._all):  # type: ignore[attr-defined]
        conn.close()
    with pytest.raises(segments.StorageUnavailable) as info:
        segs.store.get_many(segs.sets.meta, ["a"])
    assert info.value.fault is segments.errors.Fault.TRANSIENT
    segs.close()
    with pytest.raises(segments.StorageUnavailable):
        segs.reach("a")
