"""The store side of ingest: plan a batch against the store's state, then write it segment by segment.

No Kafka here. :meth:`Sink.prepare` reads what a plan needs (watermarks,
staging states), :meth:`Sink.write` performs one segment's writes through
:meth:`segments.StagingStore.apply` (the crash-safe replace in parts).

What an error means for ingest is decided here, once, from its ``fault``
(:func:`handling`); the consumer and :meth:`Sink.prepare` ask nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from segments import SegmentNotFound, Segments, SegmentsError, SegmentStaging, StagingStore
from segments.errors import Fault

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

    def prepare(self, records: Sequence[Consumed]) -> Plan:
        """Group, read watermarks and staging states, and plan (rejects included).

        An error that :func:`handling` says to dead-letter (damaged data of a
        segment, a bug) rejects the messages of the segment it concerns, so
        that one segment never blocks the others; any other error propagates.
        """
        groups, rejected = group(records)
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
                work.segment,
                work.staging,
                batch=fold.base,
                add=fold.add,
                remove=fold.remove,
                create=fold.creates,
                source=work.source,
                position=work.position,
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


__all__ = ["Handling", "Sink", "Written", "handling", "reason"]
