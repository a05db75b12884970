"""Every message form, through a real broker and a real ``segments ingest`` process, into SQLite.

Messages are written by hand here (JSON text, roaring bytes plus headers),
as a batch job in another language would, and also by ``SegmentProducer``
and ``segments push``. The store must equal the set model; a second
consumer group replaying the whole topic must change nothing, not even a
version; metrics report what happened.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pyroaring import BitMap

import segments
from ingest.producer import SegmentProducer
from tests.ingest.harness import (
    REPO,
    IngestProcess,
    Raw,
    SetModel,
    committed,
    free_port,
    new_topics,
    produce,
    store_contents,
    unique,
    wait_caught_up,
    wait_until,
)
from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.timeout(120)


def j(doc: object) -> bytes:
    return json.dumps(doc).encode()


def roaring(ids: BitMap, op: str, segment: str, **extra: object) -> Raw:
    headers = [("op", op.encode()), ("segment", segment.encode()), ("encoding", b"roaring")]
    headers += [(k, str(v).encode()) for k, v in extra.items()]
    return segment.encode(), ids.serialize(), headers  # type: ignore[return-value]


def test_every_message_form_lands_in_the_store(broker: KafkaBroker, tmp_path: Path) -> None:  # noqa: F811
    topics = new_topics(broker, partitions=3)
    big = BitMap(range(1_000_000, 3_000_000, 3))
    messages: list[Raw] = [
        (b"json_delta", j({"op": "add", "segment": "json_delta", "ids": [1, 2, 3, 70_000]}), []),
        (b"json_delta", j({"op": "remove", "segment": "json_delta", "ids": [2, 999]}), []),
        roaring(big, "add", "bin_delta"),
        roaring(BitMap(range(1_000_000, 2_000_000)), "remove", "bin_delta"),
        (b"json_delta", j({"op": "add", "segment": "json_delta", "ids": [2]}), []),
        # replace in JSON parts, out of order, with a duplicate part
        (b"json_repl", j({"op": "add", "segment": "json_repl", "ids": [5, 6]}), []),
        (b"json_repl", j({"op": "replace", "segment": "json_repl", "batch": "b1", "part": 1, "parts": 2,
                          "ids": [200, 300]}), []),
        (b"json_repl", j({"op": "replace", "segment": "json_repl", "batch": "b1", "part": 1, "parts": 2,
                          "ids": [200, 300]}), []),
        (b"json_repl", j({"op": "add", "segment": "json_repl", "ids": [7]}), []),  # superseded by b1
        (b"json_repl", j({"op": "replace", "segment": "json_repl", "batch": "b1", "part": 0, "parts": 2,
                          "ids": [100]}), []),
        (b"json_repl", j({"op": "remove", "segment": "json_repl", "ids": [100]}), []),
        # replace in binary parts
        roaring(BitMap(range(0, 65536, 2)), "replace", "bin_repl", batch="x", part=0, parts=2),
        roaring(BitMap(range(65536, 65536 * 3, 5)), "replace", "bin_repl", batch="x", part=1, parts=2),
        # a remove from a segment that does not exist creates nothing
        (b"ghost", j({"op": "remove", "segment": "ghost", "ids": [1]}), []),
        # an empty replace empties a segment
        (b"emptied", j({"op": "add", "segment": "emptied", "ids": [1, 2]}), []),
        (b"emptied", j({"op": "replace", "segment": "emptied", "batch": "e", "part": 0, "parts": 1, "ids": []}), []),
    ]
    delivered = produce(broker, topics.updates, messages)

    # the Python producer: small (JSON), large add split into several messages, and a replace in parts
    with SegmentProducer(broker.bootstrap_servers, topic=topics.updates, max_message_bytes=64 * 1024,
                         config={"broker.address.family": "v4"}) as prod:
        assert prod.add("py_small", [10, 20]).messages == 1
        sent = prod.add("py_big", BitMap(range(0, 40 * 65536, 3)))
        assert sent.messages > 5
        prod.remove("py_big", range(0, 65536))
        replaced = prod.replace("py_repl", BitMap(range(0, 30 * 65536, 7)))
        assert replaced.messages > 3 and replaced.batch
    # the command line: a lines file, a CSV column, a .roaring file
    (tmp_path / "ids.txt").write_text("1\n2\n3\n")
    (tmp_path / "ids.csv").write_text("user_id,name\n7,a\n8,b\n")
    (tmp_path / "ids.roaring").write_bytes(BitMap(range(100, 200)).serialize())
    for op, path, extra in [
        ("add", "ids.txt", []),
        ("add", "ids.csv", ["--column", "user_id"]),
        ("replace", "ids.roaring", []),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "segments", "push", "--bootstrap-servers", broker.bootstrap_servers,
             "--topic", topics.updates, "--segment", f"cli_{op}", "--op", op, "--file", str(tmp_path / path),
             "-X", "broker.address.family=v4", "-q", *extra],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert f"{op} cli_{op}:" in result.stdout

    store = f"sqlite:///{tmp_path}/segments.db"
    port = free_port()
    consumer = IngestProcess(broker, topics, store, tmp_path / "ingest.log", metrics_port=port)
    try:
        ends = _ends(broker, topics.updates, topics.partitions)
        wait_caught_up(broker, topics, ends, consumer)
        metrics = consumer.metrics()
    finally:
        assert consumer.stop() == 0
    log = consumer.log()
    assert "leaving the consumer group" in log and "Traceback" not in log

    expected = {
        "json_delta": {1, 2, 3, 70_000},
        "bin_delta": set(big) - set(range(1_000_000, 2_000_000)),
        "json_repl": {200, 300},
        "bin_repl": set(range(0, 65536, 2)) | set(range(65536, 65536 * 3, 5)),
        "emptied": set(),
        "py_small": {10, 20},
        "py_big": set(range(0, 40 * 65536, 3)) - set(range(0, 65536)),
        "py_repl": set(range(0, 30 * 65536, 7)),
        "cli_add": {1, 2, 3, 7, 8},
        "cli_replace": set(range(100, 200)),
    }
    model = SetModel()
    model.apply_all(messages, delivered)
    assert {k: v for k, v in expected.items() if k in model.members} == model.members
    contents = store_contents(store)
    assert contents == expected

    # metrics: messages and IDs applied, no dead letters, lag 0 on every partition
    applied = sum(v for k, v in metrics.items() if k.startswith("segments_ingest_messages_applied_total"))
    assert applied == sum(ends.values()) - 1  # all but the duplicate part
    assert metrics['segments_ingest_ids_applied_total{op="add"}'] > len(big)
    assert not any(k.startswith("segments_ingest_dead_letters_total") for k in metrics)
    lags = {k: v for k, v in metrics.items() if k.startswith("segments_ingest_consumer_lag")}
    assert len(lags) == topics.partitions and set(lags.values()) == {0.0}
    assert metrics['segments_ingest_messages_skipped_total{reason="duplicate_part"}'] == 1
    assert metrics["segments_ingest_batch_seconds_count"] >= 1

    # replaying the whole topic with a new group changes nothing, not even a version
    with segments.connect(store) as segs:
        versions = {i.name: i.version for i in segs.infos()}
    replay = IngestProcess(broker, topics, store, tmp_path / "replay.log", group=unique("replay"))
    try:
        wait_caught_up(broker, topics, ends, replay, group=replay_group(replay))
    finally:
        assert replay.stop() == 0
    with segments.connect(store) as segs:
        assert {i.name: i.version for i in segs.infos()} == versions
    assert store_contents(store) == expected
    assert "applied segment=" not in replay.log()


def replay_group(process: IngestProcess) -> str:
    args = process.process.args
    assert isinstance(args, list)
    return str(args[args.index("--group") + 1])


def _ends(kafka: KafkaBroker, topic: str, partitions: int) -> dict[int, int]:
    """End offsets from a fetch (tansu's ListOffsets answer is unreliable for multi-record batches)."""
    from tests.ingest.harness import read_topic

    consumer_messages = read_topic(kafka, topic, count=10**9, timeout=3.0)
    ends: dict[int, int] = {}
    for message in consumer_messages:
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


def test_sigterm_mid_stream_commits_what_was_applied_and_a_restart_finishes(
    broker: KafkaBroker, tmp_path: Path  # noqa: F811
) -> None:
    topics = new_topics(broker)
    messages: list[Raw] = [
        (f"s{i % 7}".encode(), j({"op": "add" if i % 5 else "remove", "segment": f"s{i % 7}",
                                  "ids": [i, i * 7 + 1]}), [])
        for i in range(20_000)
    ]
    delivered = produce(broker, topics.updates, messages)
    store = f"sqlite:///{tmp_path}/segments.db"
    first = IngestProcess(broker, topics, store, tmp_path / "first.log", extra=["--batch-max-messages", "100"])
    wait_until(lambda: "applied segment=" in first.log(), 60, "a first write", first)
    assert first.stop() == 0
    log = first.log()
    assert "SIGTERM" in log and "leaving the consumer group" in log
    done = committed(broker, topics.group, topics.updates, 1)[0]
    assert 0 < done < len(messages), done  # stopped mid-stream, after committing what it applied
    with segments.connect(store) as segs:
        marks = segs.watermarks([f"s{i}" for i in range(7)], f"{topics.updates}/0")
    assert max(marks.values()) == done - 1  # the in-flight batch was finished and committed
    second = IngestProcess(broker, topics, store, tmp_path / "second.log")
    try:
        wait_caught_up(broker, topics, delivered.ends(), second)
    finally:
        assert second.stop() == 0
    model = SetModel()
    model.apply_all(messages, delivered)
    assert store_contents(store) == model.members
