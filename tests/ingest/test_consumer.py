"""The consumer's failure handling, with real (unreachable) Kafka clients and a store that fails on cue.

No broker is needed: the client objects are real confluent-kafka clients
pointed at a closed port, so producing to the dead-letter topic genuinely
fails, and the store is the memory store behind a switch that makes it
unavailable for a while.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from pyroaring import BitMap

import segments
from ingest.batcher import Consumed, Rejected
from ingest.codec import decode
from ingest.consumer import DEAD_LETTER_FORMS, DeadLetterError, IngestConsumer, dead_letter_message
from ingest.settings import IngestSettings
from segments.errors import StorageUnavailable
from segments.storage.base import Bins
from segments.storage.forwarding import ForwardingStore
from segments.storage.memory import MemoryStore


class FlakyStore(ForwardingStore):
    """A memory store that raises ``StorageUnavailable`` on its next ``failures`` calls."""

    def __init__(self) -> None:
        super().__init__(MemoryStore())
        self.url = "memory://flaky"
        self.failures = 0
        self.calls_failed = 0

    def before(self, op: str, set_name: str | None) -> None:
        if op != "close" and self.failures > 0:
            self.failures -= 1
            self.calls_failed += 1
            raise StorageUnavailable("store down (test)")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture()
def settings() -> IngestSettings:
    return IngestSettings(
        bootstrap_servers=f"127.0.0.1:{closed_port()}",
        store="memory://",
        backoff_initial=0.01,
        backoff_max=0.05,
        kafka_options={"message.timeout.ms": "300", "log_level": "0"},
    )


def record(offset: int, key: bytes | None, value: bytes) -> Consumed:
    return Consumed("updates", 0, offset, key, value, [], decode(key, value, []))


def good(offset: int, ids: list[int]) -> Consumed:
    return record(offset, b"s", json.dumps({"op": "add", "segment": "s", "ids": ids}).encode())


def test_an_undeliverable_dead_letter_raises_and_nothing_is_written(settings: IngestSettings) -> None:
    segs = segments.Segments(MemoryStore())
    consumer = IngestConsumer(settings, segs)
    try:
        batch = [good(0, [1]), record(1, b"s", b"{broken"), good(2, [2])]
        started = time.monotonic()
        with pytest.raises(DeadLetterError, match="could not be delivered"):
            consumer._apply(batch, set())
        assert time.monotonic() - started < 20
        assert segs.names() == []  # dead letters go first: nothing after them was written
        # shutting down with the dead-letter topic unreachable: the batch is given up, uncommitted
        for r in batch:
            consumer.batch.add(r, now=0.0)
        consumer.stop()
        assert consumer._apply_until_done(final=True) is None  # given up: nothing to commit
        assert segs.names() == []
        kind = consumer.metrics.retries.labels("dead_letter_delivery")._value.get()
        assert kind == 1
    finally:
        consumer.close()


def test_a_store_outage_is_retried_until_the_batch_is_written(settings: IngestSettings) -> None:
    store = FlakyStore()
    segs = segments.Segments(store)
    consumer = IngestConsumer(settings, segs)
    try:
        for r in [good(0, [1, 2]), good(1, [70_000]), good(2, [3])]:
            consumer.batch.add(r, now=0.0)
        store.failures = 5
        stats = consumer._apply_until_done()
        assert stats is not None and stats.writes == 1
        assert store.calls_failed == 5
        assert set(segs.evaluate("s")) == {1, 2, 3, 70_000}
        assert segs.watermarks(["s"], "updates/0") == {"s": 2}
        errors = consumer.metrics.retries.labels("storage_unavailable")._value.get()
        assert errors == 5
        assert consumer.metrics.store_up._value.get() == 1
    finally:
        consumer.close()


@pytest.mark.parametrize("threads", [1, 4])
def test_a_failure_after_some_segments_were_written_does_not_apply_them_twice(
    settings: IngestSettings, threads: int
) -> None:
    store = FlakyStore()
    segs = segments.Segments(store)
    consumer = IngestConsumer(settings.model_copy(update={"write_threads": threads}), segs)
    try:
        batch = [good(0, [1])] + [
            record(i, f"t{i}".encode(), json.dumps({"op": "add", "segment": f"t{i}", "ids": [i]}).encode())
            for i in range(1, 40)
        ]
        consumer._apply(batch[:1], set())  # s at version 1
        version = segs.info("s").version
        calls = {"n": 0}
        original = store.put

        def put_then_fail(set_name: str, key: str, bins: Bins, *, generation: int | None = None) -> int:
            calls["n"] += 1
            if calls["n"] == 3:  # the store goes down in the middle of the batch
                store.failures = 2
            return original(set_name, key, bins, generation=generation)

        store.put = put_then_fail  # type: ignore[method-assign]
        for r in batch:
            consumer.batch.add(r, now=0.0)
        stats = consumer._apply_until_done()
        assert stats is not None and stats.replayed == 1
        assert segs.info("s").version == version  # replayed, not rewritten
        assert {n: set(segs.evaluate(n)) for n in segs.names()} == {
            "s": {1}, **{f"t{i}": {i} for i in range(1, 40)}
        }
        assert all(segs.info(f"t{i}").version == 1 for i in range(1, 40))
        assert store.calls_failed >= 2
    finally:
        consumer.close()


def test_messages_of_a_revoked_partition_are_left_to_the_next_owner(settings: IngestSettings) -> None:
    from confluent_kafka import TopicPartition

    consumer = IngestConsumer(settings, segments.Segments(MemoryStore()))
    try:
        consumer.batch.add(good(0, [1]), now=0.0)
        consumer.batch.add(Consumed("updates", 1, 0, b"s", b"{}", [], decode(b"s", b"{}", [])), now=0.0)
        consumer._on_assign(consumer.consumer, [TopicPartition("updates", 0), TopicPartition("updates", 1)])
        consumer._on_revoke(consumer.consumer, [TopicPartition("updates", 1)])
        assert [(r.partition, r.offset) for r in consumer.batch.records] == [(0, 0)]
        assert consumer._assigned == {("updates", 0)}
    finally:
        consumer.close()


def test_bitmap_of_the_fold_is_exact_for_large_binary_updates(settings: IngestSettings) -> None:
    segs = segments.Segments(MemoryStore())
    consumer = IngestConsumer(settings, segs)
    try:
        big = BitMap(range(0, 5_000_000, 3))
        headers: list[tuple[str, str | bytes | None]] = [("op", b"add"), ("segment", b"s"), ("encoding", b"roaring")]
        consumer._apply([Consumed("updates", 0, 0, b"s", big.serialize(), headers,
                                  decode(b"s", big.serialize(), headers))], set())
        assert segs.evaluate("s") == big
    finally:
        consumer.close()


def test_each_dead_letter_form_is_smaller_and_keeps_the_error_and_the_source() -> None:
    original: list[tuple[str, str | bytes | None]] = [("trace", b"t1"), ("blob", b"b" * 5000)]
    rec = Consumed("updates", 3, 17, b"k" * 5000, b"v" * 9000, original, decode(b"k", b"{", []))
    reject = Rejected(rec, "key_mismatch", "x" * 3000)
    sizes = {}
    forms = {}
    for step, form in enumerate(DEAD_LETTER_FORMS):
        key, value, headers = dead_letter_message(reject, step)
        named = dict(headers)
        assert named["error.reason"] == b"key_mismatch" and named["source.topic"] == b"updates"
        assert named["source.partition"] == b"3" and named["source.offset"] == b"17"
        assert isinstance(named["error"], bytes) and named["error"].startswith(b"key_mismatch: xxx")
        sizes[form] = len(key or b"") + len(value or b"") + sum(len(n) + len(v or b"") for n, v in headers)
        forms[form] = (key, value, named)
    print(f"\ndead letter bytes per form: {sizes}")
    assert list(sizes.values()) == sorted(sizes.values(), reverse=True) and len(set(sizes.values())) == 4
    key, value, named = forms["whole"]
    assert (key, value) == (rec.key, rec.value) and named["blob"] == b"b" * 5000
    key, value, named = forms["no_value"]
    assert key == rec.key and value is None and "blob" in named and "error.value_dropped" in named
    key, value, named = forms["trimmed"]
    assert key == b"k" * 1024 and value is None and named["trace"] == b"t1" and "blob" not in named
    assert named["error.key_truncated"] == b"5000 bytes, 1024 kept" and named["error.headers_dropped"] == b"1"
    key, value, named = forms["bare"]
    assert key is None and value is None and "trace" not in named and named["error.headers_dropped"] == b"2"
    assert isinstance(named["error"], bytes) and len(named["error"]) == 1024
