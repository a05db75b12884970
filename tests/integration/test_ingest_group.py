"""Scaling out: two consumers in one group share the partitions; one is killed, the other takes over.

Rebalances drop uncommitted in-memory batches of revoked partitions (the new
owner consumes them again from the committed offset, and the watermarks skip
what was already written), so the store still equals the set model.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.ingest.harness import (
    IngestProcess,
    Raw,
    SetModel,
    new_topics,
    produce,
    store_contents,
    wait_caught_up,
    wait_until,
)
from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.timeout(120)


def stream(rng: random.Random, count: int) -> list[Raw]:
    out: list[Raw] = []
    for _ in range(count):
        name = f"g{rng.randrange(40)}"
        op = "add" if rng.random() < 0.7 else "remove"
        ids = [rng.randrange(300_000) for _ in range(rng.randint(1, 6))]
        out.append((name.encode(), json.dumps({"op": op, "segment": name, "ids": ids}).encode(), []))
    return out


def test_two_members_share_partitions_and_survive_losing_one(broker: KafkaBroker, tmp_path: Path) -> None:  # noqa: F811
    rng = random.Random(5)
    topics = new_topics(broker, partitions=4)
    early, late, last = stream(rng, 5_000), stream(rng, 40_000), stream(rng, 5_000)
    delivered = produce(broker, topics.updates, early)
    store = f"sqlite:///{tmp_path}/segments.db"
    small = ["--batch-max-messages", "300"]
    first = IngestProcess(broker, topics, store, tmp_path / "first.log", extra=small)
    second: IngestProcess | None = None
    try:
        wait_until(lambda: "applied segment=" in first.log(), 60, "the first member to write", first)
        second = IngestProcess(broker, topics, store, tmp_path / "second.log", extra=small)
        wait_until(lambda: "assigned" in second.log(), 60, "the second member to get partitions", second)
        delivered.offsets += produce(broker, topics.updates, late).offsets
        wait_until(lambda: "applied segment=" in second.log(), 60, "the second member to write", second)
        first.kill()  # its partitions go to the second member
        delivered.offsets += produce(broker, topics.updates, last).offsets
        wait_caught_up(broker, topics, delivered.ends(), second, timeout=90)
    finally:
        first.kill()
        if second is not None:
            assert second.stop() == 0
    assert "revoked" in first.log() and "assigned" in second.log()
    parts = [line for line in second.log().splitlines() if " assigned " in line]
    assert parts[-1].count(topics.updates) == 4, "the survivor did not take over every partition"
    model = SetModel()
    model.apply_all(early + late + last, delivered)
    assert store_contents(store) == model.members
