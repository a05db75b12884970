"""``kill -9`` of the consumer in the middle of 120k updates, restart: exactly the set model, right versions.

"Versions correct" means: a segment's version goes up by exactly one for each
write the consumer applies to it (one write per segment per consumer batch),
and a message replayed after the crash is never applied again, so it never
moves a version. Checked as: version after the restart = version found in
the store right after the kill + the writes the restarted consumer logged for
that segment, and every one of those writes is at a position above the
watermark the segment had recorded at the kill.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from pyroaring import BitMap

import segments
from tests.ingest.harness import (
    IngestProcess,
    Raw,
    SetModel,
    applied_writes,
    committed,
    new_topics,
    produce,
    store_contents,
    wait_caught_up,
    wait_until,
)
from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.timeout(170)

SEGMENTS = 150
MESSAGES = 120_000


def stream(rng: random.Random) -> list[Raw]:
    """Mostly small JSON deltas, some large binary deltas, some replaces in parts."""
    out: list[Raw] = []
    names = [f"seg_{i}" for i in range(SEGMENTS)]
    batch_no = 0
    while len(out) < MESSAGES:
        name = rng.choice(names)
        key = name.encode()
        roll = rng.random()
        if roll < 0.985:
            op = "add" if rng.random() < 0.7 else "remove"
            ids = [rng.randrange(0, 2_000_000) for _ in range(rng.randint(1, 8))]
            out.append((key, json.dumps({"op": op, "segment": name, "ids": ids}).encode(), []))
        elif roll < 0.997:
            op = "add" if rng.random() < 0.6 else "remove"
            start = rng.randrange(0, 1_900_000)
            run = BitMap(range(start, start + rng.randint(1000, 60_000), rng.randint(1, 4)))
            headers: list[tuple[str, str | bytes | None]] = [
                ("op", op.encode()), ("segment", key), ("encoding", b"roaring")
            ]
            out.append((key, run.serialize(), headers))
        else:
            batch_no += 1
            parts = rng.randint(1, 4)
            members = BitMap(rng.sample(range(0, 2_000_000), rng.randint(0, 5000)))
            pieces = [BitMap(x for x in members if x % parts == p) for p in range(parts)]
            order = list(range(parts))
            rng.shuffle(order)
            if parts > 1:
                order.append(order[0])  # a duplicate part
            for p in order:
                headers = [("op", b"replace"), ("segment", key), ("encoding", b"roaring"),
                           ("batch", f"b{batch_no}".encode()), ("part", str(p).encode()),
                           ("parts", str(parts).encode())]
                out.append((key, pieces[p].serialize(), headers))
    return out


def snapshot(store: str, sources: list[str]) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    with segments.connect(store) as segs:
        versions = {info.name: info.version for info in segs.infos()}
        marks = {
            (name, source): mark
            for source in sources
            for name, mark in segs.watermarks(sorted(versions), source).items()
        }
    return versions, marks


def test_kill_9_mid_stream_then_restart_equals_applying_every_message_once(
    broker: KafkaBroker, tmp_path: Path  # noqa: F811
) -> None:
    rng = random.Random(20240601)
    topics = new_topics(broker, partitions=4)
    messages = stream(rng)
    started = time.monotonic()
    delivered = produce(broker, topics.updates, messages)
    produced_in = time.monotonic() - started
    ends = delivered.ends()
    total = sum(ends.values())
    assert total == len(messages) >= 100_000
    per_segment = Counter(key for key, _, _ in messages)

    store = f"sqlite:///{tmp_path}/segments.db"
    first = IngestProcess(broker, topics, store, tmp_path / "first.log", extra=["--batch-max-messages", "3000"])
    # kill once some batches are committed and most of the stream is still ahead
    wait_until(
        lambda: sum(max(0, o) for o in committed(broker, topics.group, topics.updates, 4).values()) > total // 4,
        90, "a quarter of the stream committed", first,
    )
    time.sleep(rng.uniform(0.0, 0.4))  # land somewhere inside the next batch
    first.kill()
    at_kill = committed(broker, topics.group, topics.updates, 4)
    assert sum(max(0, o) for o in at_kill.values()) < total, "the consumer finished before the kill"
    sources = [f"{topics.updates}/{p}" for p in range(4)]
    versions_at_kill, marks_at_kill = snapshot(store, sources)

    second = IngestProcess(broker, topics, store, tmp_path / "second.log")
    resumed = time.monotonic()
    try:
        wait_caught_up(broker, topics, ends, second, timeout=120)
        caught_up_in = time.monotonic() - resumed
    finally:
        assert second.stop() == 0

    model = SetModel()
    model.apply_all(messages, delivered)
    contents = store_contents(store)
    assert contents.keys() == model.members.keys()
    for name, members in model.members.items():
        assert contents[name] == members, f"segment {name} differs from the model"

    writes = applied_writes(second.log())
    assert writes, "the restarted consumer applied nothing"
    replays = [w for w in writes if int(w["position"]) <= marks_at_kill.get((w["segment"], w["source"]), -1)]
    assert replays == [], "a message at or below a recorded watermark was applied again"
    writes_after = Counter(w["segment"] for w in writes)
    with segments.connect(store) as segs:
        infos = {info.name: info for info in segs.infos()}
    for name, info in infos.items():
        assert info.version == versions_at_kill.get(name, 0) + writes_after[name], name
        assert info.version <= per_segment[name.encode()]
        assert info.cardinality == len(model.members[name])
    # versions logged by the restarted consumer go up by one per write
    by_segment: dict[str, list[int]] = {}
    for w in writes:
        by_segment.setdefault(w["segment"], []).append(int(w["version"]))
    for name, logged in by_segment.items():
        start = versions_at_kill.get(name, 0)
        assert logged == list(range(start + 1, start + 1 + len(logged))), name

    remaining = total - sum(max(0, o) for o in at_kill.values())
    ahead = sum(1 for (_, source), mark in marks_at_kill.items() if mark >= max(0, at_kill[int(source.rsplit("/", 1)[1])]))
    replayed = [line for line in second.log().splitlines() if "replays skipped" in line][-1]
    print(f"\n[ingest crash test] produced {total} messages in {produced_in:.1f}s; after the kill the restarted "
          f"consumer (group join included) applied the remaining {remaining} in {caught_up_in:.1f}s; "
          f"{ahead} segment writes were ahead of the committed offsets at the kill; restart: {replayed[-60:]}")
