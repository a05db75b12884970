"""Helpers for the ingest integration tests: the consumer as a real process, producing, offsets, metrics.

The integration tests (``tests/integration/test_ingest_*.py``) run
``python -m segments ingest`` as a subprocess against a tansu broker started
by :func:`tests.support.kafka_broker.start_kafka_broker` and a SQLite (or
Aerospike) store, and compare the store with a set model.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, Message, Producer, TopicPartition

from ingest.codec import Update, decode
from tests.support.kafka_broker import KafkaBroker, start_kafka_broker

REPO = Path(__file__).resolve().parents[2]
Headers = list[tuple[str, str | bytes | None]]
Raw = tuple[bytes | None, bytes | None, Headers]

#: librdkafka settings that make group joins fast against tansu (see the broker self-tests).
FAST_GROUP = {
    "session.timeout.ms": "2000",
    "heartbeat.interval.ms": "500",
    "broker.address.family": "v4",
    "topic.metadata.refresh.interval.ms": "5000",
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    """One broker per test module (a suite-wide fixture: tests/conftest.py loads this module as a plugin)."""
    with start_kafka_broker() as running:
        yield running


@dataclass
class Topics:
    updates: str
    dlq: str
    group: str
    partitions: int


def new_topics(broker: KafkaBroker, partitions: int = 1) -> Topics:
    topics = Topics(unique("updates"), unique("dlq"), unique("group"), partitions)
    broker.create_topic(topics.updates, partitions=partitions)
    broker.create_topic(topics.dlq)
    return topics


def producer(broker: KafkaBroker, **overrides: Any) -> Producer:
    config: dict[str, Any] = {
        "bootstrap.servers": broker.bootstrap_servers,
        "broker.address.family": "v4",
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "message.max.bytes": 2_000_000,
    }
    config.update(overrides)
    return Producer(config)


@dataclass
class Delivered:
    """Where each produced message landed."""

    offsets: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset) in produce order
    failed: list[str] = field(default_factory=list)

    def ends(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for partition, offset in self.offsets:
            out[partition] = max(out.get(partition, 0), offset + 1)
        return out


def produce(broker: KafkaBroker, topic: str, messages: Iterable[Raw], **overrides: Any) -> Delivered:
    """Produce ``(key, value, headers)`` messages in order and wait for all acknowledgements."""
    out = Delivered()
    slots: list[tuple[int, int] | None] = []
    prod = producer(broker, **overrides)

    def report(index: int) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                out.failed.append(str(error))
            else:
                slots[index] = (message.partition(), message.offset())  # type: ignore[assignment]

        return on_delivery

    for key, value, headers in messages:
        slots.append(None)
        callback = report(len(slots) - 1)
        while True:
            try:
                prod.produce(topic, key=key, value=value, headers=headers, on_delivery=callback)
                break
            except BufferError:
                prod.poll(0.05)
        if len(slots) % 5000 == 0:
            prod.poll(0)
    assert prod.flush(60) == 0, "messages left undelivered"
    assert not out.failed, out.failed[:3]
    assert all(s is not None for s in slots)
    out.offsets = [s for s in slots if s is not None]
    return out


def committed(broker: KafkaBroker, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets (-1: none)."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group,
                         "broker.address.family": "v4", "enable.auto.commit": False})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: (-1 if tp.offset == OFFSET_INVALID else tp.offset) for tp in tps}


def read_topic(broker: KafkaBroker, topic: str, count: int, timeout: float = 20.0) -> list[Message]:
    """Read ``count`` messages from partition 0.. of a topic from the beginning."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": unique("reader"),
                         "broker.address.family": "v4", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    metadata = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                assert message.error() is None, message.error()
                out.append(message)
        return out
    finally:
        consumer.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class IngestProcess:
    """``segments ingest`` as a real subprocess; its log goes to a file."""

    def __init__(
        self,
        broker: KafkaBroker,
        topics: Topics,
        store: str,
        log_path: Path,
        *,
        extra: Sequence[str] = (),
        metrics_port: int | None = None,
        group: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        self.metrics_port = metrics_port
        args = [
            sys.executable, "-m", "segments", "ingest",
            "--bootstrap-servers", broker.bootstrap_servers,
            "--topic", topics.updates,
            "--dlq-topic", topics.dlq,
            "--group", group or topics.group,
            "--store", store,
            "--log-level", "debug", "--log-format", "text",
        ]
        for key, value in FAST_GROUP.items():
            args += ["-X", f"{key}={value}"]
        if metrics_port:
            args += ["--metrics-port", str(metrics_port)]
        args += list(extra)
        self._log = log_path.open("ab")
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")}
        environment.update(env or {})
        self.process = subprocess.Popen(args, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=environment)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the consumer finishes its batch, commits and leaves the group."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._log.close()
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self._log.close()

    def metrics(self) -> dict[str, float]:
        """Scrape ``/metrics``: ``{'name{labels}': value}``."""
        assert self.metrics_port
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out


def wait_until(condition: Callable[[], bool], timeout: float, what: str, process: IngestProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and not process.alive:
            raise AssertionError(f"consumer exited ({process.process.returncode}) while waiting for {what}:\n"
                                 + process.log()[-4000:])
        if time.monotonic() > deadline:
            tail = "" if process is None else "\n" + process.log()[-4000:]
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{tail}")
        time.sleep(0.1)


def wait_caught_up(broker: KafkaBroker, topics: Topics, ends: dict[int, int], process: IngestProcess,
                   timeout: float = 60.0, group: str | None = None) -> None:
    """Wait until the group's committed offsets reach the end of every partition."""
    def done() -> bool:
        now = committed(broker, group or topics.group, topics.updates, topics.partitions)
        return all(now.get(p, -1) >= end for p, end in ends.items())

    wait_until(done, timeout, f"committed offsets {ends}", process)


class SetModel:
    """The expected store: every message applied once, in offset order (replace per the staging rules)."""

    def __init__(self) -> None:
        self.members: dict[str, set[int]] = {}
        self.open: dict[str, dict[str, tuple[int, int, dict[int, set[int]]]]] = {}
        self.done: dict[str, set[str]] = {}

    def apply(self, position: tuple[int, int], key: bytes | None, value: bytes | None, headers: Headers) -> None:
        update = decode(key, value, headers)
        if isinstance(update, Update):
            self.apply_update(position[1], update)

    def apply_update(self, offset: int, update: Update) -> None:
        """One decoded message at ``offset`` of its partition (the only oracle of the replace rules)."""
        name, ids = update.segment, set(update.ids)
        if update.op == "add":
            self.members.setdefault(name, set()).update(ids)
        elif update.op == "remove":
            if name in self.members:
                self.members[name].difference_update(ids)
        else:
            assert update.batch is not None and update.part is not None and update.parts is not None
            opened, done = self.open.setdefault(name, {}), self.done.setdefault(name, set())
            if update.batch in done:
                return
            parts, start, got = opened.setdefault(update.batch, (update.parts, offset, {}))
            if parts != update.parts or update.part in got:
                return
            got[update.part] = ids
            if len(got) == parts:
                self.members[name] = set().union(*got.values())
                for batch in [b for b, (_, s, _) in opened.items() if s <= start]:
                    del opened[batch]
                    done.add(batch)

    def apply_all(self, messages: Sequence[Raw], delivered: Delivered) -> None:
        order = sorted(range(len(messages)), key=lambda i: delivered.offsets[i])
        for i in order:
            self.apply(delivered.offsets[i], *messages[i])


def store_contents(url: str) -> dict[str, set[int]]:
    import segments

    with segments.connect(url) as segs:
        return {name: set(segs.evaluate(name)) for name in segs.names()}


def applied_writes(log: str) -> list[dict[str, str]]:
    """The ``applied segment=... version=...`` debug lines of a consumer log, parsed."""
    out = []
    for line in log.splitlines():
        marker = line.find("applied segment=")
        if marker < 0:
            continue
        fields = dict(item.split("=", 1) for item in line[marker + len("applied "):].split() if "=" in item)
        out.append(fields)
    return out


__all__ = [
    "FAST_GROUP",
    "Delivered",
    "IngestProcess",
    "SetModel",
    "Topics",
    "applied_writes",
    "broker",
    "committed",
    "free_port",
    "new_topics",
    "produce",
    "read_topic",
    "store_contents",
    "unique",
    "wait_caught_up",
    "wait_until",
]
