"""The ingest consumer: poll -> decode -> batch -> plan -> write -> dead letters -> commit.

confluent-kafka with ``enable.auto.commit=False``. One flush of a batch:

1. read every touched segment's watermark for the message's source
   (``topic/partition``) and drop what is at or below it (applied before);
2. load the staging state of segments with replace parts and fold the rest
   (:mod:`ingest.batcher`);
3. send undecodable or inconsistent messages to the dead-letter topic and
   wait for their delivery;
4. per segment: write the segment once through
   :meth:`segments.StagingStore.apply` (``apply`` / ``replace_from`` with
   ``source`` and ``position``, which the store skips if already recorded);
5. commit the next offset of every partition in the batch.

What a store error does is decided by :func:`ingest.sink.handling` from the
error's fault, and nothing else:

* transient or capacity (``StorageUnavailable``, ``Conflict``,
  ``StorageFull``): nothing is committed, the assigned partitions are paused
  (the consumer keeps polling so it stays in the group), and the same batch
  is retried with capped exponential backoff until it goes through; a
  dead-letter topic that cannot be reached is retried the same way;
* operator (``StorageMisconfigured``): the consumer stops with a fatal log
  line, commits nothing, and ``segments ingest`` exits with status 3;
* data (``CorruptSegment``) of one segment, a caller error, or an unexpected
  exception of one segment's write: the messages of that segment in this
  batch go to the dead-letter topic (reason = the error's code,
  ``apply_failed`` for a bug) and the rest of the batch goes on.

A valid message is never dead-lettered because of a store problem.

A dead letter the topic refuses (too large: a 1.5 MB key, a 2 MB header) is
sent again smaller, step by step (:data:`DEAD_LETTER_FORMS`), always with
the error and the source coordinates; if even the smallest form is refused,
it is logged, counted in ``segments_ingest_dead_letters_lost_total`` and the
consumer moves on: a poison message never holds the partition.

Exactly-once effect: a message is applied at most once because every write
records its position and later replays of it are dropped in step 1; and
at least once because offsets are committed only after step 4.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from confluent_kafka import (
    OFFSET_INVALID,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from segments import PartOutcome, Segments, SegmentsError
from segments.logs import logging_context

from .batcher import Batch, Consumed, RawHeaders, Rejected, SegmentWork
from .codec import decode
from .metrics import IngestMetrics
from .settings import IngestSettings
from .sink import Handling, Sink, Written, handling, reason

log = logging.getLogger("ingest.consumer")

TopicPart = tuple[str, int]


class DeadLetterError(Exception):
    """Messages could not be delivered to the dead-letter topic (retried; nothing is committed)."""


class FatalStoreError(Exception):
    """The store refuses this consumer's work until the operator acts (an ``OPERATOR`` fault): stop.

    Nothing of the batch in flight is committed; ``error`` is the store's error.
    """

    def __init__(self, error: SegmentsError) -> None:
        super().__init__(f"{error.code}: {error}")
        self.error = error


#: What a dead letter forwards of the original message, step by step: each refusal of a dead letter
#: as too large (or otherwise unacceptable) sends it again in the next form. Every form carries
#: ``error``, ``error.reason``, ``source.topic``, ``source.partition`` and ``source.offset``.
DEAD_LETTER_FORMS: Final[tuple[str, ...]] = (
    "whole",  # the original key, value and headers
    "no_value",  # the value dropped
    "trimmed",  # no value; the key cut to 1 KiB; original headers kept only while small
    "bare",  # nothing of the original; the error text cut to 1 KiB
)
#: Kafka errors that refuse one message (retrying it unchanged fails again), as opposed to an outage.
REFUSALS: Final[frozenset[int]] = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_MSG,  # CORRUPT_MESSAGE: e.g. no key on a compacted topic
})
_KEY_KEPT = 1024
_HEADER_KEPT = 1024
_HEADERS_KEPT = 16 * 1024
_ERROR_KEPT = 1024


@dataclass
class FlushStats:
    messages: int = 0
    writes: int = 0
    dead_letters: int = 0
    replayed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def consumer_config(settings: IngestSettings) -> dict[str, str | int | float | bool]:
    config: dict[str, str | int | float | bool] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": settings.group,
        "client.id": "segments-ingest",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "allow.auto.create.topics": False,
    }
    config.update(settings.kafka_options)
    return config


def dead_letter_config(settings: IngestSettings) -> dict[str, str | int | float | bool]:
    config: dict[str, str | int | float | bool] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": "segments-ingest-dlq",
        "acks": "all",
        "partitioner": "murmur2_random",  # like every producer of the project (the Java client's)
        "linger.ms": 5,
        "message.timeout.ms": 30_000,
    }
    group_only = {"group.id", "session.timeout.ms", "heartbeat.interval.ms", "max.poll.interval.ms",
                  "auto.offset.reset", "enable.auto.commit", "enable.auto.offset.store",
                  "allow.auto.create.topics", "partition.assignment.strategy", "group.instance.id",
                  "fetch.min.bytes", "fetch.wait.max.ms", "max.partition.fetch.bytes", "isolation.level"}
    config.update({k: v for k, v in settings.kafka_options.items() if k not in group_only})
    return config


class IngestConsumer:
    """Consumes segment updates into a ``Segments`` store until :meth:`stop` is called."""

    def __init__(
        self,
        settings: IngestSettings,
        segs: Segments,
        metrics: IngestMetrics | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.segs = segs
        self.sink = Sink(segs)
        threads = settings.write_threads or (8 if segs.store.url.startswith("aerospike") else 1)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ingest-write") if threads > 1 else None
        self.metrics = metrics if metrics is not None else IngestMetrics()
        self.clock = clock
        # librdkafka's own messages go through logging (JSON like every other line), not raw stderr.
        self.consumer = Consumer({**consumer_config(settings), "logger": logging.getLogger("ingest.kafka")})
        self.dlq = Producer({**dead_letter_config(settings), "logger": logging.getLogger("ingest.kafka.dlq")})
        self.batch = Batch(settings.batch_max_messages, settings.batch_max_ids, settings.batch_max_wait)
        self._stop = threading.Event()
        self._assigned: set[TopicPart] = set()
        self._held: list[Consumed] = []
        #: the last poll returned less than it asked for: nothing more is waiting locally
        self._drained = True
        self._committed: dict[TopicPart, int] = {}
        self._lag_at = 0.0
        self._summary_at = clock()
        self._totals = FlushStats()

    # -- lifecycle --------------------------------------------------------

    def stop(self) -> None:
        """Finish the batch in flight, commit it and leave the group (safe from signal handlers)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        self.consumer.subscribe(
            [self.settings.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        log.info(
            "consuming %s (group %s) into %s; dead letters to %s",
            self.settings.topic, self.settings.group, self.segs.store.url, self.settings.dlq_topic,
        )
        try:
            swept = self.sink.staging.sweep()
            if swept:
                log.info("removed %d staged parts of finished replace batches", swept)
        except SegmentsError as exc:
            log.warning("could not tidy the replace staging area: %s", exc)
        try:
            while not self.stopping:
                self._poll()
                if self.batch.due(self.clock(), drained=self._drained):
                    self._flush()
                self._housekeeping()
            if self.batch.records:
                self._flush(final=True)
        finally:
            log.info("leaving the consumer group")
            self.close()
            self._log_summary(force=True)

    def close(self) -> None:
        """Leave the group and release the clients and write threads (``run`` does it on the way out)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self.consumer.close()
        self.dlq.flush(10)

    # -- polling ----------------------------------------------------------

    def _poll(self) -> None:
        if self._held:
            for record in self._held:
                self.batch.add(record, self.clock())
            self._held = []
            if self.batch.full:
                return
        now = self.clock()
        timeout = min(1.0, self.batch.max_wait)
        if self.batch.started is not None:
            timeout = max(0.0, min(timeout, self.batch.started + self.batch.max_wait - now))
        room = max(1, min(10_000, self.batch.max_messages - len(self.batch.records)))
        # a batch's age counts from the moment we started waiting for its first message
        messages = self.consumer.consume(num_messages=room, timeout=timeout)
        self._drained = len(messages) < room
        for message in messages:
            consumed = self._record(message)
            if consumed is not None:
                self.batch.add(consumed, now)

    def _record(self, message: Message) -> Consumed | None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer: %s", error)
            return None
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        key, value = message.key(), message.value()
        headers = _raw_headers(message.headers())
        kind, stamp = message.timestamp()
        timestamp = stamp if kind != TIMESTAMP_NOT_AVAILABLE and stamp is not None and stamp > 0 else None
        return Consumed(topic, partition, offset, key, value, headers, decode(key, value, headers), timestamp)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        parts = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned |= parts
        for tp in parts:
            self._committed.pop(tp, None)
        log.info("assigned %s", _show(parts))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned -= revoked
        dropped = self.batch.drop_partitions(revoked)
        held = len(self._held)
        self._held = [r for r in self._held if (r.topic, r.partition) not in revoked]
        dropped += held - len(self._held)
        for topic, partition in revoked:
            self._committed.pop((topic, partition), None)
            self.metrics.forget_partition(topic, partition)
        log.info("revoked %s%s", _show(revoked),
                 f" ({dropped} uncommitted messages left to the next owner)" if dropped else "")

    # -- flushing ---------------------------------------------------------

    def _flush(self, *, final: bool = False) -> None:
        """Apply the batch (retrying through outages), then commit it."""
        started = self.clock()
        size = len(self.batch.records)
        with logging_context(batch=_batch_id(self.batch.records)):
            self._flush_in_context(final, started, size)

    def _flush_in_context(self, final: bool, started: float, size: int) -> None:
        try:
            stats = self._apply_until_done(final=final)
            if stats is not None and self.batch.records:
                self._commit(self.batch.records)
                self._account(stats)
        finally:
            self.batch.clear()
        elapsed = self.clock() - started
        self.metrics.batch_seconds.observe(elapsed)
        self.metrics.batch_messages.observe(size)
        log.debug("batch of %d messages done in %.3fs", size, elapsed)

    def _apply_until_done(self, *, final: bool = False) -> FlushStats | None:
        """Apply the batch, retrying transient failures with capped backoff while the partitions are paused.

        Returns ``None`` when the batch was given up (stopping during an
        outage): nothing of it may be committed. Raises
        :class:`FatalStoreError` when the store needs the operator.
        """
        delivered: set[tuple[str, int, int]] = set()
        written: set[tuple[str, str]] = set()
        attempt = 0
        paused = False
        try:
            while True:
                try:
                    stats = self._apply(self.batch.records, delivered, written)
                except (SegmentsError, DeadLetterError) as exc:
                    if isinstance(exc, SegmentsError):
                        if handling(exc) is Handling.STOP:
                            log.critical(
                                "fatal: the store refuses this consumer's work until the operator acts (%s: %s); "
                                "stopping without committing the batch of %d messages",
                                exc.code, exc, len(self.batch.records),
                            )
                            raise FatalStoreError(exc) from exc
                        kind = exc.code
                        self.metrics.store_up.set(0)
                    else:
                        kind = "dead_letter_delivery"
                    self.metrics.retries.labels(kind).inc()
                    if final or self.stopping:
                        log.warning("stopping with an unapplied batch of %d messages (%s): nothing of it is "
                                    "committed; it will be consumed again", len(self.batch.records), exc)
                        return None
                    delay = min(self.settings.backoff_max, self.settings.backoff_initial * 2**attempt)
                    delay *= random.uniform(0.5, 1.0)
                    log.warning("batch of %d messages failed (%s: %s); retrying in %.1fs (attempt %d)",
                                len(self.batch.records), type(exc).__name__, exc, delay, attempt + 1)
                    if not paused:
                        paused = self._pause()
                    self._wait(delay)  # rebalance callbacks may drop revoked partitions from the batch
                    attempt += 1
                    continue
                self.metrics.store_up.set(1)
                return stats
        finally:
            if paused:
                self._resume()

    def _pause(self) -> bool:
        try:
            parts = self.consumer.assignment()
            if parts:
                self.consumer.pause(parts)
        except KafkaException as exc:
            log.warning("could not pause partitions: %s", exc)
        return True

    def _resume(self) -> None:
        try:
            parts = self.consumer.assignment()
            if parts:
                self.consumer.resume(parts)
        except KafkaException as exc:
            log.warning("could not resume partitions: %s", exc)

    def _wait(self, seconds: float) -> None:
        """Sleep while serving the group protocol; keep any message that still arrives for later."""
        deadline = self.clock() + seconds
        while not self.stopping:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return
            messages = self.consumer.consume(num_messages=1000, timeout=min(0.25, remaining))
            for message in messages:
                record = self._record(message)
                if record is not None:
                    self._held.append(record)
            if messages:  # a rebalance handed out unpaused partitions: pause them too
                self._pause()

    def _commit(self, records: Sequence[Consumed]) -> None:
        offsets: dict[TopicPart, int] = {}
        for r in records:
            tp = (r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        if not offsets:
            return
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())], asynchronous=False
            )
        except KafkaException as exc:
            log.warning("offset commit failed (%s): these messages will be consumed again and skipped as replays", exc)
            return
        self.metrics.commits.inc()
        for (topic, partition), offset in offsets.items():
            self._committed[(topic, partition)] = offset
            self.metrics.committed.labels(topic, str(partition)).set(offset)
        self._update_lag()

    # -- one attempt ------------------------------------------------------

    def _apply(
        self,
        records: Sequence[Consumed],
        delivered: set[tuple[str, int, int]],
        written: set[tuple[str, str]] | None = None,
    ) -> FlushStats:
        """One attempt at a batch. ``delivered`` (dead letters) and ``written`` ((segment, source)
        pairs) carry over between attempts, so a retry neither resends nor counts anything twice.

        Raises the first store error to retry or stop on (:func:`~ingest.sink.handling`); the
        messages of segments whose write failed otherwise are dead-lettered only once no such
        error is left, so a retried batch dead-letters nothing it could still apply.
        """
        written = set() if written is None else written
        stats = FlushStats(messages=len(records))
        work_plan = self.sink.prepare(records)
        stats.replayed = sum(n for key, n in work_plan.replayed.items() if key not in written)
        stats.dead_letters += self._dead_letter(work_plan.rejected, delivered)
        failed: list[tuple[SegmentWork, BaseException]] = []
        for work, result in self._write_all(work_plan.work):
            if isinstance(result, BaseException):
                failed.append((work, result))
            else:
                self._written(work, result, stats)
                if result.applied:
                    written.add((work.segment, work.source))
        for wanted in (Handling.STOP, Handling.RETRY):
            for _work, exc in failed:
                if handling(exc) is wanted:
                    raise exc
        for work, exc in failed:
            stats.dead_letters += self._write_failed(work, exc, delivered)
        return stats

    def _write_all(self, works: Sequence[SegmentWork]) -> list[tuple[SegmentWork, Written | BaseException]]:
        """Write every segment, several at once on ``write_threads`` threads; one segment's work stays in order."""
        by_segment: dict[str, list[SegmentWork]] = {}
        for work in works:
            by_segment.setdefault(work.segment, []).append(work)
        if self._pool is None or len(by_segment) < 2:
            return [pair for chain in by_segment.values() for pair in self._write_chain(chain)]
        futures = [self._pool.submit(self._write_chain, chain) for chain in by_segment.values()]
        return [pair for future in futures for pair in future.result()]

    def _write_chain(self, chain: Sequence[SegmentWork]) -> list[tuple[SegmentWork, Written | BaseException]]:
        out: list[tuple[SegmentWork, Written | BaseException]] = []
        for work in chain:
            try:
                out.append((work, self.sink.write(work)))
            except Exception as exc:  # noqa: BLE001 - sorted out by the caller
                out.append((work, exc))
                if handling(exc) is not Handling.DEAD_LETTER:
                    break  # the rest of this segment waits for the retry, in order
        return out

    def _write_failed(self, work: SegmentWork, exc: BaseException, delivered: set[tuple[str, int, int]]) -> int:
        """An error of one segment's data or messages: dead-letter them, go on with the others."""
        if isinstance(exc, SegmentsError):
            log.error("segment %r: cannot apply %d messages: %s", work.segment, len(work.records), exc)
        else:
            log.error("segment %r: unexpected error applying %d messages", work.segment, len(work.records),
                      exc_info=exc)
        rejects = [
            Rejected(r, reason(exc), f"applying to segment {work.segment!r} failed: {exc}") for r in work.records
        ]
        return self._dead_letter(rejects, delivered)

    def _written(self, work: SegmentWork, result: Written, stats: FlushStats) -> None:
        if result.applied:
            stats.writes += 1
            self.metrics.writes.inc()
        for op, count in work.applied.items():
            self.metrics.messages.labels(op).inc(count)
            self.metrics.ids.labels(op).inc(work.ids.get(op, 0))
        for kind, count in work.parts.items():
            if kind == PartOutcome.DUPLICATE:
                stats.skipped["duplicate_part"] = stats.skipped.get("duplicate_part", 0) + count
            elif kind == PartOutcome.STALE:
                stats.skipped["stale_batch"] = stats.skipped.get("stale_batch", 0) + count

    # -- dead letters -----------------------------------------------------

    def _dead_letter(self, rejected: Sequence[Rejected], delivered: set[tuple[str, int, int]]) -> int:
        """Produce the rejects to the dead-letter topic and wait; raise ``DeadLetterError`` if any failed.

        A reject the topic refuses (:data:`REFUSALS`) is sent again in the next
        of :data:`DEAD_LETTER_FORMS`; one refused even in the last form is
        logged, counted as lost, and treated as handled (the batch can be
        committed). Any other failure (the topic cannot be reached) fails the
        attempt. Returns the number of dead letters delivered.
        """
        pending = [r for r in rejected if _ident(r) not in delivered]
        sent = 0
        form: dict[tuple[str, int, int], int] = {}
        while pending:
            results: dict[tuple[str, int, int], KafkaError | None] = {}
            for reject in pending:
                self._produce_dead_letter(reject, form.get(_ident(reject), 0), results)
            self.dlq.flush(30)
            retry: list[Rejected] = []
            failed: list[str] = []
            for reject in pending:
                ident = _ident(reject)
                step = form.get(ident, 0)
                error = results.get(ident, KafkaError(KafkaError._MSG_TIMED_OUT))
                if error is None:
                    delivered.add(ident)
                    sent += 1
                    self.metrics.dead_letters.labels(reject.reason).inc()
                    shrunk = "" if step == 0 else f" (forwarded {DEAD_LETTER_FORMS[step]}: the whole was refused)"
                    log.warning("dead letter %s/%d@%d%s: %s: %s", *ident, shrunk, reject.reason, reject.message)
                elif error.code() not in REFUSALS:
                    failed.append(f"{ident[0]}/{ident[1]}@{ident[2]}: {error}")
                elif step + 1 < len(DEAD_LETTER_FORMS):
                    form[ident] = step + 1
                    retry.append(reject)
                else:
                    delivered.add(ident)  # handled: a retried batch does not try again
                    self.metrics.dead_letters_lost.labels(reject.reason).inc()
                    log.error("dead letter LOST %s/%d@%d: %s refused even its smallest form (%s); the message "
                              "is skipped, read it at its source offset: %s: %s", *ident, self.settings.dlq_topic,
                              error, reject.reason, reject.message)
            if failed:
                raise DeadLetterError(
                    f"{len(failed)} messages could not be delivered to {self.settings.dlq_topic}: {failed[0]}"
                )
            pending = retry
        return sent

    def _produce_dead_letter(
        self, reject: Rejected, step: int, results: dict[tuple[str, int, int], KafkaError | None]
    ) -> None:
        ident = _ident(reject)
        key, value, headers = dead_letter_message(reject, step)

        def on_delivery(error: KafkaError | None, _msg: Message) -> None:
            results[ident] = error

        while True:
            try:
                self.dlq.produce(self.settings.dlq_topic, key=key, value=value, headers=headers,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                self.dlq.poll(0.1)
            except KafkaException as exc:
                results[ident] = exc.args[0]
                break
        self.dlq.poll(0)

    # -- housekeeping -----------------------------------------------------

    def _account(self, stats: FlushStats) -> None:
        if stats.replayed:
            self.metrics.skipped.labels("replayed").inc(stats.replayed)
        for why, count in stats.skipped.items():
            self.metrics.skipped.labels(why).inc(count)
        totals = self._totals
        totals.messages += stats.messages
        totals.writes += stats.writes
        totals.dead_letters += stats.dead_letters
        totals.replayed += stats.replayed

    def _housekeeping(self) -> None:
        now = self.clock()
        if now - self._lag_at >= 5.0:
            self._update_lag()
        self._log_summary()

    def _update_lag(self) -> None:
        self._lag_at = self.clock()
        unknown = [TopicPartition(t, p) for t, p in sorted(self._assigned) if (t, p) not in self._committed]
        if unknown:
            try:
                for tp in self.consumer.committed(unknown, timeout=2.0):
                    if tp.offset != OFFSET_INVALID and tp.offset >= 0:
                        self._committed[(tp.topic, tp.partition)] = tp.offset
            except KafkaException as exc:
                log.debug("cannot read committed offsets: %s", exc)
        for topic, partition in sorted(self._assigned):
            try:
                low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if high is None or high < 0:
                continue
            committed = self._committed.get((topic, partition), low if low is not None and low >= 0 else 0)
            self.metrics.lag.labels(topic, str(partition)).set(max(0, high - committed))

    def _log_summary(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._summary_at < 30.0:
            return
        self._summary_at = now
        t = self._totals
        log.info("so far: %d messages, %d segment writes, %d dead letters, %d replays skipped",
                 t.messages, t.writes, t.dead_letters, t.replayed)


def dead_letter_message(reject: Rejected, step: int = 0) -> tuple[bytes | None, bytes | None, RawHeaders]:
    """Key, value and headers of a reject's dead letter in form ``DEAD_LETTER_FORMS[step]``."""
    rec = reject.record
    form = DEAD_LETTER_FORMS[step]
    error = f"{reject.reason}: {reject.message}".encode()
    key, value = rec.key, rec.value
    original: RawHeaders = list(rec.headers)
    notes: RawHeaders = []
    if form != "whole" and value is not None:
        value = None
        notes.append(("error.value_dropped", f"{len(rec.value or b'')} bytes; read it at source.offset".encode()))
    if form in ("trimmed", "bare"):
        limit = _KEY_KEPT if form == "trimmed" else 0
        if key is not None and len(key) > limit:
            key = key[:limit] or None
            notes.append(("error.key_truncated", f"{len(rec.key or b'')} bytes, {limit} kept".encode()))
        budget = _HEADERS_KEPT if form == "trimmed" else 0
        kept_headers: RawHeaders = []
        for name, raw in original:
            size = len(name) + len(raw or b"")
            if size <= _HEADER_KEPT and size <= budget:
                kept_headers.append((name, raw))
                budget -= size
        if len(kept_headers) < len(original):
            notes.append(("error.headers_dropped", str(len(original) - len(kept_headers)).encode()))
        original = kept_headers
    if form == "bare" and len(error) > _ERROR_KEPT:
        error = error[:_ERROR_KEPT]
    headers: RawHeaders = [
        *original,
        ("error", error),
        ("error.reason", reject.reason.encode()),
        ("source.topic", rec.topic.encode()),
        ("source.partition", str(rec.partition).encode()),
        ("source.offset", str(rec.offset).encode()),
        *notes,
    ]
    return key, value, headers


def _batch_id(records: Sequence[Consumed]) -> str:
    """``topic/partition@first-last`` of a batch's first partition (``+n`` more), for its log lines."""
    if not records:
        return "empty"
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    for r in records:
        key = (r.topic, r.partition)
        lo, hi = spans.get(key, (r.offset, r.offset))
        spans[key] = (min(lo, r.offset), max(hi, r.offset))
    (topic, partition), (lo, hi) = next(iter(spans.items()))
    more = f"+{len(spans) - 1}" if len(spans) > 1 else ""
    return f"{topic}/{partition}@{lo}-{hi}{more}"


def _raw_headers(headers: object) -> list[tuple[str, str | bytes | None]]:
    """Message headers as ``(name, bytes or None)`` pairs."""
    items = headers.items() if isinstance(headers, dict) else headers or []
    out: list[tuple[str, str | bytes | None]] = []
    for name, value in items:  # type: ignore[attr-defined]
        out.append((str(name), value.encode() if isinstance(value, str) else value))
    return out


def _ident(reject: Rejected) -> tuple[str, int, int]:
    return reject.record.topic, reject.record.partition, reject.record.offset


def _show(parts: set[TopicPart]) -> str:
    return ", ".join(f"{t}/{p}" for t, p in sorted(parts)) or "nothing"


__all__ = [
    "DEAD_LETTER_FORMS",
    "REFUSALS",
    "DeadLetterError",
    "IngestConsumer",
    "FatalStoreError",
    "consumer_config",
    "dead_letter_config",
    "dead_letter_message",
]
