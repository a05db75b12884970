"""The store side of ingest: plan a batch against the store's state, then write it segment by segment.

No Kafka here. :meth:`Sink.prepare` reads what a plan needs (watermarks,
staging states), :meth:`Sink.write` performs one segment's writes through
:meth:`segments.StagingStore.apply` (the crash-safe replace in parts).

Before planning, :meth:`Sink.prepare` resolves what the messages say in the
deployment's terms:

* **time buckets**: an update of a windowed segment goes to the bucket of its
  ``at`` (default: the message's Kafka timestamp, so a replay places it in the
  same bucket; without one, the moment the consumer first saw it), so it is planned, folded, watermarked and
  written as an update of that bucket (``name::bucket``). An ``at`` on a
  segment that is not windowed, outside the retention or in the future is
  dead-lettered ``bad_time``;
* **user keys** (JSON ``"keys"``): translated to IDs in two calls per batch,
  ``translate(create=True)`` for every key of the batch's adds and replace
  parts and ``translate()`` (which never allocates) for its removes; a
  message with a bad key is dead-lettered ``invalid_user_key`` and the rest
  is translated again without it.

What an error means for ingest is decided here, once, from its ``fault``
(:func:`handling`); the consumer and :meth:`Sink.prepare` ask nothing else.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from itertools import chain
from typing import Final

from pyroaring import BitMap

from segments import SegmentNotFound, Segments, SegmentsError, SegmentStaging, StagingStore
from segments.errors import BadTime, Fault, InvalidUserKey
from segments.keys import check_user_key
from segments.windows import WindowConfig

from .batcher import Consumed, Group, Plan, Rejected, SegmentWork, group, plan
from .codec import Update

log = logging.getLogger("ingest.sink")


class Handling(StrEnum):
    """What ingest does about an error of the store side."""

    #: the messages concerned go to the dead-letter topic (reason: :func:`reason`); the rest goes on
    DEAD_LETTER = "dead_letter"
    #: pause the partitions and retry the whole batch with backoff; nothing is committed meanwhile
    RETRY = "retry"
    #: stop the consumer with a fatal log line and a non-zero exit; nothing of the batch is committed
    STOP = "stop"


#: The one table (see the table in :mod:`segments.errors`).
_BY_FAULT: Final[dict[Fault, Handling]] = {
    Fault.CALLER: Handling.DEAD_LETTER,  # the message is unusable
    Fault.DATA: Handling.DEAD_LETTER,  # that segment's stored data is damaged: its messages only
    Fault.TRANSIENT: Handling.RETRY,
    Fault.CAPACITY: Handling.RETRY,
    Fault.OPERATOR: Handling.STOP,
}


def handling(exc: BaseException) -> Handling:
    """How ingest handles ``exc``: by its fault; any other exception is a bug of one segment's write
    (its messages are dead-lettered, so that one bug is not a poison pill for the others)."""
    if isinstance(exc, SegmentsError):
        return _BY_FAULT[exc.fault]
    return Handling.DEAD_LETTER


def reason(exc: BaseException) -> str:
    """The dead-letter reason of an error: its code, ``apply_failed`` for a non-library error."""
    return exc.code if isinstance(exc, SegmentsError) else "apply_failed"


#: How many messages' default bucket times a sink remembers (so a retried batch keeps its buckets).
_REMEMBERED_TIMES = 200_000


@dataclass(frozen=True)
class Written:
    """The outcome of one segment's writes."""

    segment: str
    #: the segment was written (False: nothing to write, already recorded, or a remove from a missing segment)
    applied: bool
    version: int = 0
    cardinality: int = 0


class Sink:
    """Applies planned batches to a ``Segments`` store."""

    def __init__(self, segs: Segments) -> None:
        self.segs = segs
        self.staging = StagingStore(segs)
        #: (topic, partition, offset) -> the time given to a message without ``at`` to a windowed segment
        self._times: dict[tuple[str, int, int], datetime] = {}

    def prepare(self, records: Sequence[Consumed]) -> Plan:
        """Group, read watermarks and staging states, and plan (rejects included).

        An error that :func:`handling` says to dead-letter (damaged data of a
        segment, a bug) rejects the messages of the segment it concerns, so
        that one segment never blocks the others; any other error propagates.
        """
        records, rejected = self.resolve(records)
        groups, undecodable = group(records)
        rejected += undecodable
        broken: dict[str, Exception] = {}
        try:
            marks = self.watermarks(groups)
        except Exception as exc:  # noqa: BLE001 - find the segment(s) at fault
            if handling(exc) is not Handling.DEAD_LETTER:
                raise
            marks = {}
            for g in groups:
                try:
                    marks.update(self.watermarks([g]))
                except Exception as failure:  # noqa: BLE001
                    if handling(failure) is not Handling.DEAD_LETTER:
                        raise
                    broken[g.segment] = failure
        with_parts = {
            g.segment
            for g in groups
            if g.segment not in broken
            for r in g.records
            if r.offset > marks[(g.segment, g.source)] and isinstance(r.decoded, Update) and r.decoded.op == "replace"
        }
        states: dict[str, SegmentStaging] = {}
        for name in sorted(with_parts):
            try:
                states.update(self.staging.load([name], marks))
            except Exception as exc:  # noqa: BLE001
                if handling(exc) is not Handling.DEAD_LETTER:
                    raise
                broken[name] = exc
        result = Plan([], [])
        for g in groups:
            if g.segment in broken:
                continue
            try:
                one = plan([g], marks, states)
            except Exception as exc:  # noqa: BLE001 - a bug must not turn into a poison pill
                broken[g.segment] = exc
                continue
            result.work += one.work
            result.rejected += one.rejected
            result.replayed.update(one.replayed)
        for g in groups:
            if g.segment in broken:
                error = broken[g.segment]
                message = f"segment {g.segment!r} cannot be prepared: {error}"
                rejected.extend(Rejected(r, reason(error), message) for r in g.records)
        for name, error in broken.items():
            log.error("segment %r: %s", name, error, exc_info=not isinstance(error, SegmentsError))
        result.rejected[:0] = sorted(rejected, key=lambda r: (r.record.topic, r.record.partition, r.record.offset))
        return result

    # -- windows and keys ----------------------------------------------------------------------

    def resolve(self, records: Sequence[Consumed]) -> tuple[list[Consumed], list[Rejected]]:
        """Place updates of windowed segments in their buckets and translate user keys (see the module doc).

        Returns the records (updates rewritten, in order, without the rejected
        ones) and the rejects. Store errors that are not one message's or one
        segment's fault propagate (:func:`handling`).
        """
        placed, rejected = self._place(list(records))
        translated, more = self._translate(placed)
        return translated, rejected + more

    def _place(self, records: list[Consumed]) -> tuple[list[Consumed], list[Rejected]]:
        updates = [r for r in records if isinstance(r.decoded, Update)]
        if not updates:
            return records, []
        configs, broken = self._configs(updates)
        now = datetime.now(UTC)
        out: list[Consumed] = []
        rejected: list[Rejected] = []
        for record in records:
            update = record.decoded
            if not isinstance(update, Update):
                out.append(record)
                continue
            if update.segment in broken:
                error = broken[update.segment]
                rejected.append(Rejected(record, reason(error), f"segment {update.segment!r}: {error}"))
                continue
            config = configs.get(update.segment)
            if config is None:
                if update.at is None:
                    out.append(record)
                else:
                    rejected.append(Rejected(record, BadTime.code, f"segment {update.segment!r} is not windowed: "
                                             "an update of it cannot say when (at)"))
                continue
            at = update.at if update.at is not None else self._time_of(record, now)
            try:
                bucket = self.segs.windows.bucket_for(config, at, now=now)
            except BadTime as exc:
                rejected.append(Rejected(record, exc.code, str(exc)))
                continue
            placed = dataclasses.replace(update, at=config.start_of(bucket), bucket=config.segment(bucket))
            out.append(dataclasses.replace(record, decoded=placed))
        return out, rejected

    def _configs(self, updates: list[Consumed]) -> tuple[dict[str, WindowConfig | None], dict[str, Exception]]:
        """The window config of every segment named (``None``: not windowed), and the segments whose
        config cannot be read because it is damaged."""
        names = sorted({u.decoded.segment for u in updates if isinstance(u.decoded, Update)})
        timed = {u.decoded.segment for u in updates if isinstance(u.decoded, Update) and u.decoded.at is not None}
        windows = self.segs.windows
        broken: dict[str, Exception] = {}
        try:
            configs = windows.configs(names)
        except Exception as exc:  # noqa: BLE001 - find the segment(s) at fault
            if handling(exc) is not Handling.DEAD_LETTER:
                raise
            configs = {}
            for name in names:
                try:
                    configs.update(windows.configs([name]))
                except Exception as failure:  # noqa: BLE001
                    if handling(failure) is not Handling.DEAD_LETTER:
                        raise
                    broken[name] = failure
        # an ``at`` on a segment not windowed a moment ago: made windowed since?
        again = sorted(n for n in timed if n not in broken and configs.get(n) is None)
        if again:
            configs.update(windows.configs(again, fresh=True))
        return configs, broken

    def _time_of(self, record: Consumed, now: datetime) -> datetime:
        """When a message without ``at`` happened: its Kafka timestamp, so that a replay after a
        crash places it in the same bucket; without one, the moment it was first seen here."""
        if record.timestamp_ms is not None:
            return datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)
        ident = (record.topic, record.partition, record.offset)
        when = self._times.get(ident)
        if when is None:
            when = self._times[ident] = now
            while len(self._times) > _REMEMBERED_TIMES:
                del self._times[next(iter(self._times))]
        return when

    def _translate(self, records: list[Consumed]) -> tuple[list[Consumed], list[Rejected]]:
        keyed = [r for r in records if isinstance(r.decoded, Update) and r.decoded.keys is not None]
        if not keyed:
            return records, []
        try:
            ids = self._translate_all(keyed)
            rejected: list[Rejected] = []
        except InvalidUserKey:
            rejected = self._bad_keys(keyed)
            if rejected:
                rest, more = self._translate(self._without(records, rejected))  # the others, in one go again
                return rest, rejected + more
            ids, rejected = self._one_by_one(keyed)  # a key the table refuses although it passes the check
        except Exception as exc:  # noqa: BLE001 - find the message(s) at fault
            if handling(exc) is not Handling.DEAD_LETTER:
                raise
            ids, rejected = self._one_by_one(keyed)
        out: list[Consumed] = []
        for r in self._without(records, rejected):
            u = r.decoded
            if isinstance(u, Update) and u.keys is not None:  # built directly: dataclasses.replace costs 10x
                done = Update(u.op, u.segment, ids[_ident(r)], u.batch, u.part, u.parts, None, u.at, u.bucket)
                r = Consumed(r.topic, r.partition, r.offset, r.key, r.value, r.headers, done)
            out.append(r)
        return out, rejected

    def _translate_all(self, keyed: list[Consumed]) -> dict[tuple[str, int, int], BitMap]:
        """The IDs of every keyed record: all new keys of adds and replace parts created in one call,
        the keys of removes looked up (never created) in another."""
        updates = [(r, r.decoded) for r in keyed if isinstance(r.decoded, Update) and r.decoded.keys is not None]
        creating = list(chain.from_iterable(u.keys or () for _, u in updates if u.op != "remove"))
        looking = list(chain.from_iterable(u.keys or () for _, u in updates if u.op == "remove"))
        table = self.segs.keys
        created = table.translate(creating, create=True) if creating else []  # type: ignore[arg-type]
        found = table.translate(looking) if looking else []  # type: ignore[arg-type]
        out: dict[tuple[str, int, int], BitMap] = {}
        at_created = at_found = 0
        for record, update in updates:
            count = len(update.keys or ())
            if update.op == "remove":  # keys never seen have no ID: they are in no segment
                got = found[at_found : at_found + count]
                at_found += count
                out[_ident(record)] = BitMap([uid for uid in got if uid is not None])
            else:
                out[_ident(record)] = BitMap(created[at_created : at_created + count])  # type: ignore[arg-type]
                at_created += count
        return out

    def _one_by_one(self, keyed: list[Consumed]) -> tuple[dict[tuple[str, int, int], BitMap], list[Rejected]]:
        """Translate message by message; the messages whose translation fails for a reason of their
        own (or of damaged key records) are rejected."""
        ids: dict[tuple[str, int, int], BitMap] = {}
        rejected: list[Rejected] = []
        for record in keyed:
            try:
                ids.update(self._translate_all([record]))
            except Exception as failure:  # noqa: BLE001
                if handling(failure) is not Handling.DEAD_LETTER:
                    raise
                log.error("user keys of %s/%d@%d: %s", *_ident(record), failure,
                          exc_info=not isinstance(failure, SegmentsError))
                rejected.append(Rejected(record, reason(failure), f"the user keys cannot be translated: {failure}"))
        return ids, rejected

    @staticmethod
    def _bad_keys(keyed: list[Consumed]) -> list[Rejected]:
        """The messages with a key that is not valid, each rejected with the reason of its first bad key."""
        rejected: list[Rejected] = []
        for record in keyed:
            assert isinstance(record.decoded, Update)
            try:
                for key in record.decoded.keys or ():
                    check_user_key(key)
            except InvalidUserKey as exc:
                rejected.append(Rejected(record, exc.code, str(exc)))
        return rejected

    @staticmethod
    def _without(records: list[Consumed], rejected: list[Rejected]) -> list[Consumed]:
        if not rejected:
            return records
        gone = {_ident(r.record) for r in rejected}
        return [r for r in records if _ident(r) not in gone]

    # -- the store's state ---------------------------------------------------------------------

    def watermarks(self, groups: Sequence[Group]) -> dict[tuple[str, str], int]:
        by_source: dict[str, list[str]] = {}
        for g in groups:
            by_source.setdefault(g.source, []).append(g.segment)
        marks: dict[tuple[str, str], int] = {}
        for source, names in by_source.items():
            for name, mark in self.segs.watermarks(names, source).items():
                marks[(name, source)] = mark
        return marks

    def write(self, work: SegmentWork) -> Written:
        """Write one segment's planned change (errors propagate: see :func:`handling`)."""
        fold = work.fold
        try:
            result = self.staging.apply(
                work.target,
                work.staging,
                batch=fold.base,
                add=fold.add,
                remove=fold.remove,
                create=fold.creates,
                source=work.source,
                position=work.position,
                at=work.at,
            )
        except SegmentNotFound:
            log.debug("segment %r does not exist: removing from it changes nothing", work.segment)
            return Written(work.segment, False)
        if result is None:
            return Written(work.segment, False)
        meta = result.meta
        if result.applied:
            log.debug(
                "applied segment=%s source=%s position=%d version=%d cardinality=%d kind=%s",
                work.segment, work.source, work.position, meta.version, meta.cardinality,
                "delta" if fold.base is None else f"replace:{fold.base}",
            )
        return Written(work.segment, result.applied, meta.version, meta.cardinality)


def _ident(record: Consumed) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset


__all__ = ["Handling", "Sink", "Written", "handling", "reason"]
