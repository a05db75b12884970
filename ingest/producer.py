"""``SegmentProducer``: what a Python batch job imports to publish segment updates.

>>> with SegmentProducer("kafka:9092") as producer:              # doctest: +SKIP
...     producer.add("premium", [1, 2, 3])
...     producer.remove("premium", numpy_array_of_ids)
...     producer.replace("active_30d", bitmap)                    # any size: split into parts
...     producer.add_keys("premium", ["cust_8812", "cust_0042"])  # string user keys
...     producer.add("paid_bill", [7], at="2026-11-30")           # a windowed segment's bucket

Every call builds the messages of :mod:`ingest.codec` (JSON for a few IDs,
a Roaring bitmap otherwise; JSON ``"keys"`` for string user keys, which the
consumer translates), splits them so each value stays
under ``max_message_bytes``, keys them by segment name and, unless
``wait=False``, waits until Kafka has acknowledged all of them
(``DeliveryError`` otherwise). The producer is idempotent by default, so
retries inside librdkafka never reorder one segment's updates, and it
partitions keys like the Java and KafkaJS clients (``murmur2_random``), so a
segment's updates land in one partition whichever of them sent them.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from segments import bitmap as bm
from segments.names import check_name

from . import codec
from .codec import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TOPIC, Headers, Op, encode, encode_keys

Encoding = Literal["auto", "json", "roaring"]


class DeliveryError(Exception):
    """Kafka did not acknowledge some messages; ``failures`` holds ``(segment, error text)``."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        self.failures = failures
        first = failures[0] if failures else ("?", "?")
        super().__init__(f"{len(failures)} messages were not delivered (first: segment {first[0]!r}: {first[1]})")


@dataclass(frozen=True)
class Sent:
    """What one call published."""

    op: str
    segment: str
    messages: int
    ids: int
    batch: str | None = None


def new_batch_id() -> str:
    """A unique replace batch id: UTC time plus randomness, e.g. ``20240602T101500Z-9f1c2a3b``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


class SegmentProducer:
    """Publishes ``add`` / ``remove`` / ``replace`` updates of segments to Kafka."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str = DEFAULT_TOPIC,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        encoding: Encoding = "auto",
        config: Mapping[str, str | int | float | bool] | None = None,
        delivery_timeout: float = 120.0,
    ) -> None:
        if max_message_bytes < 16 * 1024:
            raise ValueError("max_message_bytes must be at least 16384")
        self.topic = topic
        self.max_message_bytes = max_message_bytes
        self.encoding: Encoding = encoding
        self.delivery_timeout = delivery_timeout
        settings: dict[str, str | int | float | bool] = {
            "bootstrap.servers": bootstrap_servers,
            "client.id": "segments-producer",
            "acks": "all",
            "enable.idempotence": True,
            # librdkafka's default (consistent_random) hashes keys with CRC32, the Java and
            # KafkaJS clients with murmur2: this is the one that matches them.
            "partitioner": "murmur2_random",
            "linger.ms": 20,
            "compression.type": "lz4",
            "message.max.bytes": max(1_000_000, max_message_bytes + 64 * 1024),
            "message.timeout.ms": int(delivery_timeout * 1000),
        }
        settings.update(config or {})
        self._producer = Producer(settings)
        self._failures: list[tuple[str, str]] = []
        self._in_flight = 0

    # -- operations -------------------------------------------------------

    # ``at`` (every method): the moment whose time bucket a windowed segment's update goes to (a
    # datetime, a date, ISO text or epoch seconds; default: when the consumer applies it). The
    # consumer dead-letters an ``at`` on a plain segment, outside the retention or in the future.

    def add(self, segment: str, ids: object, *, at: object | None = None, wait: bool = True) -> Sent:
        """Add IDs to a segment (created if missing)."""
        return self.send("add", segment, ids, at=at, wait=wait)

    def remove(self, segment: str, ids: object, *, at: object | None = None, wait: bool = True) -> Sent:
        """Remove IDs from a segment (a missing segment stays missing)."""
        return self.send("remove", segment, ids, at=at, wait=wait)

    def replace(
        self, segment: str, ids: object, *, batch: str | None = None, at: object | None = None, wait: bool = True
    ) -> Sent:
        """Replace a segment's members, atomically for readers however many parts it takes.

        Resending with the same ``batch`` id after a ``DeliveryError`` is
        safe: the consumer ignores parts it already has.
        """
        return self.send("replace", segment, ids, batch=batch or new_batch_id(), at=at, wait=wait)

    # -- by string user key (see segments.keys; the consumer translates) -------

    def add_keys(self, segment: str, keys: Iterable[str], *, at: object | None = None, wait: bool = True) -> Sent:
        """Add users by key; the consumer gives keys it has never seen new IDs."""
        return self.send_keys("add", segment, keys, at=at, wait=wait)

    def remove_keys(self, segment: str, keys: Iterable[str], *, at: object | None = None, wait: bool = True) -> Sent:
        """Remove users by key; a key the consumer has never seen is in no segment (nothing is allocated)."""
        return self.send_keys("remove", segment, keys, at=at, wait=wait)

    def replace_keys(
        self,
        segment: str,
        keys: Iterable[str],
        *,
        batch: str | None = None,
        at: object | None = None,
        wait: bool = True,
    ) -> Sent:
        """``replace`` by key, in parts under one batch id (see :meth:`replace`)."""
        return self.send_keys("replace", segment, keys, batch=batch or new_batch_id(), at=at, wait=wait)

    def send_keys(
        self,
        op: Op,
        segment: str,
        keys: Iterable[str],
        *,
        batch: str | None = None,
        at: object | None = None,
        wait: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> Sent:
        """Publish one operation by user key as JSON ``"keys"`` messages, each under ``max_message_bytes``.

        Every key is checked before anything is sent (``InvalidUserKey``, code
        ``invalid_user_key``, names the first bad one); duplicates are sent once.
        """
        batch_of_keys = keys if isinstance(keys, (str, bytes)) else list(keys)  # a single string: refused
        messages = encode_keys(op, segment, batch_of_keys, batch=batch, at=at, max_bytes=self.max_message_bytes)
        self.publish(messages, wait=wait, progress=progress)
        return Sent(op, segment, len(messages), sum(m.count for m in messages), batch)

    def send(
        self,
        op: Op,
        segment: str,
        ids: object,
        *,
        batch: str | None = None,
        at: object | None = None,
        wait: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> Sent:
        """Publish one operation; ``progress(n)`` is called with the IDs of each delivered message."""
        check_name(segment)
        bitmap = bm.to_bitmap(ids)
        messages = encode(op, segment, bitmap, batch=batch, encoding=self.encoding, max_bytes=self.max_message_bytes,
                          at=at)
        self.publish(messages, wait=wait, progress=progress)
        return Sent(op, segment, len(messages), len(bitmap), batch)

    def publish(
        self,
        messages: Iterable[codec.Message],
        *,
        wait: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Produce messages already built by :mod:`ingest.codec` (each keyed by its segment name).

        What :meth:`send` does after encoding; for producers that split and
        number the messages themselves (``ingest.spark``: one part per task).
        """
        for message in messages:
            self._produce(message.key.decode("utf-8", "replace"), message.key, message.value, message.headers,
                          message.count, progress)
        if wait:
            self.flush()

    def partitions(self, timeout: float = 10.0) -> int:
        """The topic's partition count from the brokers' metadata.

        A cheap check that the brokers answer with these settings and that the
        topic exists, before a long job starts sending; raises ``KafkaException``
        otherwise (``UNKNOWN_TOPIC_OR_PART`` for a missing topic). It asks for
        every topic's metadata: asking for the one topic would make a broker
        with ``auto.create.topics.enable`` create it.
        """
        metadata = self._producer.list_topics(timeout=timeout)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            problem = "it does not exist" if topic is None else str(topic.error or "it has no partitions")
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART,
                                            f"topic {self.topic!r} is not available on the brokers: {problem}"))
        return len(topic.partitions)

    def _produce(
        self,
        segment: str,
        key: bytes,
        value: bytes,
        headers: Headers,
        count: int,
        progress: Callable[[int], None] | None,
    ) -> None:
        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            self._in_flight -= 1
            if error is not None:
                self._failures.append((segment, str(error)))
            elif progress is not None:
                progress(count)

        while True:
            try:
                self._producer.produce(self.topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
                self._in_flight += 1
                break
            except BufferError:
                self._producer.poll(0.1)
            except KafkaException as exc:
                self._failures.append((segment, str(exc.args[0])))
                break
        self._producer.poll(0)

    # -- delivery ---------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every message so far is acknowledged; raise ``DeliveryError`` for those that failed."""
        left = self._producer.flush(self.delivery_timeout if timeout is None else timeout)
        failures, self._failures = self._failures, []
        if left:
            failures.append(("?", f"{left} messages still waiting for delivery after the timeout"))
        if failures:
            raise DeliveryError(failures)

    @property
    def in_flight(self) -> int:
        """Messages produced and not yet acknowledged (or failed)."""
        return self._in_flight

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> SegmentProducer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._producer.flush(5)


__all__ = ["DeliveryError", "Encoding", "SegmentProducer", "Sent", "new_batch_id"]
