"""String user keys and time buckets through a real broker and a real ``segments ingest`` process.

Messages are written by hand (JSON with ``"keys"`` and ``"at"``, roaring with an ``at`` header),
by ``SegmentProducer`` (``add_keys`` / ``remove_keys`` / ``replace_keys``, ``at=`` on every
method) and by ``segments push --keys`` / ``--at`` as a subprocess. Bad keys and bad times land
in the dead-letter topic with their reason while everything else flows; keys never seen allocate
nothing. Expected contents are written out here by hand.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyroaring import BitMap

import segments
from ingest.producer import SegmentProducer
from tests.ingest.harness import (
    REPO,
    IngestProcess,
    Raw,
    free_port,
    new_topics,
    produce,
    read_topic,
    wait_caught_up,
)
from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.timeout(240)


def j(doc: object) -> bytes:
    return json.dumps(doc).encode()


def roaring(ids: BitMap, op: str, segment: str, **extra: object) -> Raw:
    headers: list[tuple[str, str | bytes | None]] = [
        ("op", op.encode()), ("segment", segment.encode()), ("encoding", b"roaring"),
    ]
    headers += [(k, str(v).encode()) for k, v in extra.items()]
    return segment.encode(), ids.serialize(), headers


def day(back: int) -> str:
    return (datetime.now(UTC) - timedelta(days=back)).strftime("%Y-%m-%d")


def push(broker: KafkaBroker, topic: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segments", "push", "--bootstrap-servers", broker.bootstrap_servers,
         "--topic", topic, "-X", "broker.address.family=v4", "-q", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )


def dead_letters(broker: KafkaBroker, topic: str, count: int) -> list[tuple[str, str, bytes | None]]:
    """(reason, error text, original value) of the dead letters; waits a little for any extra one."""
    out = []
    for message in read_topic(broker, topic, count + 1, timeout=3.0):
        got = list(message.headers() or [])
        headers = {name: bytes(v or b"") for name, v in got if not isinstance(v, str)}
        out.append((headers["error.reason"].decode(), headers["error"].decode(), message.value()))
    return out


def by_key(segs: segments.Segments, expr: str) -> set[str | None]:
    return set(segs.keys.reverse(list(segs.evaluate(expr))))


def test_keys_on_every_kafka_path(broker: KafkaBroker, tmp_path: Path) -> None:
    topics = new_topics(broker, partitions=2)
    store = f"sqlite:///{tmp_path}/segments.db"
    with segments.connect(store) as segs:
        segs.add_keys("known", ["old_1", "old_2"])  # keys the table has before the consumer starts
    bad_keys: list[object] = ["", "tab\tkey", "x" * 257, 7, None, ["nested"]]
    messages: list[Raw] = [
        (b"json_keys", j({"op": "add", "segment": "json_keys", "keys": ["cust_1", "cust_2", "cust_3", "cust_1"]}), []),
        (b"json_keys", j({"op": "remove", "segment": "json_keys", "keys": ["cust_2", "never_seen_1"]}), []),
        (b"json_keys", j({"op": "add", "segment": "json_keys", "ids": [4_000_000_000]}), []),  # a raw ID: mixed in
        (b"known", j({"op": "add", "segment": "known", "keys": ["old_2", "new_1"]}), []),
        (b"known", j({"op": "remove", "segment": "known", "keys": ["old_1"]}), []),
        # replace in parts by key, out of order, one part with integer IDs from the translator's range
        (b"repl", j({"op": "add", "segment": "repl", "keys": ["gone"]}), []),
        (b"repl", j({"op": "replace", "segment": "repl", "batch": "k1", "part": 1, "parts": 2,
                     "keys": ["r_b", "r_c"]}), []),
        (b"repl", j({"op": "replace", "segment": "repl", "batch": "k1", "part": 0, "parts": 2,
                     "keys": ["r_a"]}), []),
        # a remove of keys never seen from a segment that does not exist creates nothing
        (b"ghost", j({"op": "remove", "segment": "ghost", "keys": ["never_seen_2"]}), []),
    ]
    flow: set[str] = set()  # the good keys sent to "flow"
    for number, bad in enumerate(bad_keys):  # each bad message between two good ones of the same segment
        flow |= {f"before_{number}", f"after_{number}"}
        messages.append((b"flow", j({"op": "add", "segment": "flow", "keys": [f"before_{number}"]}), []))
        messages.append((b"flow", j({"op": "add", "segment": "flow", "keys": ["would_be_new", bad]}), []))
        messages.append((b"flow", j({"op": "add", "segment": "flow", "keys": [f"after_{number}"]}), []))
    messages.append((b"flow", j({"op": "add", "segment": "flow", "keys": "not a list"}), []))
    messages.append((b"flow", j({"op": "add", "segment": "flow", "keys": ["k"], "ids": [1]}), []))
    delivered = produce(broker, topics.updates, messages)

    # the Python producer: split under a small message size, a replace in parts, removes of unknown keys
    many = [f"producer_user_{i:05d}_{'z' * 40}" for i in range(3000)]
    with SegmentProducer(broker.bootstrap_servers, topic=topics.updates, max_message_bytes=16 * 1024,
                         config={"broker.address.family": "v4"}) as prod:
        sent = prod.add_keys("py_keys", many)
        assert sent.messages > 5 and sent.ids == len(many)
        assert prod.remove_keys("py_keys", many[:10] + ["never_seen_3"]).messages == 1
        replaced = prod.replace_keys("py_repl", many[100:2100])
        assert replaced.messages > 3 and replaced.batch
        with pytest.raises(segments.InvalidUserKey):
            prod.add_keys("py_keys", ["fine", "bad\x00"])  # refused before anything is sent
    # the command line: a lines file (exact keys, blank lines skipped), a CSV column by name
    (tmp_path / "keys.txt").write_text("cli 1\n\ncli,2\r\ncli\"3\n")
    (tmp_path / "keys.csv").write_text('user_key,name\n"x,1",a\n"y ""2""",b\n')
    (tmp_path / "bad.txt").write_text("fine\nalso fine\nbad\tkey\n")
    for segment, path, extra in [("cli_lines", "keys.txt", []), ("cli_csv", "keys.csv", ["--column", "user_key"])]:
        result = push(broker, topics.updates, "--segment", segment, "--op", "add", "--keys",
                      "--file", str(tmp_path / path), *extra)
        assert result.returncode == 0, result.stderr
        assert f"add {segment}: " in result.stdout and " keys in 1 messages" in result.stdout
    refused = push(broker, topics.updates, "--segment", "cli_bad", "--op", "add", "--keys",
                   "--file", str(tmp_path / "bad.txt"))
    assert refused.returncode == 2 and "line 3" in refused.stderr and "U+0009" in refused.stderr
    refused = push(broker, topics.updates, "--segment", "cli_bad", "--op", "add", "--keys", "--encoding", "roaring",
                   "--file", str(tmp_path / "keys.txt"))
    assert refused.returncode == 2 and "always sent as JSON" in refused.stderr

    port = free_port()
    consumer = IngestProcess(broker, topics, store, tmp_path / "ingest.log", metrics_port=port)
    try:
        ends = {p: o for p, o in delivered.ends().items()}
        wait_caught_up(broker, topics, _all_ends(broker, topics.updates, topics.partitions, ends), consumer)
        metrics = consumer.metrics()
    finally:
        assert consumer.stop() == 0
    log = consumer.log()
    assert "Traceback" not in log

    dead = dead_letters(broker, topics.dlq, len(bad_keys) + 2)
    assert sorted(r for r, _, _ in dead) == sorted(["invalid_user_key"] * len(bad_keys) + ["bad_json"] * 2)
    assert all(error.startswith(f"{reason}: ") for reason, error, _ in dead)
    assert metrics['segments_ingest_dead_letters_total{reason="invalid_user_key"}'] == len(bad_keys)

    with segments.connect(store) as segs:
        assert "ghost" not in segs.names() and "cli_bad" not in segs.names()
        assert by_key(segs, "json_keys") == {"cust_1", "cust_3", None}  # None: the raw ID is no key's
        assert by_key(segs, "known") == {"old_2", "new_1"}
        assert by_key(segs, "repl") == {"r_a", "r_b", "r_c"}
        assert by_key(segs, "flow") == flow
        assert by_key(segs, "py_keys") == set(many[10:])
        assert by_key(segs, "py_repl") == set(many[100:2100])
        assert by_key(segs, "cli_lines") == {"cli 1", "cli,2", 'cli"3'}
        assert by_key(segs, "cli_csv") == {"x,1", 'y "2"'}
        unknown = ["never_seen_1", "never_seen_2", "never_seen_3", "would_be_new"]
        assert segs.keys.translate(unknown) == [None] * len(unknown)  # removes and refused messages allocated nothing
        report = segs.keys.check()
        sent_keys = {"old_1", "old_2", "new_1", "cust_1", "cust_2", "cust_3", "gone", "r_a", "r_b", "r_c", *flow,
                     *many, "cli 1", "cli,2", 'cli"3', "x,1", 'y "2"'}
        assert report.ok and report.keys == len(sent_keys)


def _all_ends(broker: KafkaBroker, topic: str, partitions: int, known: dict[int, int]) -> dict[int, int]:
    """End offsets of every partition, from a fetch (messages produced by subprocesses too)."""
    ends = dict(known)
    for message in read_topic(broker, topic, count=10**9, timeout=3.0):
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    assert len(ends) <= partitions
    return ends


def test_at_on_every_kafka_path_and_bad_times_are_dead_lettered(broker: KafkaBroker, tmp_path: Path) -> None:
    topics = new_topics(broker)
    store = f"sqlite:///{tmp_path}/segments.db"
    with segments.connect(store) as segs:
        segs.create_windowed("paid", granularity="day", retention=30)
        segs.add("plain", [1])
    future = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    messages: list[Raw] = [
        (b"paid", j({"op": "add", "segment": "paid", "ids": [1, 2], "at": day(3)}), []),
        (b"paid", j({"op": "remove", "segment": "paid", "ids": [1], "at": day(2)}), []),  # another bucket
        (b"paid", j({"op": "add", "segment": "paid", "keys": ["pk_1"], "at": f"{day(2)}T10:00:00Z"}), []),
        roaring(BitMap([10, 70_000]), "add", "paid", at=day(3)),
        roaring(BitMap([2]), "remove", "paid", at=f"{day(3)}T23:00:00+00:00"),
        roaring(BitMap([20, 21]), "replace", "paid", batch="rb", part=0, parts=1, at=day(4)),
        (b"paid", j({"op": "add", "segment": "paid", "ids": [30]}), []),  # no at: the bucket of now
        # bad times: never a silent drop
        (b"paid", j({"op": "add", "segment": "paid", "ids": [99], "at": "last tuesday"}), []),
        roaring(BitMap([99]), "add", "paid", at="2026/11/30"),
        (b"paid", j({"op": "add", "segment": "paid", "ids": [99], "at": day(45)}), []),  # past the retention
        (b"paid", j({"op": "add", "segment": "paid", "keys": ["never_allocated"], "at": future}), []),
        (b"plain", j({"op": "add", "segment": "plain", "ids": [99], "at": day(1)}), []),  # not windowed
        roaring(BitMap([99]), "add", "nowhere", at=day(1)),  # not even a segment
        (b"plain", j({"op": "add", "segment": "plain", "ids": [2]}), []),
    ]
    produce(broker, topics.updates, messages)
    with SegmentProducer(broker.bootstrap_servers, topic=topics.updates, encoding="roaring",
                         config={"broker.address.family": "v4"}) as prod:
        prod.add("paid", [40, 41], at=day(5))
        prod.add_keys("paid", ["pk_2"], at=day(5))
        prod.remove("paid", [41], at=datetime.now(UTC) - timedelta(days=5))
    (tmp_path / "ids.txt").write_text("50\n51\n")
    (tmp_path / "keys.txt").write_text("pk_3\n")
    for args in (["--file", str(tmp_path / "ids.txt")], ["--keys", "--file", str(tmp_path / "keys.txt")]):
        result = push(broker, topics.updates, "--segment", "paid", "--op", "add", "--at", day(6), *args)
        assert result.returncode == 0, result.stderr
    refused = push(broker, topics.updates, "--segment", "paid", "--op", "add", "--at", "soon",
                   "--file", str(tmp_path / "ids.txt"))
    assert refused.returncode == 2 and "--at" in refused.stderr and "bad_time" not in refused.stdout

    consumer = IngestProcess(broker, topics, store, tmp_path / "ingest.log")
    try:
        wait_caught_up(broker, topics, _all_ends(broker, topics.updates, 1, {}), consumer)
    finally:
        assert consumer.stop() == 0
    assert "Traceback" not in consumer.log()
    dead = dead_letters(broker, topics.dlq, 6)
    assert [r for r, _, _ in dead] == ["bad_time"] * 6
    errors = " | ".join(e for _, e, _ in dead)
    for says in ("last tuesday", "2026/11/30", "outside the retention", "in the future", "not windowed"):
        assert says in errors, says

    with segments.connect(store) as segs:
        key = dict(zip(["pk_1", "pk_2", "pk_3"], segs.keys.translate(["pk_1", "pk_2", "pk_3"]), strict=True))
        assert set(segs.evaluate(f"paid[{day(3)}]")) == {1, 10, 70_000}
        assert set(segs.evaluate(f"paid[{day(2)}]")) == {key["pk_1"]}
        assert set(segs.evaluate(f"paid[{day(4)}]")) == {20, 21}
        assert set(segs.evaluate(f"paid[{day(5)}]")) == {40, key["pk_2"]}
        assert set(segs.evaluate(f"paid[{day(6)}]")) == {50, 51, key["pk_3"]}
        assert set(segs.evaluate("paid[1d]")) == {30}
        assert 99 not in segs.evaluate("paid") and set(segs.evaluate("plain")) == {1, 2}
        assert "nowhere" not in segs.names() and segs.keys.translate(["never_allocated"]) == [None]
