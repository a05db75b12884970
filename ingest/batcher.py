"""Folding a consumer batch into one write per segment. Pure: no I/O, no clock.

For one segment, in offset order, the updates fold into ``(base, A, R)``::

    add x:      A |= x; R -= x
    remove x:   R |= x; A -= x
    replace b:  base = b; A = R = {}      (b: a replace batch completed by this message)

and the segment's new members are ``(S - R) | A`` where ``S`` is its current
membership, or the union of batch ``b``'s parts when ``base`` is set. That is
exactly one ``Segments.apply(add=A, remove=R)`` (or one ``replace_from``),
which rewrites every touched shard once, whatever the number of messages.
Applying the updates one by one gives the same set.

:func:`plan` groups a batch by ``(segment, source)`` where ``source`` is
``topic/partition`` and ``segment`` is the one whose records change: for a
windowed segment, the bucket the update goes to (``name::bucket``, set on
the update by :class:`ingest.sink.Sink`), so updates of different buckets
are never folded together. It drops the messages at or below the segment's recorded
watermark for that source (already applied before a crash or a rebalance),
runs replace parts through the segment's :class:`segments.SegmentStaging`
and folds the rest. ``tests/ingest/test_sink.py`` checks plan plus the sink
against a store and a set model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pyroaring import BitMap, FrozenBitMap

from segments import PartOutcome, SegmentStaging

from .codec import DecodeError, Update

RawHeaders = list[tuple[str, str | bytes | None]]


@dataclass
class Fold:
    """The net effect of a run of updates on one segment."""

    base: str | None = None
    add: BitMap = field(default_factory=BitMap)
    remove: BitMap = field(default_factory=BitMap)
    #: an ``add`` (even of no IDs) creates a missing segment; a ``remove`` alone does not
    creates: bool = False

    def apply_add(self, ids: BitMap | FrozenBitMap) -> None:
        self.add |= ids
        self.remove -= ids
        self.creates = True

    def apply_remove(self, ids: BitMap | FrozenBitMap) -> None:
        self.remove |= ids
        self.add -= ids

    def apply_replace(self, batch: str) -> None:
        self.base = batch
        self.add = BitMap()
        self.remove = BitMap()
        self.creates = True


@dataclass(frozen=True)
class Consumed:
    """A consumed Kafka message (what the dead-letter topic needs) and its decoding."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: RawHeaders
    decoded: Update | DecodeError
    #: the message's Kafka timestamp (ms since the epoch; ``None`` when the broker gives none)
    timestamp_ms: int | None = None

    @property
    def source(self) -> str:
        return f"{self.topic}/{self.partition}"


@dataclass(frozen=True)
class Rejected:
    """A message for the dead-letter topic."""

    record: Consumed
    reason: str
    message: str


@dataclass
class SegmentWork:
    """Everything one segment (from one source) needs written for this batch."""

    segment: str
    source: str
    #: offset of the last message of this segment in the batch: the watermark to record
    position: int
    fold: Fold
    records: list[Consumed]
    staging: SegmentStaging | None = None
    #: per op: messages whose effect is in the fold, and their IDs
    applied: dict[str, int] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    #: counts of replace parts by outcome kind
    parts: dict[str, int] = field(default_factory=dict)
    #: a bucket of a windowed segment: the windowed segment written through, and the bucket's start
    windowed: str | None = None
    at: datetime | None = None

    @property
    def target(self) -> str:
        """The name the write goes through (the windowed segment for one of its buckets)."""
        return self.windowed or self.segment


@dataclass
class Plan:
    work: list[SegmentWork]
    rejected: list[Rejected]
    #: messages at or below the segment's watermark (applied before): dropped, per (segment, source)
    replayed: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass
class Group:
    segment: str
    source: str
    records: list[Consumed]
    #: see :class:`SegmentWork`
    windowed: str | None = None
    at: datetime | None = None


def group(records: Sequence[Consumed]) -> tuple[list[Group], list[Rejected]]:
    """Split decoded records into per-(segment, source) groups in offset order, and rejects."""
    groups: dict[tuple[str, str], Group] = {}
    rejected: list[Rejected] = []
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        decoded = record.decoded
        if isinstance(decoded, DecodeError):
            rejected.append(Rejected(record, decoded.reason, decoded.message))
            continue
        key = (decoded.destination, record.source)
        if key not in groups:
            bucket = decoded.bucket is not None
            groups[key] = Group(decoded.destination, record.source, [],
                                decoded.segment if bucket else None, decoded.at if bucket else None)
        groups[key].records.append(record)
    return list(groups.values()), rejected


def plan(
    groups: Sequence[Group],
    watermarks: Mapping[tuple[str, str], int],
    staging: Mapping[str, SegmentStaging],
) -> Plan:
    """Decide what to write for each group.

    ``watermarks[(segment, source)]`` is the position the segment recorded for
    the source (-1: none). ``staging[segment]`` is needed for every group
    that holds replace parts; it is updated in place.
    """
    out = Plan([], [])
    for grp in groups:
        mark = watermarks.get((grp.segment, grp.source), -1)
        fresh = [r for r in grp.records if r.offset > mark]
        if len(fresh) < len(grp.records):
            out.replayed[(grp.segment, grp.source)] = len(grp.records) - len(fresh)
        if not fresh:
            continue
        work = SegmentWork(grp.segment, grp.source, fresh[-1].offset, Fold(), fresh,
                           windowed=grp.windowed, at=grp.at)
        for record in fresh:
            update = record.decoded
            assert isinstance(update, Update)
            if update.op == "add":
                work.fold.apply_add(update.ids)
            elif update.op == "remove":
                work.fold.apply_remove(update.ids)
            else:
                state = staging[grp.segment]
                work.staging = state
                assert update.batch is not None and update.part is not None and update.parts is not None
                outcome = state.on_part(update.batch, update.part, update.parts, update.ids, grp.source, record.offset)
                work.parts[outcome.kind] = work.parts.get(outcome.kind, 0) + 1
                if outcome.kind == PartOutcome.REJECTED:
                    out.rejected.append(Rejected(record, "bad_part", outcome.message))
                    continue
                if outcome.kind == PartOutcome.COMPLETED:
                    work.fold.apply_replace(outcome.batch)
                if outcome.kind in (PartOutcome.DUPLICATE, PartOutcome.STALE):
                    continue
            work.applied[update.op] = work.applied.get(update.op, 0) + 1
            work.ids[update.op] = work.ids.get(update.op, 0) + len(update.ids)
        out.work.append(work)
    return out


@dataclass
class Batch:
    """Messages gathered for one flush, with the limits that end it."""

    max_messages: int
    max_ids: int
    max_wait: float
    records: list[Consumed] = field(default_factory=list)
    ids: int = 0
    started: float | None = None

    def add(self, record: Consumed, now: float) -> None:
        if self.started is None:
            self.started = now
        self.records.append(record)
        if isinstance(record.decoded, Update):
            self.ids += record.decoded.size

    @property
    def full(self) -> bool:
        return len(self.records) >= self.max_messages or self.ids >= self.max_ids

    def stale(self, now: float) -> bool:
        return self.started is not None and now - self.started >= self.max_wait

    def due(self, now: float, *, drained: bool = True) -> bool:
        """Flush now? When full, or when stale and nothing more is waiting (``drained``).

        Under a backlog the batch keeps filling up to its limits (fewer, larger
        writes); once caught up, no message waits longer than ``max_wait``.
        """
        return bool(self.records) and (self.full or (drained and self.stale(now)))

    def drop_partitions(self, revoked: set[tuple[str, int]]) -> int:
        """Forget the messages of revoked partitions (another member will consume them)."""
        kept = [r for r in self.records if (r.topic, r.partition) not in revoked]
        dropped = len(self.records) - len(kept)
        if dropped:
            self.records = kept
            self.ids = sum(r.decoded.size for r in kept if isinstance(r.decoded, Update))
            if not kept:
                self.started = None
        return dropped

    def clear(self) -> None:
        self.records = []
        self.ids = 0
        self.started = None


__all__ = ["Batch", "Consumed", "Fold", "Group", "Plan", "Rejected", "SegmentWork", "group", "plan"]
