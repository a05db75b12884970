"""Broker crash (SIGKILL) and restart in the middle of ingest: no loss, no duplicate effect.

The broker is tansu on S3 storage (``moto_server``, see
:mod:`tests.support.durable_broker`), so a broker killed with SIGKILL and
started again on the same port keeps its topics, messages and committed
offsets, as a real Kafka cluster keeps them on disk. (With the default
``memory://`` engine a restart would come back empty, which tests nothing
fair.)

Sequence: produce a first stream; start ``segments ingest`` with small
batches; once part of the stream is committed, SIGKILL the broker while the
consumer is busy; keep producing with the same producer while the broker is
down (the messages wait in the producer); restart the broker on the same
port; produce a second stream; wait until the group's committed offsets
reach the end of the log.

Asserted:

* the broker kept its log and the group's committed offsets across the crash;
* every produced message is in the log (no loss on the way in);
* the consumer never exited, and the store equals the set model of the log
  applied once in offset order (no loss, no duplicate effect);
* no message was applied twice: per segment and partition, the positions of
  the consumer's applied writes strictly increase, even for the suffix of the
  log it read again after the crash;
* versions: each segment's version is exactly the number of writes the
  consumer applied to it, and the versions it logged went 1, 2, 3, ...
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message, Producer

import segments
from tests.faults.conftest import HEAVY
from tests.ingest.harness import (
    Delivered,
    IngestProcess,
    Raw,
    SetModel,
    applied_writes,
    committed,
    new_topics,
    read_topic,
    store_contents,
    wait_caught_up,
    wait_until,
)
from tests.support.durable_broker import DurableBrokerUnavailable, start_durable_kafka_broker
from tests.support.kafka_broker import KafkaBroker
from tests.support.require import missing

pytestmark = pytest.mark.timeout(300)

PARTITIONS = 2
SEGMENTS = 12
FIRST = 40_000 if HEAVY else 12_000
DURING = 2_000 if HEAVY else 500
SECOND = 20_000 if HEAVY else 4_000


@pytest.fixture()
def durable_broker() -> Iterator[KafkaBroker]:
    try:
        with start_durable_kafka_broker() as broker:
            yield broker
    except DurableBrokerUnavailable as exc:
        pytest.skip(missing(f"a durable broker: {exc}"))


def stream(rng: random.Random, start: int, count: int) -> list[Raw]:
    """Adds of fresh IDs and removes of IDs added earlier; every message is unique (its ``n``)."""
    out: list[Raw] = []
    for n in range(start, start + count):
        name = f"seg{rng.randrange(SEGMENTS)}"
        if n > 50 and rng.random() < 0.3:
            ids = [rng.randrange(0, 4 * n) for _ in range(3)]
            body = {"op": "remove", "segment": name, "ids": ids, "n": n}
        else:
            ids = [4 * n + k for k in range(rng.randint(1, 4))] + [rng.randrange(0, 4 * n + 1)]
            body = {"op": "add", "segment": name, "ids": ids, "n": n}
        out.append((name.encode(), json.dumps(body).encode(), []))
    return out


class Sender:
    """One producer for the whole test, across the broker crash; records where each message landed."""

    def __init__(self, broker: KafkaBroker) -> None:
        self.producer = Producer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "broker.address.family": "v4",
                "acks": "all",
                "linger.ms": 20,
                "message.timeout.ms": 120_000,
                "reconnect.backoff.max.ms": 500,
                "log_level": 2,  # the refused connections while the broker is down are expected
            }
        )
        self.delivered = Delivered()
        self.errors: list[str] = []

    def send(self, topic: str, messages: list[Raw]) -> None:
        def on_delivery(error: KafkaError | None, msg: Message) -> None:
            if error is not None:
                self.errors.append(str(error))
            else:
                self.delivered.offsets.append((msg.partition() or 0, msg.offset() or 0))

        for key, value, headers in messages:
            while True:
                try:
                    self.producer.produce(
                        topic, key=key, value=value, headers=headers, on_delivery=on_delivery
                    )
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.producer.poll(0)

    def flush(self, timeout: float = 90) -> None:
        assert self.producer.flush(timeout) == 0, "messages left undelivered"
        assert not self.errors, self.errors[:3]


def test_broker_sigkill_mid_ingest_no_loss_no_duplicate_effect(
    durable_broker: KafkaBroker, tmp_path: Path
) -> None:
    broker = durable_broker
    rng = random.Random(20240611)
    topics = new_topics(broker, partitions=PARTITIONS)
    store = f"sqlite:///{tmp_path}/segments.db"
    sender = Sender(broker)
    first = stream(rng, 0, FIRST)
    sender.send(topics.updates, first)
    sender.flush()
    total_first = len(first)

    consumer = IngestProcess(
        broker,
        topics,
        store,
        tmp_path / "ingest.log",
        extra=["--batch-max-messages", "400", "--batch-max-wait", "0.1"],
    )
    try:
        wait_until(
            lambda: (
                sum(max(0, o) for o in committed(broker, topics.group, topics.updates, PARTITIONS).values())
                > total_first // 5
            ),
            120,
            "a fifth of the first stream committed",
            consumer,
        )
        # --- the crash --------------------------------------------------------------------
        at_kill = committed(broker, topics.group, topics.updates, PARTITIONS)
        broker.stop()  # SIGKILL, mid-ingest
        killed_at = time.monotonic()
        assert sum(max(0, o) for o in at_kill.values()) < total_first, "ingest finished before the crash"
        during = stream(rng, FIRST, DURING)
        sender.send(topics.updates, during)  # queued in the producer while the broker is down
        time.sleep(3.0)
        assert consumer.alive, consumer.log()[-3000:]
        broker.start()  # same port, same S3 bucket
        down_for = time.monotonic() - killed_at
        sender.flush()

        # the broker kept its log and the group's offsets
        after_restart = committed(broker, topics.group, topics.updates, PARTITIONS)
        assert all(after_restart[p] >= at_kill[p] for p in range(PARTITIONS)), (at_kill, after_restart)

        second = stream(rng, FIRST + DURING, SECOND)
        sender.send(topics.updates, second)
        sender.flush()
        ends = sender.delivered.ends()
        wait_caught_up(broker, topics, ends, consumer, timeout=150)
    finally:
        code = consumer.stop()
    assert code == 0
    log = consumer.log()
    assert "Traceback" not in log

    # every produced message is in the log; the model is the log applied once, in offset order
    sent = first + during + second
    # (tansu's ListOffsets answers are not reliable, so the log's end is taken from the delivery reports)
    log_size = sum(ends.values())
    assert log_size >= len(sent)
    in_log = read_topic(broker, topics.updates, log_size, timeout=60)
    assert len(in_log) == log_size
    produced = Counter(value for _, value, _ in sent)
    logged = Counter(m.value() for m in in_log)
    assert not (produced - logged), "a produced message is missing from the log"
    duplicates_in_log = sum((logged - produced).values())
    model = SetModel()
    for m in sorted(in_log, key=lambda m: (m.partition() or 0, m.offset() or 0)):
        model.apply((m.partition() or 0, m.offset() or 0), m.key(), m.value(), [])
    contents = store_contents(store)
    assert contents.keys() == model.members.keys()
    for name, members in model.members.items():
        assert contents[name] == members, f"segment {name} differs from the model"

    # no message applied twice; versions count the applied writes exactly
    writes = applied_writes(log)
    assert writes, "no applied writes were logged"
    last: dict[tuple[str, str], int] = {}
    versions: dict[str, list[int]] = {}
    for w in writes:
        key = (w["segment"], w["source"])
        position = int(w["position"])
        assert position > last.get(key, -1), f"{key}: position {position} applied again"
        last[key] = position
        versions.setdefault(w["segment"], []).append(int(w["version"]))
    with segments.connect(store) as segs:
        infos = {info.name: info for info in segs.infos()}
    for name, logged_versions in versions.items():
        assert logged_versions == list(range(1, len(logged_versions) + 1)), name
        assert infos[name].version == len(logged_versions), name
        assert infos[name].cardinality == len(model.members[name])

    failed_commits = log.count("offset commit failed")
    summary = [line for line in log.splitlines() if "replays skipped" in line]
    print(
        f"\n[broker crash] consumer: {failed_commits} failed offset commits, last summary: "
        f"{summary[-1].split(': ', 1)[-1] if summary else '-'}"
    )
    print(
        f"[broker crash] {len(sent)} messages; broker SIGKILLed with {sum(at_kill.values())}/{total_first} "
        f"committed, down {down_for:.1f}s while {DURING} more were produced; after the restart the log and "
        f"the group's offsets were intact ({duplicates_in_log} duplicate messages in the log), the consumer "
        f"caught up without exiting; store == model; {len(writes)} applied writes, each position applied "
        f"once; versions == number of applied writes for all {len(versions)} segments"
    )
