"""A poison message costs one message: dead letters too large for the dead-letter topic never wedge the consumer.

Issue 10 item 6: a rejected message with a 1.5 MB key or a 2 MB header made
the dead-letter produce fail with ``MSG_SIZE_TOO_LARGE`` (librdkafka refuses
anything over ``message.max.bytes``, 1 MB by default, before it reaches the
broker), and the consumer retried the batch forever. Now the dead letter is
sent again smaller, and one that not even the smallest form fits is counted
as lost; either way the consumer commits and goes on. Also: ``--metrics-port``
listens on loopback unless ``--metrics-host`` says otherwise (item 15).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import segments
from ingest.consumer import IngestConsumer
from ingest.settings import IngestSettings
from segments.storage.base import Bins
from segments.storage.sqlite import SqliteStore
from tests.ingest.harness import (
    FAST_GROUP,
    IngestProcess,
    Raw,
    SetModel,
    committed,
    free_port,
    new_topics,
    produce,
    read_topic,
    store_contents,
    wait_caught_up,
    wait_until,
)
from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.timeout(150)


def add(segment: str, ids: list[int], key: bytes | None = None, headers: list[tuple[str, str | bytes | None]] | None = None) -> Raw:
    return (segment.encode() if key is None else key), json.dumps({"op": "add", "segment": segment, "ids": ids}).encode(), headers or []


def listening(port: int) -> set[str]:
    """Addresses with a TCP socket listening on ``port`` (read from ``/proc/net/tcp``)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, _, port_hex = fields[1].rpartition(":")
        if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_oversized_key_and_header_are_dead_lettered_shrunk_and_the_consumer_moves_on(
    broker: KafkaBroker, tmp_path: Path  # noqa: F811
) -> None:
    topics = new_topics(broker)
    store = f"sqlite:///{tmp_path}/segments.db"
    big_key = b"k" * 1_500_000
    big_header = b"h" * 2_000_000
    messages: list[Raw] = [
        add("good", [1]),
        add("good", [2], key=big_key),  # key_mismatch, with a key the dead-letter topic cannot take
        add("good", [3]),
        (b"good", b"{not json", [("trace", b"t1"), ("blob", big_header)]),  # bad_json with a 2 MB header
        add("good", [4], headers=[("blob", b"v" * 1_500_000)]),  # valid, large headers: applied
        add("other", [5]),
    ]
    delivered = produce(broker, topics.updates, messages, **{"message.max.bytes": 5_000_000})

    port = free_port()
    consumer = IngestProcess(broker, topics, store, tmp_path / "ingest.log", metrics_port=port)
    try:
        wait_caught_up(broker, topics, delivered.ends(), consumer, timeout=60)
        metrics = consumer.metrics()
        bound = listening(port)
        assert consumer.alive
    finally:
        assert consumer.stop() == 0
    print(f"\nmetrics listen on {sorted(bound)}")
    assert bound == {"127.0.0.1"}, "metrics must listen on loopback by default"

    dead = read_topic(broker, topics.dlq, 3, timeout=3.0)  # waits: nothing more arrives
    assert len(dead) == 2
    by_offset = {}
    for message in dead:
        headers = {name: bytes(value or b"") for name, value in message.headers() or []}
        size = len(message.key() or b"") + len(message.value() or b"") + sum(
            len(n) + len(v) for n, v in headers.items()
        )
        print(f"dead letter of offset {headers['source.offset'].decode()}: {size} bytes, "
              f"key {len(message.key() or b'')} B, value {len(message.value() or b'')} B, headers {sorted(headers)}")
        assert size < 1_000_000
        assert headers["source.topic"] == topics.updates.encode() and headers["source.partition"] == b"0"
        reason = headers["error.reason"].decode()
        assert headers["error"].startswith(f"{reason}: ".encode())
        by_offset[int(headers["source.offset"])] = (reason, message, headers)
    offsets = [offset for _, offset in delivered.offsets]
    key_reason, key_letter, key_headers = by_offset[offsets[1]]
    assert key_reason == "key_mismatch"
    assert key_letter.key() == big_key[:1024] and key_letter.value() is None  # cut, and the cut is said
    assert key_headers["error.key_truncated"] == b"1500000 bytes, 1024 kept"
    header_reason, header_letter, header_headers = by_offset[offsets[3]]
    assert header_reason == "bad_json"
    assert "blob" not in header_headers and header_headers["trace"] == b"t1"  # the small header is kept
    assert header_headers["error.headers_dropped"] == b"1" and header_letter.key() == b"good"

    model = SetModel()
    model.apply_all(messages, delivered)
    assert store_contents(store) == model.members == {"good": {1, 3, 4}, "other": {5}}
    dead_total = {k: v for k, v in metrics.items() if k.startswith("segments_ingest_dead_letters_total")}
    lost = {k: v for k, v in metrics.items() if k.startswith("segments_ingest_dead_letters_lost_total")}
    print(f"dead letters {dead_total}, lost {lost}")
    assert dead_total == {'segments_ingest_dead_letters_total{reason="key_mismatch"}': 1.0,
                          'segments_ingest_dead_letters_total{reason="bad_json"}': 1.0}
    assert sum(lost.values()) == 0
    assert sum(v for k, v in metrics.items() if k.startswith("segments_ingest_batch_retries_total")) == 0
    log = consumer.log()
    assert "Traceback" not in log and log.count("(forwarded trimmed: the whole was refused)") == 2


class BrokenSqlite(SqliteStore):
    """Our SQLite store, whose writes of one segment's records fail with an unexpected (non-library) error."""

    def __init__(self, url: str, segment: str, error: str) -> None:
        super().__init__(url)
        self.segment = segment
        self.error = error

    def _check(self, keys: Sequence[str]) -> None:
        if any(key == self.segment or key.startswith(f"{self.segment}/") for key in keys):
            raise RuntimeError(self.error)

    def put(self, set_name: str, key: str, bins: Bins, *, generation: int | None = None) -> int:
        self._check([key])
        return super().put(set_name, key, bins, generation=generation)

    def put_many(self, set_name: str, items: Sequence[tuple[str, Bins]]) -> None:
        self._check([key for key, _ in items])
        super().put_many(set_name, items)


@pytest.fixture()
def running() -> Iterator[list[tuple[IngestConsumer, threading.Thread]]]:
    started: list[tuple[IngestConsumer, threading.Thread]] = []
    yield started
    for consumer, thread in started:
        consumer.stop()
        thread.join(60)


def test_a_dead_letter_refused_even_in_its_smallest_form_is_counted_lost_and_the_batch_commits(
    broker: KafkaBroker, tmp_path: Path, running: list[tuple[IngestConsumer, threading.Thread]]  # noqa: F811
) -> None:
    """The dead-letter producer takes 1,000 bytes at most (librdkafka's smallest ``message.max.bytes``)
    and one segment's write fails with a 2,000-character error: the bare dead letter (error text cut
    to 1 KiB, plus the source coordinates) is still refused, so it is lost, logged and counted."""
    topics = new_topics(broker)
    url = f"sqlite:///{tmp_path}/segments.db"
    settings = IngestSettings(
        bootstrap_servers=broker.bootstrap_servers, topic=topics.updates, dlq_topic=topics.dlq,
        group=topics.group, store=url, backoff_initial=0.05, backoff_max=0.2, batch_max_wait=0.2,
        kafka_options={**FAST_GROUP, "message.max.bytes": "1000"},
    )
    segs = segments.Segments(BrokenSqlite(url, "boom", "unexpected: " + "x" * 2000))
    consumer = IngestConsumer(settings, segs)
    thread = threading.Thread(target=consumer.run, name="consumer")
    thread.start()
    running.append((consumer, thread))

    messages = [add("fine", [1]), add("boom", [2]), add("fine", [3]), (b"fine", b"{not json", [])]
    delivered = produce(broker, topics.updates, messages)
    wait_until(lambda: committed(broker, topics.group, topics.updates, 1)[0] >= delivered.ends()[0], 60,
               "the batch to be committed")
    registry = consumer.metrics.registry
    lost = registry.get_sample_value("segments_ingest_dead_letters_lost_total", {"reason": "apply_failed"})
    sent = registry.get_sample_value("segments_ingest_dead_letters_total", {"reason": "bad_json"})
    retries = sum(s.value for m in registry.collect() if m.name == "segments_ingest_batch_retries" for s in m.samples
                  if s.name.endswith("_total"))
    print(f"\nlost dead letters (apply_failed): {lost}; delivered (bad_json): {sent}; batch retries: {retries}")
    assert lost == 1 and sent == 1 and retries == 0
    assert thread.is_alive()
    assert set(segs.evaluate("fine")) == {1, 3} and "boom" not in segs.names()
    dead = read_topic(broker, topics.dlq, 2, timeout=3.0)
    assert [dict(m.headers() or [])["error.reason"] for m in dead] == [b"bad_json"]
