"""The project's producers put a segment on the partition the Java and KafkaJS clients choose.

A Java or KafkaJS producer picks ``toPositive(murmur2(key)) % partitions``;
librdkafka's default hashes with CRC32 instead, so without
``partitioner=murmur2_random`` an ``add`` from one and a ``remove`` from the
other land in different partitions and may be applied in either order. The
murmur2 here is written from the Java client's algorithm and checked against
the vectors of Kafka's own ``UtilsTest.testMurmur2``; messages "from a KafkaJS
producer" are produced with the partition it computes, set explicitly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

import segments
from ingest.producer import SegmentProducer
from tests.ingest.harness import (
    REPO,
    IngestProcess,
    new_topics,
    read_topic,
    wait_caught_up,
)
from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.timeout(180)

PARTITIONS = 6
NAMES = ["premium", "active_30d", "churn.risk", "geo:fr", "vip"]
_MASK = 0xFFFFFFFF
_M = 0x5BD1E995


def java_murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` (seed ``0x9747b28c``), as the signed 32-bit int Java returns."""
    h = (0x9747B28C ^ len(data)) & _MASK
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little") * _M & _MASK
        k = (k ^ (k >> 24)) * _M & _MASK
        h = (h * _M & _MASK) ^ k
    tail = data[whole:]
    if tail:
        for shift, byte in reversed(list(enumerate(tail))):
            h ^= byte << (8 * shift)
        h = h * _M & _MASK
    h = (h ^ (h >> 13)) * _M & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def java_partition(key: bytes, partitions: int) -> int:
    """The Java client's (and KafkaJS 2's default) partition of a keyed message."""
    return (java_murmur2(key) & 0x7FFFFFFF) % partitions


def crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's default (``consistent_random``) partition of a keyed message."""
    return zlib.crc32(key) % partitions


@pytest.mark.parametrize(
    "key, expected",
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_the_murmur2_of_this_test_is_the_java_clients(key: bytes, expected: int) -> None:
    assert java_murmur2(key) == expected


def test_the_names_tell_the_two_partitioners_apart() -> None:
    """Precondition: with CRC32 some of these names go elsewhere, so the tests below can fail."""
    differ = [n for n in NAMES if java_partition(n.encode(), PARTITIONS) != crc32_partition(n.encode(), PARTITIONS)]
    print(f"names placed differently by CRC32 over {PARTITIONS} partitions: {differ}")
    assert differ and "premium" in differ


def _kafkajs_style_produce(kafka: KafkaBroker, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    """Produce each message on the partition a Java / KafkaJS producer would choose for its key."""
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "broker.address.family": "v4",
                         "acks": "all", "enable.idempotence": True})
    for key, value in messages:
        producer.produce(topic, key=key, value=value, partition=java_partition(key, PARTITIONS))
    assert producer.flush(30) == 0


def _push(kafka: KafkaBroker, topic: str, op: str, segment: str, ids_file: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "segments", "push", "--bootstrap-servers", kafka.bootstrap_servers,
         "--topic", topic, "--segment", segment, "--op", op, "--file", str(ids_file), "-q",
         "-X", "broker.address.family=v4"],
        cwd=REPO, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    print(f"segments push --op {op} --segment {segment}: {done.stdout.strip()}")


def _json(op: str, segment: str, ids: list[int]) -> bytes:
    return json.dumps({"op": op, "segment": segment, "ids": ids}).encode()


def _ends(kafka: KafkaBroker, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "watermarks",
                         "broker.address.family": "v4"})
    try:
        return {p: int(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
                for p in range(PARTITIONS)}
    finally:
        consumer.close()


def test_push_and_segment_producer_use_the_java_partition(broker: KafkaBroker, tmp_path: Path) -> None:  # noqa: F811
    topics = new_topics(broker, partitions=PARTITIONS)
    _kafkajs_style_produce(broker, topics.updates, [(n.encode(), _json("add", n, [1])) for n in NAMES])
    with SegmentProducer(broker.bootstrap_servers, topic=topics.updates,
                         config={"broker.address.family": "v4"}) as producer:
        for name in NAMES:
            producer.add(name, [2])  # JSON
            producer.add(name, range(1000, 2000))  # roaring
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("3\n")
    for name in NAMES[:2]:
        _push(broker, topics.updates, "add", name, ids_file)
    count = 3 * len(NAMES) + 2
    messages = read_topic(broker, topics.updates, count)
    assert len(messages) == count
    placed: dict[str, set[int]] = {}
    for message in messages:
        key = message.key()
        assert key is not None
        placed.setdefault(key.decode(), set()).add(message.partition())
    print({name: sorted(p) for name, p in placed.items()}, "java:",
          {n: java_partition(n.encode(), PARTITIONS) for n in NAMES})
    assert placed == {n: {java_partition(n.encode(), PARTITIONS)} for n in NAMES}


def test_add_from_a_kafkajs_producer_then_remove_from_push_leaves_the_user_out(
    broker: KafkaBroker, tmp_path: Path  # noqa: F811
) -> None:
    """The issue's scenario: user 7 added by a murmur2 producer, then removed with ``segments push``."""
    topics = new_topics(broker, partitions=PARTITIONS)
    name = "premium"
    _kafkajs_style_produce(broker, topics.updates, [(name.encode(), _json("add", name, [7, 8]))])
    ids_file = tmp_path / "remove.txt"
    ids_file.write_text("7\n")
    _push(broker, topics.updates, "remove", name, ids_file)
    placed = {(m.key(), m.partition()) for m in read_topic(broker, topics.updates, 2)}
    assert placed == {(name.encode(), java_partition(name.encode(), PARTITIONS))}
    store = f"sqlite:///{tmp_path}/segments.db"
    consumer = IngestProcess(broker, topics, store, tmp_path / "ingest.log")
    try:
        wait_caught_up(broker, topics, {p: e for p, e in _ends(broker, topics.updates).items() if e}, consumer)
    finally:
        assert consumer.stop() == 0
    with segments.connect(store) as segs:
        members = set(segs.evaluate(name))
    print(f"{name} after add [7, 8] then remove [7]: {sorted(members)}")
    assert members == {8}
