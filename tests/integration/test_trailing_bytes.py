"""Roaring bytes with anything after the bitmap are refused at every entry point, and change nothing.

Two bitmaps concatenated (8 IDs, then 70,006: a file of 70,014 IDs that used to
be read as 8) and a bitmap with garbage appended, sent to each real process:
``segments serve`` (PUT / add / remove with ``application/octet-stream``),
``segments ingest`` (binary Kafka messages), ``segments push`` (a ``.roaring``
file) and ``segments admin restore`` (a snapshot line). Each one refuses them
with a precise error; the store and the topic are as they were.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from pyroaring import BitMap

import segments
from segments import bitmap as bm
from tests.ingest.harness import (
    REPO,
    IngestProcess,
    Raw,
    new_topics,
    produce,
    read_topic,
    store_contents,
    wait_caught_up,
)
from tests.support.api_server import start_api_server
from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.timeout(180)

FIRST = BitMap([3, 5, 8, 13, 21, 34, 55, 89])
SECOND = BitMap(range(1_000_000, 1_070_006))
SECOND.run_optimize()
GARBLED = BitMap(range(100, 200_000, 3))
#: label -> (bytes, what a reader that stops at the first bitmap would have taken)
BAD: dict[str, tuple[bytes, BitMap]] = {
    "concatenated": (bm.serialize(FIRST) + bm.serialize(SECOND), FIRST),
    "garbage_appended": (bm.serialize(GARBLED) + b"\x00garbage\n", GARBLED),
}
TRAILING = "follow the end of the bitmap"


def test_bad_bodies_hold_a_valid_bitmap_followed_by_more_bytes() -> None:
    """The precondition of every test below: pyroaring alone accepts a prefix of each body."""
    for label, (body, prefix) in BAD.items():
        assert BitMap.deserialize(body) == prefix, label
        assert len(bm.serialize(prefix)) < len(body), label
    assert len(FIRST) + len(SECOND) == 70_014


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "segments", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def test_http_put_add_remove_refuse_trailing_bytes(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/segments.db"
    with start_api_server(store) as api, httpx.Client(base_url=api.base_url, timeout=30) as client:
        assert client.put("/v1/segments/target", json={"ids": [1, 2, 3, 70_000]}).status_code == 200
        before = client.get("/v1/segments/target").json()
        binary = {"Content-Type": "application/octet-stream"}
        for label, (body, _) in BAD.items():
            for method, path in [
                ("PUT", "/v1/segments/target"),
                ("POST", "/v1/segments/target/add"),
                ("POST", "/v1/segments/target/remove"),
                ("PUT", "/v1/segments/fresh"),
                ("POST", "/v1/segments/fresh/add"),
            ]:
                response = client.request(method, path, content=body, headers=binary)
                print(f"{label:16s} {method:4s} {path:28s} -> {response.status_code} {response.text}")
                assert response.status_code == 400
                error = response.json()["error"]
                assert error["code"] == "invalid_bitmap"
                assert TRAILING in error["message"]
        assert client.get("/v1/segments/target").json() == before
        exported = client.get("/v1/segments/target/export", params={"format": "roaring"})
        assert bm.deserialize(exported.content) == BitMap([1, 2, 3, 70_000])
        assert client.get("/v1/segments/fresh").status_code == 404
        # the same bitmap without the extra bytes is accepted
        whole = client.put("/v1/segments/target", content=bm.serialize(SECOND), headers=binary)
        assert whole.status_code == 200 and whole.json()["cardinality"] == len(SECOND)


def _binary(op: str, segment: str, value: bytes) -> Raw:
    return (segment.encode(), value, [("op", op.encode()), ("segment", segment.encode()),
                                      ("encoding", b"roaring")])


def test_kafka_binary_messages_with_trailing_bytes_are_dead_lettered(
    broker: KafkaBroker, tmp_path: Path  # noqa: F811
) -> None:
    topics = new_topics(broker)
    store = f"sqlite:///{tmp_path}/segments.db"
    messages: list[Raw] = [_binary("add", "target", bm.serialize(BitMap([1, 2, 3])))]
    for body, _ in BAD.values():
        messages += [_binary("add", "target", body), _binary("remove", "target", body),
                     _binary("add", "fresh", body)]
    messages.append(_binary("add", "target", bm.serialize(BitMap([4]))))
    delivered = produce(broker, topics.updates, messages)
    consumer = IngestProcess(broker, topics, store, tmp_path / "ingest.log")
    try:
        wait_caught_up(broker, topics, delivered.ends(), consumer)
        assert consumer.alive
    finally:
        assert consumer.stop() == 0
    bad_count = len(messages) - 2
    dead = read_topic(broker, topics.dlq, bad_count + 1, timeout=3.0)  # waits: nothing more arrives
    assert len(dead) == bad_count
    sent = {delivered.offsets[i]: messages[i] for i in range(len(messages))}
    for message in dead:
        named = {name: bytes(v or b"") for name, v in message.headers() or [] if not isinstance(v, str)}
        source = (int(named["source.partition"]), int(named["source.offset"]))
        print(f"dead letter from offset {source[1]}: {named['error'].decode()}")
        assert named["error.reason"] == b"corrupt_bitmap"
        assert TRAILING in named["error"].decode()
        assert (message.key(), message.value()) == sent[source][:2]
    assert store_contents(store) == {"target": {1, 2, 3, 4}}


def _topic_size(kafka: KafkaBroker, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "watermarks",
                         "broker.address.family": "v4"})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(high)
    finally:
        consumer.close()


def test_push_refuses_a_roaring_file_with_trailing_bytes(broker: KafkaBroker, tmp_path: Path) -> None:  # noqa: F811
    topics = new_topics(broker)
    common = ["--bootstrap-servers", broker.bootstrap_servers, "--topic", topics.updates, "--segment", "target",
              "--op", "add", "-q"]
    for label, (body, _) in BAD.items():
        path = tmp_path / f"{label}.roaring"
        path.write_bytes(body)
        done = _cli("push", *common, "--file", str(path))
        print(f"push {path.name}: exit {done.returncode}: {done.stderr.strip()}")
        assert done.returncode == 2
        assert TRAILING in done.stderr and path.name in done.stderr
    assert _topic_size(broker, topics.updates) == 0
    good = tmp_path / "good.roaring"
    good.write_bytes(bm.serialize(SECOND))
    done = _cli("push", *common, "--file", str(good))
    assert done.returncode == 0, done.stderr
    assert _topic_size(broker, topics.updates) >= 1


def test_admin_restore_refuses_a_snapshot_line_with_trailing_bytes(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/segments.db"
    with segments.connect(store) as segs:
        segs.replace("keep", [1, 2, 3])
    for label, (body, prefix) in BAD.items():
        snapshot = tmp_path / f"{label}.jsonl"
        lines = [
            {"format": "segments-snapshot/1"},
            {"segment": "keep", "version": 1, "cardinality": 2, "roaring": base64.b64encode(
                bm.serialize(BitMap([10, 11]))).decode()},
            # the cardinality is that of the prefix, so only the trailing bytes give the damage away
            {"segment": "other", "version": 1, "cardinality": len(prefix),
             "roaring": base64.b64encode(body).decode()},
        ]
        snapshot.write_text("".join(json.dumps(line) + "\n" for line in lines))
        done = _cli("admin", "restore", "--store", store, str(snapshot))
        print(f"restore {snapshot.name}: exit {done.returncode}: {done.stderr.strip()}")
        assert done.returncode == 2
        assert TRAILING in done.stderr and "line 3" in done.stderr
    assert store_contents(store) == {"keep": {1, 2, 3}}
