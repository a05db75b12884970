"""Ingest rate of one consumer process into SQLite, JSON deltas and binary deltas; prints IDs/s.

Nothing here asserts a speed (no test fails on wall-clock time); the store is
checked against the set model. ``SEGMENTS_TEST_HEAVY=1`` runs larger streams.
"""

from __future__ import annotations

import json
import os
import random
import re
from datetime import datetime
from pathlib import Path

import pytest
from pyroaring import BitMap

from tests.ingest.harness import (
    IngestProcess,
    Raw,
    SetModel,
    new_topics,
    produce,
    store_contents,
    wait_caught_up,
)
from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.timeout(170)
HEAVY = os.environ.get("SEGMENTS_TEST_HEAVY") == "1"
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def json_stream(rng: random.Random, messages: int, segments: int) -> list[Raw]:
    out: list[Raw] = []
    for _ in range(messages):
        name = f"j{rng.randrange(segments)}"
        ids = [rng.randrange(50_000_000) for _ in range(10)]
        op = "add" if rng.random() < 0.8 else "remove"
        out.append((name.encode(), json.dumps({"op": op, "segment": name, "ids": ids}).encode(), []))
    return out


def binary_stream(rng: random.Random, messages: int, segments: int, ids_per_message: int) -> list[Raw]:
    out: list[Raw] = []
    for i in range(messages):
        name = f"b{i % segments}"
        start = rng.randrange(0, 45_000_000)  # IDs spread over a 5M window: ~76 shards per message
        ids = BitMap(rng.sample(range(start, start + 5_000_000), ids_per_message))
        op = b"add" if rng.random() < 0.8 else b"remove"
        headers: list[tuple[str, str | bytes | None]] = [("op", op), ("segment", name.encode()), ("encoding", b"roaring")]
        out.append((name.encode(), ids.serialize(), headers))
    return out


def busy_seconds(log: str) -> float:
    """From the partition assignment to the last committed batch, per the consumer's own log."""
    stamps = [
        datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
        for line in log.splitlines()
        if ("assigned" in line or "messages done in" in line) and (m := _STAMP.match(line))
    ]
    assert len(stamps) >= 2, log[-2000:]
    return (stamps[-1] - stamps[0]).total_seconds()


@pytest.mark.parametrize("kind", ["json", "binary"])
def test_ingest_rate(broker: KafkaBroker, tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    rng = random.Random(11)
    if kind == "json":
        messages = json_stream(rng, 200_000 if HEAVY else 60_000, 100)
    else:
        messages = binary_stream(rng, 400 if HEAVY else 120, 10, 50_000)
    ids = sum(len(json.loads(v)["ids"]) if kind == "json" else len(BitMap.deserialize(v))
              for _, v, _ in messages if v is not None)
    topics = new_topics(broker)
    delivered = produce(broker, topics.updates, messages)
    store = f"sqlite:///{tmp_path}/segments.db"
    consumer = IngestProcess(broker, topics, store, tmp_path / "ingest.log")
    try:
        wait_caught_up(broker, topics, delivered.ends(), consumer, timeout=150)
    finally:
        assert consumer.stop() == 0
    seconds = busy_seconds(consumer.log())
    model = SetModel()
    model.apply_all(messages, delivered)
    assert store_contents(store) == model.members
    with capsys.disabled():
        print(f"\n[ingest rate] {kind}: {len(messages)} messages, {ids:,} IDs in {seconds:.1f}s "
              f"(from partition assignment to the last commit): {len(messages) / seconds:,.0f} messages/s, {ids / seconds:,.0f} IDs/s")
