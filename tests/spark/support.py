"""What the Spark tests share: the local SparkSession, the consumer, the topic's watermarks, the data.

The tests run the ``pyspark`` wheel in local mode against a real tansu broker
(:func:`tests.support.kafka_broker.start_kafka_broker`) and a ``segments
ingest`` subprocess writing a SQLite store, the way the ingest integration
tests do (:mod:`tests.ingest.harness`). Without Java or pyspark they skip
with a ``missing:`` reason (a failure when ``CI`` is set).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from pyroaring import BitMap

import segments
from segments.bitmap import from_ids
from tests.ingest.harness import IngestProcess, Topics, unique, wait_caught_up, wait_until
from tests.support.kafka_broker import KafkaBroker
from tests.support.require import require

#: Spark settings of every test session: loopback only, no UI, few shuffle partitions.
SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.memory": "2g",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.session.timeZone": "UTC",
}


def spark_environment() -> dict[str, str]:
    """The environment a Spark driver needs here: workers run this Python, Spark binds to loopback."""
    return {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1"}


def require_spark() -> None:
    """Skip (fail in CI) unless Java and pyspark are there, naming what is missing."""
    home = os.environ.get("JAVA_HOME", "")
    java = shutil.which("java") or (home and os.access(os.path.join(home, "bin", "java"), os.X_OK))
    require("java (a JDK or JRE 17 on PATH or JAVA_HOME: apt-get install openjdk-17-jre-headless; "
            "make test-spark installs it)", bool(java))
    require_pyspark()


def require_pyspark() -> None:
    """Skip (fail in CI) unless pyspark and pyarrow can be imported."""
    for module in ("pyspark", "pyarrow"):
        require(f"{module} (pip install -e '.[spark]'; make test-spark installs it)",
                importlib.util.find_spec(module) is not None)


def start_spark(master: str = "local[2]") -> Any:
    """A SparkSession for the tests (callers stop it); the environment must be :func:`spark_environment`."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master).appName("segments-tests")
    for key, value in SPARK_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def high_watermarks(broker: KafkaBroker, topic: str) -> dict[int, int]:
    """The end offset of every partition of a topic."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": unique("watermarks"),
                         "broker.address.family": "v4", "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in sorted(metadata.topics[topic].partitions)}
    finally:
        consumer.close()


def produced(broker: KafkaBroker, topic: str) -> int:
    """A number that grows with every message produced to the topic (the sum of its high watermarks).

    Only for "did anything arrive": tansu's high watermark moves on every
    produce but is not always the next offset; count with :func:`messages_in`.
    """
    return sum(high_watermarks(broker, topic).values())


def messages_in(broker: KafkaBroker, topic: str, idle: float = 1.5) -> list[Message]:
    """Every message of the topic, read from the start until none arrives for ``idle`` seconds."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": unique("reader"),
                         "broker.address.family": "v4", "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.topics[topic].partitions])
        out: list[Message] = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle:
            batch = consumer.consume(num_messages=1000, timeout=0.2)
            for message in batch:
                assert message.error() is None, message.error()
            if batch:
                out.extend(batch)
                quiet_since = time.monotonic()
        return out
    finally:
        consumer.close()


@dataclass
class IngestRun:
    """A ``segments ingest`` subprocess on its own topic and SQLite store."""

    broker: KafkaBroker
    topics: Topics
    store: str
    process: IngestProcess

    def caught_up(self, timeout: float = 120.0) -> None:
        """Wait until the consumer committed everything the topic holds now."""
        ends: dict[int, int] = {}
        for message in messages_in(self.broker, self.topics.updates):
            ends[message.partition()] = max(ends.get(message.partition(), 0), message.offset() + 1)
        wait_caught_up(self.broker, self.topics, ends, self.process, timeout=timeout)

    def wait_for(self, name: str, cardinality: int, timeout: float = 120.0) -> None:
        """Wait until ``name`` is visible in the store with ``cardinality`` members."""
        def visible() -> bool:
            with segments.connect(self.store) as segs:
                return name in segs.names() and segs.info(name).cardinality == cardinality

        wait_until(visible, timeout, f"segment {name!r} with {cardinality} members", self.process)

    def version(self, name: str) -> int:
        with segments.connect(self.store) as segs:
            return segs.info(name).version

    def members(self, name: str) -> BitMap:
        with segments.connect(self.store) as segs:
            return BitMap(segs.evaluate(name))


@contextmanager
def running_consumer(broker: KafkaBroker, directory: Path, partitions: int = 2) -> Iterator[IngestRun]:
    """Topics, a store and a consumer for one test module; the consumer is stopped at the end."""
    from tests.ingest.harness import new_topics

    topics = new_topics(broker, partitions=partitions)
    store = f"sqlite:///{directory}/segments.db"
    process = IngestProcess(broker, topics, store, directory / "ingest.log")
    try:
        yield IngestRun(broker, topics, store, process)
    finally:
        code = process.stop()
        assert code == 0, process.log()[-4000:]


def bitmap_of(values: np.ndarray) -> BitMap:
    """The distinct IDs of an integer array, computed without Spark."""
    return from_ids(values)


def report(capsys: Any, text: str) -> None:
    """Print a measured figure to the terminal even when pytest captures output (``make test-spark``)."""
    with capsys.disabled():
        print(text)
