"""Every kind of bad message lands in the dead-letter topic, intact and with its reason; good ones keep flowing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyroaring import BitMap

import segments
from ingest.codec import REASONS
from tests.ingest.harness import (
    IngestProcess,
    Raw,
    SetModel,
    free_port,
    new_topics,
    produce,
    read_topic,
    wait_caught_up,
)
from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.timeout(120)


def j(doc: object) -> bytes:
    return json.dumps(doc).encode()


def bin_headers(op: bytes | None, segment: bytes | None, **extra: bytes) -> list[tuple[str, str | bytes | None]]:
    headers: list[tuple[str, str | bytes | None]] = [("encoding", b"roaring")]
    if op is not None:
        headers.append(("op", op))
    if segment is not None:
        headers.append(("segment", segment))
    headers += list(extra.items())
    return headers


#: (reason, key, value, headers)
BAD: list[tuple[str, bytes | None, bytes | None, list[tuple[str, str | bytes | None]]]] = [
    ("bad_json", b"good", b"{not json", [("trace", b"t1")]),
    ("bad_json", b"good", j({"op": "add", "segment": "good"}), []),
    ("unknown_op", b"good", j({"op": "delete", "segment": "good", "ids": [1]}), []),
    ("invalid_segment_name", b"bad-name", j({"op": "add", "segment": "bad-name", "ids": [1]}), []),
    ("key_mismatch", b"other", j({"op": "add", "segment": "good", "ids": [1]}), []),
    ("key_mismatch", None, j({"op": "add", "segment": "good", "ids": [1]}), []),
    ("invalid_user_id", b"good", j({"op": "add", "segment": "good", "ids": [5, 4294967296]}), []),
    ("invalid_user_id", b"good", j({"op": "remove", "segment": "good", "ids": [-3]}), []),
    ("corrupt_bitmap", b"good", b"\x00\x01garbage", bin_headers(b"add", b"good")),
    ("missing_header", b"good", BitMap([1]).serialize(), bin_headers(None, b"good")),
    ("missing_header", b"good", BitMap([1]).serialize(),
     bin_headers(b"replace", b"good", batch=b"x", part=b"0")),
    ("bad_header", b"good", BitMap([1]).serialize(), [("encoding", b"zstd")]),
    ("bad_part", b"good", j({"op": "replace", "segment": "good", "batch": "b", "part": 5, "parts": 2, "ids": []}),
     []),
    ("bad_time", b"good", j({"op": "add", "segment": "good", "ids": [1], "at": "the day before"}), []),
]


def test_bad_messages_go_to_the_dead_letter_topic_while_good_ones_flow(
    broker: KafkaBroker, tmp_path: Path  # noqa: F811
) -> None:
    assert {b[0] for b in BAD} == set(REASONS)
    topics = new_topics(broker, partitions=2)
    store = f"sqlite:///{tmp_path}/segments.db"
    with segments.connect(store) as segs:  # a segment whose stored shard is damaged: writes to it fail
        segs.add("damaged", [1, 2, 3])
        key = next(k for k, _ in segs.store.scan(segs.sets.shard) if k.startswith("damaged/"))
        segs.store.put(segs.sets.shard, key, {"bm": b"\x00garbage", "card": 3})

    messages: list[Raw] = []
    good_ids = iter(range(10_000, 20_000))
    for _reason, bad_key, bad_value, bad_headers in BAD:
        messages.append((b"good", j({"op": "add", "segment": "good", "ids": [next(good_ids)]}), []))
        messages.append((bad_key, bad_value, bad_headers))
        messages.append((b"good2", j({"op": "add", "segment": "good2", "ids": [next(good_ids)]}), []))
    # inconsistent parts of one batch: the second says parts=3 where the first said 2
    messages.append((b"parts", j({"op": "replace", "segment": "parts", "batch": "p", "part": 0, "parts": 2,
                                  "ids": [1]}), []))
    messages.append((b"parts", j({"op": "replace", "segment": "parts", "batch": "p", "part": 1, "parts": 3,
                                  "ids": [2]}), []))
    messages.append((b"parts", j({"op": "replace", "segment": "parts", "batch": "p", "part": 1, "parts": 2,
                                  "ids": [3]}), []))
    # an update the store cannot apply: the segment's stored shard is damaged
    messages.append((b"damaged", j({"op": "add", "segment": "damaged", "ids": [2, 70_000]}), []))
    messages.append((b"good", j({"op": "add", "segment": "good", "ids": [1]}), []))
    delivered = produce(broker, topics.updates, messages)

    port = free_port()
    consumer = IngestProcess(broker, topics, store, tmp_path / "ingest.log", metrics_port=port)
    try:
        wait_caught_up(broker, topics, delivered.ends(), consumer)
        metrics = consumer.metrics()
        assert consumer.alive
    finally:
        assert consumer.stop() == 0

    expected_dead = len(BAD) + 2  # + the inconsistent part + the write to the damaged segment
    dead = read_topic(broker, topics.dlq, expected_dead + 1, timeout=3.0)  # waits: nothing more arrives
    assert len(dead) == expected_dead

    by_source = {}
    for message in dead:
        found = dict(message.headers() or [])
        source = (int(found["source.partition"] or b"-1"), int(found["source.offset"] or b"-1"))
        by_source[source] = message
    produced = {delivered.offsets[i]: messages[i] for i in range(len(messages))}
    reasons = []
    for source, message in by_source.items():
        sent_key, sent_value, sent_headers = produced[source]
        assert message.key() == sent_key and message.value() == sent_value
        got = list(message.headers() or [])
        assert got[: len(sent_headers)] == sent_headers, "original headers are kept, in order"
        named = {name: bytes(v or b"") for name, v in got if not isinstance(v, str)}
        error = named["error"].decode()
        reason = named["error.reason"].decode()
        assert error.startswith(f"{reason}: ") and len(error) > len(reason) + 5
        reasons.append(reason)
    assert sorted(reasons) == sorted([b[0] for b in BAD] + ["bad_part", "corrupt_data"])

    # every good message was applied; the bad ones changed nothing
    model = SetModel()
    model.apply_all(messages, delivered)
    with segments.connect(store) as segs:
        assert segs.names() == ["damaged", "good", "good2", "parts"]
        for name in ("good", "good2"):
            assert set(segs.evaluate(name)) == model.members[name]
        assert set(segs.evaluate("parts")) == {1, 3}
        assert segs.info("damaged").version == 1  # untouched
    dead_by_reason = {k: v for k, v in metrics.items() if k.startswith("segments_ingest_dead_letters_total")}
    assert sum(dead_by_reason.values()) == expected_dead
    assert dead_by_reason['segments_ingest_dead_letters_total{reason="invalid_user_id"}'] == 2
    log = consumer.log()
    assert "Traceback" not in log and log.count("dead letter ") == expected_dead
