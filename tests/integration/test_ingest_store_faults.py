"""What the consumer does about store errors is decided by their fault alone (issue 10 items 7 and 8).

* DATA: a segment whose shard record was deleted by hand has its messages
  dead-lettered ``corrupt_data``; another segment in the same batches keeps
  flowing (``segments ingest`` as a subprocess, SQLite store).
* CAPACITY: a store that is full (``StorageFull``) pauses and retries the
  batch, commits nothing and dead-letters nothing, and recovers by itself.
* OPERATOR: a misconfigured store (``StorageMisconfigured``) stops the
  consumer with a fatal log line and exit status 3, committing nothing and
  dead-lettering nothing; restarted once fixed, it applies everything.

The full and misconfigured stores are our SQLite store whose writes fail on
cue (a subclass at the ``Store`` protocol level); the consumer runs in a
thread of the test, against the real tansu broker.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

import segments
from ingest.__main__ import _consume, _Shutdown
from ingest.consumer import IngestConsumer
from ingest.settings import IngestSettings
from segments.catalog import shard_key
from segments.errors import SegmentsError, StorageFull, StorageMisconfigured
from segments.storage.base import Bins
from segments.storage.sqlite import SqliteStore
from tests.ingest.harness import (
    FAST_GROUP,
    Delivered,
    IngestProcess,
    Raw,
    SetModel,
    Topics,
    committed,
    new_topics,
    produce,
    read_topic,
    store_contents,
    wait_caught_up,
    wait_until,
)
from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.timeout(150)


def add(segment: str, ids: list[int]) -> Raw:
    return segment.encode(), json.dumps({"op": "add", "segment": segment, "ids": ids}).encode(), []


def remove(segment: str, ids: list[int]) -> Raw:
    return segment.encode(), json.dumps({"op": "remove", "segment": segment, "ids": ids}).encode(), []


def test_a_segment_with_a_missing_shard_record_is_dead_lettered_alone(
    broker: KafkaBroker, tmp_path: Path  # noqa: F811
) -> None:
    topics = new_topics(broker, partitions=2)
    store = f"sqlite:///{tmp_path}/segments.db"
    with segments.connect(store) as segs:
        segs.add("broken", [1, 70_000, 140_000])
        segs.add("fine", [1])
        keys = [k for k, _ in segs.store.scan(segs.sets.shard) if k.startswith("broken/1/")]
        assert len(keys) == 1 and keys[0].rpartition("/")[0] == shard_key("broken", 1, 0).rpartition("/")[0]
        assert segs.store.delete(segs.sets.shard, keys[0])  # shard 1 (IDs 65,536-131,071) is gone
    messages: list[Raw] = []
    for i in range(40):
        messages.append(add("broken", [70_000 + i]))  # every one touches the missing shard
        messages.append(add("fine", [1_000 + i]) if i % 5 else remove("fine", [1_000 + i - 1]))
    delivered = produce(broker, topics.updates, messages)

    consumer = IngestProcess(broker, topics, store, tmp_path / "ingest.log", extra=["--batch-max-messages", "16"])
    try:
        wait_caught_up(broker, topics, delivered.ends(), consumer, timeout=60)
        assert consumer.alive
    finally:
        assert consumer.stop() == 0
    dead = read_topic(broker, topics.dlq, 41, timeout=3.0)
    reasons: dict[bytes, int] = {}
    for message in dead:
        assert message.key() == b"broken"
        reason = dict(message.headers() or [])["error.reason"]
        assert isinstance(reason, bytes)
        reasons[reason] = reasons.get(reason, 0) + 1
    batches = consumer.log().count("batch of ")
    print(f"\ndead letters by reason: {reasons} (of 40 messages to 'broken'); batch log lines: {batches}")
    assert reasons == {b"corrupt_data": 40}

    model = SetModel()
    model.apply_all([m for m in messages if m[0] == b"fine"], Delivered(
        [o for o, m in zip(delivered.offsets, messages, strict=True) if m[0] == b"fine"]))
    with segments.connect(store) as segs:
        assert set(segs.evaluate("fine")) == {1} | model.members["fine"]
        assert segs.info("broken").version == 1  # untouched
    assert "Traceback" not in consumer.log()


class SwitchedSqlite(SqliteStore):
    """Our SQLite store, whose writes raise ``refusal()`` while it is set (a full disk, a revoked grant)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.refusal: Callable[[], SegmentsError] | None = None
        self.refused = 0

    def _gate(self) -> None:
        if self.refusal is not None:
            self.refused += 1
            raise self.refusal()

    def put(self, set_name: str, key: str, bins: Bins, *, generation: int | None = None) -> int:
        self._gate()
        return super().put(set_name, key, bins, generation=generation)

    def put_many(self, set_name: str, items: Sequence[tuple[str, Bins]]) -> None:
        self._gate()
        super().put_many(set_name, items)

    def delete(self, set_name: str, key: str, *, generation: int | None = None) -> bool:
        self._gate()
        return super().delete(set_name, key, generation=generation)

    def delete_many(self, set_name: str, keys: Sequence[str]) -> None:
        self._gate()
        super().delete_many(set_name, keys)


def settings_for(broker: KafkaBroker, topics: Topics, url: str) -> IngestSettings:  # noqa: F811
    return IngestSettings(
        bootstrap_servers=broker.bootstrap_servers, topic=topics.updates, dlq_topic=topics.dlq,
        group=topics.group, store=url, backoff_initial=0.05, backoff_max=0.3, batch_max_wait=0.2,
        kafka_options=dict(FAST_GROUP),
    )


def stream(start: int, count: int) -> list[Raw]:
    """Adds and removes of three segments (a remove takes back an ID added earlier)."""
    return [remove(f"seg{i % 3}", [i - 3]) if i % 4 == 3 else add(f"seg{i % 3}", [i, i * 7])
            for i in range(start, start + count)]


@pytest.fixture()
def threads() -> Iterator[list[tuple[Callable[[], None], threading.Thread]]]:
    """Consumer threads to stop (by their stop function) and join at the end of the test."""
    started: list[tuple[Callable[[], None], threading.Thread]] = []
    yield started
    for stop, thread in started:
        stop()
        thread.join(60)


def test_a_full_store_pauses_and_retries_without_dead_letters_then_recovers(
    broker: KafkaBroker, tmp_path: Path, threads: list[tuple[Callable[[], None], threading.Thread]]  # noqa: F811
) -> None:
    topics = new_topics(broker)
    url = f"sqlite:///{tmp_path}/segments.db"
    store = SwitchedSqlite(url)
    segs = segments.Segments(store)
    consumer = IngestConsumer(settings_for(broker, topics, url), segs)
    thread = threading.Thread(target=consumer.run, name="consumer")
    thread.start()
    threads.append((consumer.stop, thread))

    sent = stream(0, 50)
    delivered = produce(broker, topics.updates, sent)
    wait_until(lambda: committed(broker, topics.group, topics.updates, 1)[0] >= delivered.ends()[0], 60, "a commit")
    before = committed(broker, topics.group, topics.updates, 1)[0]

    store.refusal = lambda: StorageFull("sqlite store is full: database or disk is full (test)")
    more = stream(50, 50)
    delivered.offsets += produce(broker, topics.updates, more).offsets
    sent += more
    registry = consumer.metrics.registry

    def retries() -> float:
        return registry.get_sample_value("segments_ingest_batch_retries_total", {"kind": "storage_full"}) or 0.0

    wait_until(lambda: retries() >= 3, 60, "three retries of the full store")
    assert committed(broker, topics.group, topics.updates, 1)[0] == before, "committed while the store was full"
    assert registry.get_sample_value("segments_ingest_store_up") == 0
    assert thread.is_alive()
    refused = store.refused
    store.refusal = None  # space freed: nobody touches the consumer
    wait_until(lambda: committed(broker, topics.group, topics.updates, 1)[0] >= delivered.ends()[0], 60,
               "the consumer to catch up")
    dead = sum(s.value for m in registry.collect() if m.name == "segments_ingest_dead_letters" for s in m.samples
               if s.name.endswith("_total"))
    print(f"\nfull store: {retries():.0f} batch retries, {refused} refused writes, {dead:.0f} dead letters, "
          f"store_up {registry.get_sample_value('segments_ingest_store_up')}")
    assert dead == 0 and registry.get_sample_value("segments_ingest_store_up") == 1
    assert read_topic(broker, topics.dlq, 1, timeout=2.0) == []
    model = SetModel()
    model.apply_all(sent, delivered)
    assert {n: set(segs.evaluate(n)) for n in segs.names()} == model.members


def test_a_misconfigured_store_stops_the_consumer_committing_nothing_and_a_restart_applies_everything(
    broker: KafkaBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture,  # noqa: F811
    threads: list[tuple[Callable[[], None], threading.Thread]],
) -> None:
    topics = new_topics(broker)
    url = f"sqlite:///{tmp_path}/segments.db"
    store = SwitchedSqlite(url)
    segs = segments.Segments(store)
    settings = settings_for(broker, topics, url)
    exits: list[int] = []
    shutdown = _Shutdown()
    thread = threading.Thread(target=lambda: exits.append(_consume(settings, segs, shutdown)), name="consumer")
    with caplog.at_level(logging.INFO):
        thread.start()
        threads.append((lambda: shutdown.consumer.stop() if shutdown.consumer else None, thread))
        sent = stream(0, 30)
        delivered = produce(broker, topics.updates, sent)
        wait_until(lambda: committed(broker, topics.group, topics.updates, 1)[0] >= delivered.ends()[0], 60,
                   "a commit")
        before = committed(broker, topics.group, topics.updates, 1)[0]

        store.refusal = lambda: StorageMisconfigured("security error: role 'ingest' may not write (test)")
        more = stream(30, 30)
        delivered.offsets += produce(broker, topics.updates, more).offsets
        sent += more
        thread.join(60)
    assert not thread.is_alive(), "the consumer kept running on a misconfigured store"
    fatal = [r.getMessage() for r in caplog.records if r.levelno >= logging.CRITICAL]
    print(f"\nexit status {exits}; refused writes {store.refused}; fatal log lines: {fatal}")
    assert exits == [3]
    assert any("fatal" in line and "storage_misconfigured" in line for line in fatal)
    assert committed(broker, topics.group, topics.updates, 1)[0] == before
    assert read_topic(broker, topics.dlq, 1, timeout=2.0) == [], "a valid message was dead-lettered"

    store.refusal = None  # the operator fixed it; a new process starts where the last commit was
    again = segments.Segments(SwitchedSqlite(url))
    consumer = IngestConsumer(settings, again)
    restarted = threading.Thread(target=consumer.run, name="consumer-2")
    restarted.start()
    threads.append((consumer.stop, restarted))
    wait_until(lambda: committed(broker, topics.group, topics.updates, 1)[0] >= delivered.ends()[0], 60,
               "the restarted consumer to catch up")
    model = SetModel()
    model.apply_all(sent, delivered)
    assert store_contents(url) == model.members
