"""What the tansu test broker really supports, proven with confluent-kafka.

These tests run against a real tansu process (see
:mod:`tests.support.kafka_broker`) and pin down the behaviour the segment
ingest consumer relies on. Where tansu deviates from Apache Kafka the test is
named ``test_quirk_...`` and asserts the deviation, so that a tansu upgrade
which fixes it fails loudly and the notes can be updated.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from tests.support.kafka_broker import KafkaBroker, KafkaBrokerError, start_kafka_broker

pytestmark = pytest.mark.timeout(60)

Headers = list[tuple[str, str | bytes | None]]
Record = tuple[bytes | None, bytes | None, Headers]
Config = dict[str, Any]


# --------------------------------------------------------------------------- configuration


def producer_config(broker: KafkaBroker, **overrides: Any) -> Config:
    """Producer settings that work well against tansu.

    ``enable.idempotence`` stays off: after a restart of a memory-backed
    broker an idempotent producer never recovers (see
    :func:`test_quirk_idempotent_producer_never_recovers_from_memory_broker_restart`).
    """
    config: Config = {
        "bootstrap.servers": broker.bootstrap_servers,
        "broker.address.family": "v4",
        "client.id": "selftest-producer",
        "acks": "all",
        "enable.idempotence": False,
        "linger.ms": 5,
        "socket.timeout.ms": 5000,
        "message.timeout.ms": 30000,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
    }
    config.update(overrides)
    return config


def consumer_config(broker: KafkaBroker, group_id: str, **overrides: Any) -> Config:
    """Consumer settings that work well against tansu.

    tansu holds a JoinGroup for about ``session.timeout.ms / 2`` (at least
    ~1 s), so the small session timeout keeps group joins at ~1 s; heartbeats
    come from librdkafka's own thread, so it does not depend on how fast the
    application polls.
    """
    config: Config = {
        "bootstrap.servers": broker.bootstrap_servers,
        "broker.address.family": "v4",
        "client.id": "selftest-consumer",
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": True,
        "auto.offset.reset": "earliest",
        "allow.auto.create.topics": False,
        "session.timeout.ms": 2000,
        "heartbeat.interval.ms": 500,
        "socket.timeout.ms": 5000,
        "topic.metadata.refresh.interval.ms": 5000,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
    }
    config.update(overrides)
    return config


# --------------------------------------------------------------------------- helpers


def unique(prefix: str) -> str:
    """Return a topic or group name that no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class DeliveryLog:
    """Collects producer delivery reports."""

    def __init__(self) -> None:
        self.delivered: list[Message] = []
        self.failed: list[tuple[KafkaError, Message]] = []

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.delivered.append(message)
        else:
            self.failed.append((error, message))


def produce_all(producer: Producer, topic: str, records: list[Record]) -> DeliveryLog:
    """Produce ``(key, value, headers)`` records, flush, and assert all were delivered."""
    log = DeliveryLog()
    for key, value, headers in records:
        producer.produce(topic, key=key, value=value, headers=headers, on_delivery=log)
        producer.poll(0)
    assert producer.flush(30) == 0, "messages still queued after flush"
    assert not log.failed, f"delivery failures: {[str(error) for error, _ in log.failed]}"
    assert len(log.delivered) == len(records)
    return log


def partition_of(message: Message) -> int:
    """The message's partition (never ``None`` for a consumed or delivered message)."""
    partition = message.partition()
    assert partition is not None
    return partition


def offset_of(message: Message) -> int:
    """The message's offset (never ``None`` for a consumed or delivered message)."""
    offset = message.offset()
    assert offset is not None
    return offset


def key_of(message: Message) -> bytes:
    """The message's key, which the test set."""
    key = message.key()
    assert isinstance(key, bytes)
    return key


def value_of(message: Message) -> bytes:
    """The message's value, which the test set."""
    value = message.value()
    assert isinstance(value, bytes)
    return value


def consume_n(consumer: Consumer, count: int, timeout: float = 20.0) -> list[Message]:
    """Poll until ``count`` messages arrived; fail on any consumer error."""
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(messages) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(messages)} of {count} messages arrived within {timeout}s"
        message = consumer.poll(min(0.5, remaining))
        if message is None:
            continue
        error = message.error()
        assert error is None, f"consumer error: {error}"
        messages.append(message)
    return messages


def poll_for(consumer: Consumer, seconds: float) -> list[Message]:
    """Poll for ``seconds`` and return everything (messages and error events)."""
    received: list[Message] = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        message = consumer.poll(min(0.2, remaining))
        if message is not None:
            received.append(message)
    return received


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    """One memory-backed tansu broker shared by the tests that do not restart it."""
    with start_kafka_broker() as running:
        yield running


@pytest.fixture()
def own_broker() -> Iterator[KafkaBroker]:
    """A broker of the test's own, for tests that stop or restart it."""
    with start_kafka_broker() as running:
        yield running


# --------------------------------------------------------------------------- 0. the fixture itself


def test_fixture_starts_a_reachable_broker_and_creates_topics(broker: KafkaBroker) -> None:
    assert broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
    assert broker.is_running and broker.process.poll() is None
    assert not broker.is_durable
    topic = unique("fixture")
    broker.create_topic(topic, partitions=3)
    metadata = broker.admin_client().list_topics(topic=topic, timeout=5)
    assert sorted(metadata.topics[topic].partitions) == [0, 1, 2]
    with pytest.raises(KafkaException) as excinfo:
        broker.create_topic(topic, partitions=3)
    assert excinfo.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS


def test_fixture_cleans_up_process_and_temp_dir() -> None:
    with start_kafka_broker() as running:
        process, workdir = running.process, running.workdir
        assert workdir.is_dir() and running.log_path.is_file()
    assert process.poll() is not None
    assert not workdir.exists()


def test_fixture_reports_startup_failure_with_the_broker_log() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(KafkaBrokerError, match="(?s)failed to start.*AddrInUse"):
            with start_kafka_broker(port=port, startup_timeout=10):
                pass


# --------------------------------------------------------------------------- 1. keys, headers, large values


def test_keys_headers_and_large_binary_values_round_trip_in_order(broker: KafkaBroker) -> None:
    topic = unique("roundtrip")
    broker.create_topic(topic)
    large = [os.urandom(900 * 1024) for _ in range(3)]
    records: list[Record] = []
    for index in range(30):
        value: bytes | None = large[index // 10] if index % 10 == 5 else f"value-{index}".encode()
        headers: Headers = [
            ("segment-id", f"seg-{index % 4}".encode()),
            ("binary", bytes([0, 255, index % 256, 10, 13])),
            ("repeated", b"first"),
            ("repeated", b"second"),
            ("empty", b""),
        ]
        records.append((f"key-{index % 4}".encode(), value, headers))
    records.append((b"tombstone", None, [("null-header", None)]))
    records.append((None, b"no key", []))

    producer = Producer(producer_config(broker))
    delivered = produce_all(producer, topic, records)
    assert [offset_of(m) for m in delivered.delivered] == list(range(len(records)))

    consumer = Consumer(consumer_config(broker, unique("roundtrip")))
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        received = consume_n(consumer, len(records))
    finally:
        consumer.close()

    assert [offset_of(m) for m in received] == list(range(len(records)))
    for (key, value, headers), message in zip(records, received, strict=True):
        assert message.key() == key
        assert message.value() == value
        assert (message.headers() or []) == headers
        assert message.topic() == topic and message.partition() == 0
    assert sum(len(m.value() or b"") for m in received) > 2_700_000


# --------------------------------------------------------------------------- 2. manual commits, resume


def test_manual_commit_then_new_consumer_resumes_exactly_after_committed_offset(broker: KafkaBroker) -> None:
    topic, group = unique("commit"), unique("commit-group")
    broker.create_topic(topic, partitions=2)
    records: list[Record] = [(f"k{i % 5}".encode(), f"m{i}".encode(), []) for i in range(60)]
    producer = Producer(producer_config(broker))
    produce_all(producer, topic, records)

    first = Consumer(consumer_config(broker, group))
    first.subscribe([topic])
    try:
        consumed_first = consume_n(first, 25)
        last_by_partition: dict[int, int] = {}
        for message in consumed_first:
            last_by_partition[partition_of(message)] = offset_of(message)
        committed = first.commit(asynchronous=False)
        assert committed is not None
        committed_offsets = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
        assert committed_offsets == {p: offset + 1 for p, offset in last_by_partition.items()}
        assert all(tp.error is None for tp in committed)
        from_broker = first.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=10)
        assert {tp.partition: tp.offset for tp in from_broker if tp.offset >= 0} == committed_offsets
    finally:
        first.close()

    second = Consumer(consumer_config(broker, group))
    second.subscribe([topic])
    try:
        consumed_second = consume_n(second, len(records) - len(consumed_first))
        assert poll_for(second, 1.0) == [], "something was delivered twice"
    finally:
        second.close()

    first_by_partition: dict[int, int] = {}
    for message in consumed_second:
        first_by_partition.setdefault(partition_of(message), offset_of(message))
    for partition, offset in first_by_partition.items():
        assert offset == committed_offsets.get(partition, 0), "resumed at the wrong offset"
    seen = [(partition_of(m), offset_of(m)) for m in consumed_first + consumed_second]
    assert len(seen) == len(set(seen)) == len(records), "duplicates or gaps"
    assert sorted(value_of(m) for m in consumed_first + consumed_second) == sorted(
        value for _, value, _ in records if value is not None
    )


def test_commit_of_an_explicit_offset_is_where_the_group_resumes(broker: KafkaBroker) -> None:
    topic, group = unique("explicit"), unique("explicit-group")
    broker.create_topic(topic)
    produce_all(Producer(producer_config(broker)), topic, [(None, f"m{i}".encode(), []) for i in range(10)])

    committer = Consumer(consumer_config(broker, group))
    try:
        result = committer.commit(offsets=[TopicPartition(topic, 0, 7)], asynchronous=False)
        assert result is not None and [(tp.partition, tp.offset) for tp in result] == [(0, 7)]
    finally:
        committer.close()

    resumer = Consumer(consumer_config(broker, group))
    resumer.subscribe([topic])
    try:
        assert [m.value() for m in consume_n(resumer, 3)] == [b"m7", b"m8", b"m9"]
    finally:
        resumer.close()


# --------------------------------------------------------------------------- 3. partitions and keys


def test_same_key_always_lands_on_the_same_partition(broker: KafkaBroker) -> None:
    topic = unique("keyed")
    partitions = 6
    broker.create_topic(topic, partitions=partitions)
    keys = [f"segment-{n}".encode() for n in range(24)]
    records: list[Record] = [(keys[i % len(keys)], f"{i}".encode(), []) for i in range(480)]
    log = produce_all(Producer(producer_config(broker)), topic, records)

    partitions_by_key: dict[bytes, set[int]] = defaultdict(set)
    for message in log.delivered:
        partitions_by_key[key_of(message)].add(partition_of(message))
    assert all(len(found) == 1 for found in partitions_by_key.values()), partitions_by_key
    assert len({next(iter(found)) for found in partitions_by_key.values()}) > 1, "all keys on one partition"

    consumer = Consumer(consumer_config(broker, unique("keyed")))
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        received = consume_n(consumer, len(records))
    finally:
        consumer.close()
    values_by_key: dict[bytes, list[int]] = defaultdict(list)
    for message in received:
        assert {partition_of(message)} == partitions_by_key[key_of(message)]
        values_by_key[key_of(message)].append(int(value_of(message)))
    assert all(values == sorted(values) for values in values_by_key.values()), "per-key order lost"


# --------------------------------------------------------------------------- 4. lag metric inputs


def test_watermarks_and_committed_offsets_give_consumer_lag(broker: KafkaBroker) -> None:
    topic, group = unique("lag"), unique("lag-group")
    broker.create_topic(topic, partitions=2)
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    consumer = Consumer(consumer_config(broker, group))
    try:
        assert [consumer.get_watermark_offsets(tp, timeout=5) for tp in tps] == [(0, 0), (0, 0)]
        assert [tp.offset for tp in consumer.committed(tps, timeout=5)] == [OFFSET_INVALID, OFFSET_INVALID]

        # One record per produce request: the broker-queried high watermark is exact
        # (see test_quirk_queried_high_watermark_... for multi-record batches).
        producer = Producer(producer_config(broker, **{"linger.ms": 0}))
        for index in range(8):
            producer.produce(topic, value=f"p0-{index}".encode(), partition=0)
            assert producer.flush(10) == 0
        assert [consumer.get_watermark_offsets(tp, timeout=5) for tp in tps] == [(0, 8), (0, 0)]

        consumer.assign([TopicPartition(topic, 0, 0)])
        consume_n(consumer, 5)
        consumer.commit(asynchronous=False)
        assert [tp.offset for tp in consumer.committed(tps, timeout=5)] == [5, OFFSET_INVALID]
        assert consumer.position([TopicPartition(topic, 0)])[0].offset == 5
        # The high watermark cached from fetch responses is exact whatever the batching.
        wait_until(
            lambda: consumer.get_watermark_offsets(tps[0], cached=True) == (0, 8), 5, "cached watermark"
        )
        low, high = consumer.get_watermark_offsets(tps[0], timeout=5)
        committed = consumer.committed([tps[0]], timeout=5)[0].offset
        assert high - committed == 3
    finally:
        consumer.close()


def test_quirk_queried_high_watermark_counts_only_first_record_of_last_batch(broker: KafkaBroker) -> None:
    """tansu answers ListOffsets(LATEST) with ``base offset of the last batch + 1``.

    With several records in one produce batch the queried high watermark
    (``get_watermark_offsets(tp, timeout=...)``, ``AdminClient.list_offsets``)
    is too low; the one cached from fetch responses (``cached=True``) is right.
    """
    topic = unique("hwm")
    broker.create_topic(topic)
    tp = TopicPartition(topic, 0)
    producer = Producer(producer_config(broker, **{"linger.ms": 200}))
    produce_all(producer, topic, [(None, b"a", [])] * 3)  # offsets 0..2, one batch
    produce_all(producer, topic, [(None, b"b", [])] * 10)  # offsets 3..12, one batch

    consumer = Consumer(consumer_config(broker, unique("hwm")))
    try:
        queried = consumer.get_watermark_offsets(tp, timeout=5)
        consumer.assign([TopicPartition(topic, 0, 0)])
        consume_n(consumer, 13)
        cached = consumer.get_watermark_offsets(tp, cached=True)
    finally:
        consumer.close()
    assert cached == (0, 13)
    assert queried == (0, 4), f"tansu ListOffsets quirk changed: queried={queried}, expected (0, 13) on Kafka"


# --------------------------------------------------------------------------- 5. broker restart


def test_clients_recover_by_themselves_when_the_broker_restarts(own_broker: KafkaBroker) -> None:
    broker = own_broker
    topic, group = unique("restart"), unique("restart-group")
    broker.create_topic(topic)
    producer = Producer(producer_config(broker))
    produce_all(producer, topic, [(b"k", f"before-{i}".encode(), []) for i in range(10)])

    consumer = Consumer(consumer_config(broker, group))
    consumer.subscribe([topic])
    try:
        assert [offset_of(m) for m in consume_n(consumer, 10)] == list(range(10))
        consumer.commit(asynchronous=False)

        broker.stop()  # SIGKILL, as in a crash
        log = DeliveryLog()
        for index in range(5):
            producer.produce(topic, key=b"k", value=f"during-{index}".encode(), on_delivery=log)
        during = [m for m in poll_for(consumer, 1.5) if m.error() is None]
        assert during == []
        broker.start()
        for index in range(5):
            producer.produce(topic, key=b"k", value=f"after-{index}".encode(), on_delivery=log)
        assert producer.flush(30) == 0
        assert not log.failed, [str(error) for error, _ in log.failed]

        expected = [f"during-{i}".encode() for i in range(5)] + [f"after-{i}".encode() for i in range(5)]
        deadline = time.monotonic() + 20
        received: list[Message] = []
        errors: list[KafkaError] = []
        while len(received) < len(expected) and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                errors.append(error)
                continue
            received.append(message)
        assert sorted(value_of(m) for m in received) == sorted(expected)
        for partition in {partition_of(m) for m in received}:
            in_partition = [value_of(m) for m in received if partition_of(m) == partition]
            assert in_partition == [value for value in expected if value in in_partition], "order lost"
        # The consumer never had to be re-created or re-subscribed. Non-fatal
        # errors it may surface meanwhile (the topic was briefly unknown):
        assert all(not e.fatal() and e.code() == KafkaError.UNKNOWN_TOPIC_OR_PART for e in errors), errors

        if broker.is_durable:
            pytest.fail("durable storage engines are not expected in this suite")
        # memory:// storage: the restarted broker started empty. The producer's
        # metadata request re-created the topic (librdkafka producers ask for
        # auto-creation; tansu creates 4 partitions), the old messages and the
        # committed offset are gone and offsets start again at 0.
        assert min(offset_of(m) for m in received) == 0
        assert max(offset_of(m) for m in received) < len(expected)
        metadata = broker.admin_client().list_topics(topic=topic, timeout=5)
        assert len(metadata.topics[topic].partitions) == 4
        lost = consumer.committed([TopicPartition(topic, p) for p in range(4)], timeout=5)
        assert [tp.offset for tp in lost] == [OFFSET_INVALID] * 4
    finally:
        consumer.close()


def test_quirk_idempotent_producer_never_recovers_from_memory_broker_restart(own_broker: KafkaBroker) -> None:
    """The restarted (empty) broker forgets the producer id; librdkafka keeps
    bumping the epoch locally and retrying, every produce fails with
    UNKNOWN_PRODUCER_ID until the message times out."""
    broker = own_broker
    topic = unique("idempotent")
    broker.create_topic(topic)
    producer = Producer(producer_config(broker, **{"enable.idempotence": True, "message.timeout.ms": 3000}))
    produce_all(producer, topic, [(None, b"before", [])])
    broker.restart()
    broker.create_topic(topic)
    log = DeliveryLog()
    producer.produce(topic, value=b"after", on_delivery=log)
    producer.flush(10)
    assert [error.code() for error, _ in log.failed] == [KafkaError._MSG_TIMED_OUT]

    fresh = Producer(producer_config(broker, **{"enable.idempotence": True}))
    assert len(produce_all(fresh, topic, [(None, b"fresh producer", [])]).delivered) == 1


# --------------------------------------------------------------------------- 6. message size


def test_max_message_size_is_a_client_limit_not_a_broker_limit(broker: KafkaBroker) -> None:
    topic = unique("size")
    broker.create_topic(topic)

    default_producer = Producer(producer_config(broker))
    produce_all(default_producer, topic, [(b"k", b"x" * 999_000, [])])
    with pytest.raises(KafkaException) as excinfo:
        default_producer.produce(topic, key=b"k", value=b"x" * 1_000_000)
    error = excinfo.value.args[0]
    assert error.code() == KafkaError.MSG_SIZE_TOO_LARGE
    assert str(error) == (
        'KafkaError{code=MSG_SIZE_TOO_LARGE,val=10,str="Unable to produce message: Broker: Message size too large"}'
    )

    big_producer = Producer(producer_config(broker, **{"message.max.bytes": 10_485_760}))
    sizes = [1_048_576, 2_097_152, 8_000_000]
    produce_all(big_producer, topic, [(b"k", bytes([n % 256]) * size, []) for n, size in enumerate(sizes)])

    consumer = Consumer(consumer_config(broker, unique("size")))  # default fetch sizes
    try:
        consumer.assign([TopicPartition(topic, 0, 1)])
        received = consume_n(consumer, len(sizes))
    finally:
        consumer.close()
    assert [len(value_of(m)) for m in received] == sizes


def test_quirk_topic_max_message_bytes_is_not_enforced(broker: KafkaBroker) -> None:
    topic = unique("topic-limit")
    broker.create_topic(topic, config={"max.message.bytes": "1000"})
    producer = Producer(producer_config(broker))
    log = produce_all(producer, topic, [(None, b"x" * 5000, [])])
    assert offset_of(log.delivered[0]) == 0


# --------------------------------------------------------------------------- auto-creation


def test_producer_auto_creates_unknown_topics_unless_told_not_to(broker: KafkaBroker) -> None:
    created = unique("auto")
    log = produce_all(Producer(producer_config(broker)), created, [(None, b"x", [])])
    assert log.delivered[0].topic() == created
    metadata = broker.admin_client().list_topics(topic=created, timeout=5)
    assert len(metadata.topics[created].partitions) == 4

    missing = unique("missing")
    strict = Producer(
        producer_config(broker, **{"allow.auto.create.topics": False, "message.timeout.ms": 2000})
    )
    failures = DeliveryLog()
    strict.produce(missing, value=b"x", on_delivery=failures)
    strict.flush(10)
    assert [error.code() for error, _ in failures.failed] in (
        [KafkaError._MSG_TIMED_OUT],
        [KafkaError.UNKNOWN_TOPIC_OR_PART],
    )


# --------------------------------------------------------------------------- 7. throughput


def test_consume_throughput(broker: KafkaBroker, capsys: pytest.CaptureFixture[str]) -> None:
    topic = unique("throughput")
    count = 100_000
    broker.create_topic(topic)
    producer = Producer(producer_config(broker, **{"linger.ms": 20, "batch.num.messages": 10_000}))
    payload = b"s" * 100
    started = time.perf_counter()
    for index in range(count):
        while True:
            try:
                producer.produce(topic, key=str(index % 1000).encode(), value=payload)
                break
            except BufferError:
                producer.poll(0.05)
        if index % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    produce_seconds = time.perf_counter() - started

    results: dict[str, float] = {}
    for mode in ("consume", "poll"):
        consumer = Consumer(consumer_config(broker, unique("throughput")))
        try:
            consumer.assign([TopicPartition(topic, 0, 0)])
            received = 0
            started = time.perf_counter()
            deadline = time.monotonic() + 45
            while received < count:
                assert time.monotonic() < deadline, f"{mode}: only {received} of {count} messages"
                if mode == "consume":
                    batch = consumer.consume(num_messages=1000, timeout=1.0)
                    assert all(m.error() is None for m in batch)
                    received += len(batch)
                else:
                    message = consumer.poll(1.0)
                    if message is not None:
                        assert message.error() is None
                        received += 1
            results[mode] = time.perf_counter() - started
        finally:
            consumer.close()

    with capsys.disabled():
        print(
            f"\n[throughput] produced {count} x {len(payload)} B in {produce_seconds:.2f}s "
            f"({count / produce_seconds:,.0f} msg/s); "
            + "; ".join(
                f"{mode}(): {seconds:.2f}s ({count / seconds:,.0f} msg/s)"
                for mode, seconds in results.items()
            )
        )
