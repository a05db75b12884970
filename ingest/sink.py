"""The store side of ingest: plan a batch against the store's state, then write it segment by segment.

No Kafka here. :meth:`Sink.prepare` reads what a plan needs (watermarks,
staging states), :meth:`Sink.write` performs one segment's writes in the
crash-safe order described in :mod:`ingest.staging`. Errors propagate: the
consumer decides what is transient (retry the batch) and what is permanent
(dead-letter the segment's messages).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from segments import Segments
from segments.errors import Conflict, SegmentNotFound, SegmentsError, StorageUnavailable

from .batcher import Consumed, Group, Plan, Rejected, SegmentWork, group, plan
from .codec import Update
from .staging import SegmentStaging, StagingStore

#: Errors that say "try again later": the batch is retried, nothing is rejected.
TRANSIENT = (StorageUnavailable, Conflict)

log = logging.getLogger("ingest.sink")


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

        A segment whose stored state cannot be read (``CorruptSegment``...), or
        whose planning fails unexpectedly, has its messages rejected with the
        error's code (``apply_failed`` for a non-library error), so that one
        segment never blocks the others; transient store errors
        (``StorageUnavailable``, ``Conflict``) propagate.
        """
        groups, rejected = group(records)
        broken: dict[str, Exception] = {}
        try:
            marks = self.watermarks(groups)
        except TRANSIENT:
            raise
        except Exception:  # noqa: BLE001 - find the segment(s) at fault
            marks = {}
            for g in groups:
                try:
                    marks.update(self.watermarks([g]))
                except TRANSIENT:
                    raise
                except Exception as exc:  # noqa: BLE001
                    broken[g.segment] = exc
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
                state = self.staging.load([name])[name]
                sources = state.sources()
                known = {src: marks[(name, src)] for src in sources if (name, src) in marks}
                for src in sources - known.keys():
                    known[src] = self.segs.watermarks([name], src)[name]
                state.finish_applied(known)
                states[name] = state
            except TRANSIENT:
                raise
            except Exception as exc:  # noqa: BLE001
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
                code = error.code if isinstance(error, SegmentsError) else "apply_failed"
                message = f"segment {g.segment!r} cannot be prepared: {error}"
                rejected.extend(Rejected(r, code, message) for r in g.records)
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
        """Stage parts, store the staging state, write the segment once, finish completed batches."""
        state = work.staging
        if state is not None:
            self.staging.stage(state.to_stage())
            state.mark_staged()
            self.staging.save(state)
            self.staging.collect(state)
        fold = work.fold
        if fold.empty:
            return Written(work.segment, False)
        if fold.base is not None:
            assert state is not None
            members = self.staging.union(state, fold.base)
            members -= fold.remove
            members |= fold.add
            result = self.segs.replace_from(work.segment, members, source=work.source, position=work.position)
        else:
            try:
                result = self.segs.apply(
                    work.segment,
                    add=fold.add if fold.add else None,
                    remove=fold.remove if fold.remove else None,
                    source=work.source,
                    position=work.position,
                    create=fold.creates,
                )
            except SegmentNotFound:
                log.debug("segment %r does not exist: removing from it changes nothing", work.segment)
                return Written(work.segment, False)
        if state is not None and state.finish_applied({work.source: work.position}):
            self.staging.save(state)
            self.staging.collect(state)
        meta = result.meta
        if result.applied:
            log.debug(
                "applied segment=%s source=%s position=%d version=%d cardinality=%d kind=%s",
                work.segment, work.source, work.position, meta.version, meta.cardinality,
                "delta" if fold.base is None else f"replace:{fold.base}",
            )
        return Written(work.segment, result.applied, meta.version, meta.cardinality)


__all__ = ["TRANSIENT", "Sink", "Written"]
