"""A store outage pauses consumption, commits nothing unwritten, and recovers by itself.

The store is the Aerospike backend on a private server that the test stops and
restarts (its data survives a clean stop): the loopback Aerospike test server, or
under ``make test-aerospike`` a real node from the server kit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ingest.harness import (
    Delivered,
    IngestProcess,
    Raw,
    SetModel,
    broker,  # noqa: F401 - fixture
    committed,
    free_port,
    new_topics,
    produce,
    store_contents,
    wait_caught_up,
    wait_until,
)
from tests.support.kafka_broker import KafkaBroker
from tests.support.require import missing

pytestmark = pytest.mark.timeout(150)


@pytest.fixture()
def aerospike() -> Iterator[object]:
    try:
        import segments.storage.aerospike  # noqa: F401
        from tests.support.aerospike_fixture import private_aerospike_target
    except ImportError as exc:  # pragma: no cover - the backend is part of the project
        pytest.skip(missing(f"the Aerospike backend ({exc})"))
    with private_aerospike_target() as target:
        yield target


def updates(start: int, count: int, segments: int = 5) -> list[Raw]:
    out: list[Raw] = []
    for i in range(start, start + count):
        name = f"seg{i % segments}"
        op = "remove" if i % 4 == 3 else "add"
        out.append((name.encode(), json.dumps({"op": op, "segment": name, "ids": [i, i // 2, 7]}).encode(), []))
    return out


def test_store_outage_pauses_retries_and_recovers(
    broker: KafkaBroker, aerospike: object, tmp_path: Path  # noqa: F811
) -> None:
    from tests.support.aerospike_fixture import AerospikeTarget, aerospike_url

    assert isinstance(aerospike, AerospikeTarget)
    server = aerospike.require_server()
    store = aerospike_url(aerospike, None, timeout_ms=300, write_timeout_ms=500, batch_timeout_ms=800,
                          connect_timeout_s=1)
    topics = new_topics(broker)
    port = free_port()
    consumer = IngestProcess(broker, topics, store, tmp_path / "ingest.log", metrics_port=port)
    sent: list[Raw] = []
    offsets = Delivered()
    try:
        batch = updates(0, 300)
        offsets.offsets += produce(broker, topics.updates, batch).offsets
        sent += batch
        wait_caught_up(broker, topics, offsets.ends(), consumer)
        before = committed(broker, topics.group, topics.updates, 1)[0]

        server.stop()  # the outage
        batch = updates(300, 300)
        offsets.offsets += produce(broker, topics.updates, batch).offsets
        sent += batch
        wait_until(lambda: consumer.metrics().get("segments_ingest_store_up") == 0.0, 30, "the consumer to notice",
                   consumer)
        wait_until(lambda: sum(v for k, v in consumer.metrics().items()
                               if k.startswith("segments_ingest_batch_retries_total")) >= 2,
                   30, "a retry", consumer)
        batch = updates(1000, 400)  # more arrive while the partitions are paused
        offsets.offsets += produce(broker, topics.updates, batch).offsets
        sent += batch
        time.sleep(1.0)
        assert committed(broker, topics.group, topics.updates, 1)[0] == before, "committed during the outage"
        assert consumer.alive

        server.start()  # recovery: nobody touches the consumer
        wait_caught_up(broker, topics, offsets.ends(), consumer, timeout=60)
        assert consumer.metrics()["segments_ingest_store_up"] == 1.0
    finally:
        assert consumer.stop() == 0
    log = consumer.log()
    assert "retrying in" in log and "Traceback" not in log

    model = SetModel()
    model.apply_all(sent, offsets)
    assert store_contents(store) == model.members

    # an outage at shutdown: SIGTERM gives up the unwritten batch without committing it
    quitter = IngestProcess(broker, topics, store, tmp_path / "quitter.log")
    wait_until(lambda: "assigned" in quitter.log(), 60, "a partition assignment", quitter)
    server.stop()
    batch = updates(600, 200)
    offsets.offsets += produce(broker, topics.updates, batch).offsets
    sent += batch
    wait_until(lambda: "retrying in" in quitter.log(), 60, "a failed attempt", quitter)
    assert quitter.stop(timeout=30) == 0
    assert "nothing of it is committed" in quitter.log()
    assert committed(broker, topics.group, topics.updates, 1)[0] == len(sent) - len(batch)

    # a consumer started while the store is down waits for it
    finisher = IngestProcess(broker, topics, store, tmp_path / "finisher.log")
    try:
        wait_until(lambda: "unavailable" in finisher.log(), 60, "the consumer to wait for the store", finisher)
        server.start()
        wait_caught_up(broker, topics, offsets.ends(), finisher, timeout=60)
    finally:
        assert finisher.stop() == 0
    model = SetModel()
    model.apply_all(sent, offsets)
    assert store_contents(store) == model.members
