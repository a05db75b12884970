"""Replace in parts: a segment's new members arrive as parts ``0..n-1`` of one batch, applied at once.

A full replacement of a large segment can be too big for one message or one
request. It is sent as parts of a *batch* (a producer-chosen id), possibly
spread over hours, restarts and duplicates. Parts that cannot be applied yet
are kept in the store, so a crash between two parts loses nothing:

* set ``ingest_staging``, key ``<segment>/<batch>/<part>``: bins ``bm`` (portable
  roaring bytes of the part) and ``parts``;
* set ``ingest_staging_meta``, key ``<segment>``: bin ``state``, JSON of
  :class:`SegmentStaging` (open batches, recently finished batch ids, the
  newest applied batch).

(The set names say ``ingest`` because Kafka ingest was their first user;
they stay so that existing stores keep working.)

Every part has a *source* (an ordered stream, such as a Kafka
``topic/partition``) and a *position* in it. Rules, in position order:

* A batch *starts* at the position of the first of its parts to arrive, and
  *completes* at the position of the part that brings the last missing one.
  It takes effect there: changes of the segment before it are superseded,
  those after it apply on top.
* **Newer means started later.** When a batch completes, every open batch of
  the segment from the same source that started earlier is discarded; a batch
  that completes after a batch that started later was applied is discarded
  too. So an old batch finishing late never overwrites a new one.
* A part that arrives again (a producer retry, a replay) is applied once: it
  is ignored when the part is already staged, or when its batch is finished
  (the last :data:`DONE_KEPT` finished batch ids of each segment are kept).
* ``parts`` must agree across the parts of one batch (else the part is
  :attr:`PartOutcome.REJECTED`).

:class:`SegmentStaging` is the pure state machine; :class:`StagingStore`
reads and writes it and performs one segment's change in a crash-safe order
(:meth:`StagingStore.apply`): the new parts, then the state (with
``complete_at`` on a completing batch), then the segment (``replace_from``
with the completing position as watermark), then the finished state, then
the deletion of the staged parts. A batch whose ``complete_at`` is at or
below the segment's watermark was applied and is finished whenever the state
is next loaded; one above it is completed again when its completing part is
delivered again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from pyroaring import BitMap, FrozenBitMap

from . import bitmap as bm
from .client import Segments
from .errors import Conflict, CorruptSegment
from .storage.base import Record
from .writer import WriteResult

#: How many finished batch ids each segment remembers, to ignore late duplicates.
DONE_KEPT: Final[int] = 256
PARTS_SET: Final[str] = "ingest_staging"
META_SET: Final[str] = "ingest_staging_meta"

Ids = BitMap | FrozenBitMap


def part_key(segment: str, batch: str, part: int) -> str:
    return f"{segment}/{batch}/{part}"


@dataclass
class OpenBatch:
    """A replace batch that has started and is not finished."""

    parts: int
    source: str
    start: int
    staged: set[int] = field(default_factory=set)
    #: position of the completing part once the batch is being applied
    complete_at: int | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "parts": self.parts,
            "source": self.source,
            "start": self.start,
            "staged": sorted(self.staged),
            "complete_at": self.complete_at,
        }


@dataclass(frozen=True)
class PartOutcome:
    """What one part did. ``kind`` is one of the class constants."""

    STAGED = "staged"  # a new part; the batch is still incomplete
    COMPLETED = "completed"  # this part completed the batch: the segment becomes its union here
    DUPLICATE = "duplicate"  # the part was already there, or the batch is finished
    STALE = "stale"  # the batch completed but a newer batch had already been applied
    REJECTED = "rejected"  # inconsistent with earlier parts (reason in ``message``)

    kind: str
    batch: str
    message: str = ""


@dataclass
class SegmentStaging:
    """The replace batches of one segment: pure state, no I/O."""

    segment: str
    open: dict[str, OpenBatch] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    #: (source, start position) of the newest batch that was applied
    newest: tuple[str, int] | None = None
    #: store generation of the loaded record (0: not stored)
    generation: int = 0
    #: parts received and not staged in the store yet: batch -> part -> ids
    inflight: dict[str, dict[int, Ids]] = field(default_factory=dict)
    #: staged part keys to delete once the state that no longer mentions them is stored
    garbage: list[str] = field(default_factory=list)
    #: batches completed by parts not staged yet (their parts need no staging)
    completing: set[str] = field(default_factory=set)
    #: the JSON last read or written, to skip writing an unchanged state
    saved: str = ""

    # -- persistence -------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(
            {
                "open": {b: ob.as_json() for b, ob in sorted(self.open.items())},
                "done": self.done[-DONE_KEPT:],
                "newest": list(self.newest) if self.newest else None,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_record(cls, segment: str, record: Record | None) -> SegmentStaging:
        if record is None:
            return cls(segment)
        try:
            raw = record.bins["state"]
            doc = json.loads(raw if isinstance(raw, (str, bytes)) else "")
            opened = {
                str(b): OpenBatch(
                    parts=int(v["parts"]),
                    source=str(v["source"]),
                    start=int(v["start"]),
                    staged={int(p) for p in v["staged"]},
                    complete_at=None if v.get("complete_at") is None else int(v["complete_at"]),
                )
                for b, v in doc["open"].items()
            }
            newest = doc.get("newest")
            state = cls(
                segment,
                open=opened,
                done=[str(b) for b in doc["done"]],
                newest=(str(newest[0]), int(newest[1])) if newest else None,
                generation=record.generation,
            )
            state.saved = state.to_json()
            return state
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise CorruptSegment(
                f"staging state of segment {segment!r} is damaged: {exc}", segment=segment
            ) from exc

    @property
    def empty(self) -> bool:
        return not self.open and not self.done and self.newest is None

    # -- transitions ------------------------------------------------------

    def is_finished(self, batch: str, position: int) -> bool:
        if batch in self.done:
            return True
        ob = self.open.get(batch)
        return ob is not None and ob.complete_at is not None and position > ob.complete_at

    def on_part(self, batch: str, part: int, parts: int, ids: Ids, source: str, position: int) -> PartOutcome:
        """Take part ``part`` of ``parts`` of ``batch`` (already known to be above the segment's watermark)."""
        if self.is_finished(batch, position):
            return PartOutcome(PartOutcome.DUPLICATE, batch, "the batch is already finished")
        ob = self.open.get(batch)
        if ob is None:
            ob = self.open[batch] = OpenBatch(parts, source, position)
        elif ob.parts != parts:
            return PartOutcome(
                PartOutcome.REJECTED,
                batch,
                f"batch {batch!r} of segment {self.segment!r} has {ob.parts} parts, but this part says parts={parts}",
            )
        flying = self.inflight.setdefault(batch, {})
        if part in ob.staged or part in flying:
            return PartOutcome(PartOutcome.DUPLICATE, batch, f"part {part} is already there")
        flying[part] = ids
        if len(ob.staged) + len(flying) < ob.parts:
            return PartOutcome(PartOutcome.STAGED, batch)
        # Complete: it takes effect here unless a newer batch was applied already.
        if self.newest is not None and self.newest[0] == ob.source and self.newest[1] > ob.start:
            self._finish(batch)
            return PartOutcome(PartOutcome.STALE, batch, "a batch that started later was applied already")
        ob.complete_at = position
        self.completing.add(batch)
        self.newest = (ob.source, ob.start)
        for other in [b for b, o in self.open.items() if b != batch and o.source == ob.source and o.start < ob.start]:
            self._finish(other)
        return PartOutcome(PartOutcome.COMPLETED, batch)

    def _finish(self, batch: str) -> None:
        """Close a batch (applied, superseded or stale): its staged parts become garbage, its id is remembered."""
        ob = self.open.pop(batch)
        self.garbage.extend(part_key(self.segment, batch, p) for p in sorted(ob.staged))
        self.inflight.pop(batch, None)
        self.completing.discard(batch)
        if batch not in self.done:
            self.done.append(batch)
            del self.done[:-DONE_KEPT]

    def finish_applied(self, watermarks: Mapping[str, int]) -> list[str]:
        """Finish the batches whose completion the segment has recorded (watermark >= complete_at).

        ``watermarks`` maps source -> the segment's watermark. Returns the
        finished batch ids; their staged parts go to :attr:`garbage`.
        """
        finished = [
            batch
            for batch, ob in self.open.items()
            if ob.complete_at is not None and watermarks.get(ob.source, -1) >= ob.complete_at
        ]
        for batch in finished:
            self._finish(batch)
        return finished

    def to_stage(self) -> list[tuple[str, Ids, int]]:
        """Parts received that must be stored because their batch stays open."""
        out = []
        for batch, flying in self.inflight.items():
            ob = self.open.get(batch)
            if ob is None or batch in self.completing:
                continue
            for part, ids in sorted(flying.items()):
                out.append((part_key(self.segment, batch, part), ids, ob.parts))
        return out

    def mark_staged(self) -> None:
        for batch in list(self.inflight):
            ob = self.open.get(batch)
            if ob is None or batch in self.completing:
                continue
            ob.staged.update(self.inflight.pop(batch))

    def sources(self) -> set[str]:
        return {ob.source for ob in self.open.values()}


class StagingStore:
    """Replace in parts on a ``Segments`` store: staging records, and the crash-safe write of a change."""

    def __init__(self, segs: Segments) -> None:
        self.segs = segs
        self.store = segs.store
        self.parts_set = segs.sets.named(PARTS_SET)
        self.meta_set = segs.sets.named(META_SET)

    def load(
        self, segments: Iterable[str], watermarks: Mapping[tuple[str, str], int] | None = None
    ) -> dict[str, SegmentStaging]:
        """The staging states of ``segments``, with the batches their segment already applied finished.

        ``watermarks[(segment, source)]`` gives positions already read; the
        others are read from the segments.
        """
        names = list(dict.fromkeys(segments))
        if not names:
            return {}
        records = self.store.get_many(self.meta_set, names)
        states = {n: SegmentStaging.from_record(n, r) for n, r in zip(names, records, strict=True)}
        known = dict(watermarks or {})
        for name, state in states.items():
            marks = {}
            for source in sorted(state.sources()):
                if (name, source) not in known:
                    known[(name, source)] = self.segs.watermarks([name], source)[name]
                marks[source] = known[(name, source)]
            state.finish_applied(marks)
        return states

    def apply(
        self,
        segment: str,
        state: SegmentStaging | None,
        *,
        batch: str | None = None,
        add: Ids | None = None,
        remove: Ids | None = None,
        create: bool = True,
        source: str,
        position: int,
        at: object | None = None,
    ) -> WriteResult | None:
        """Write one segment's change in the crash-safe order; ``None`` when there was nothing to write.

        ``state``'s parts received since the last call are staged and the
        state is stored first. With ``batch`` (a batch of ``state`` that just
        completed), the segment becomes the union of its parts, minus
        ``remove``, plus ``add``, in one ``replace_from``; without, ``remove``
        then ``add`` are applied in one ``apply`` (``create=False``: a missing
        segment raises ``SegmentNotFound``). Both record ``position`` for
        ``source``, so doing it again is harmless. Finished batches are then
        stored as such and their parts deleted. ``at`` picks the bucket of a
        windowed ``segment`` (whose ``state`` is then the bucket's).
        """
        if state is not None:
            self.stage(state.to_stage())
            state.mark_staged()
            self.save(state)
            self.collect(state)
        if batch is None and not add and not remove and not create:
            return None
        if batch is not None:
            if state is None:
                raise ValueError("completing a batch needs the segment's staging state")
            members = self.union(state, batch)
            if remove:
                members -= remove
            if add:
                members |= add
            result = self.segs.replace_from(segment, members, source=source, position=position, at=at)
        else:
            result = self.segs.apply(
                segment, add=add or None, remove=remove or None, source=source, position=position, create=create,
                at=at,
            )
        if state is not None and state.finish_applied({source: position}):
            self.save(state)
            self.collect(state)
        return result

    def save(self, state: SegmentStaging) -> None:
        """Store the state (generation-checked: ``Conflict`` if someone else changed it)."""
        text = state.to_json()
        if text == state.saved or (state.empty and state.generation == 0):
            return
        gen = self.store.put(self.meta_set, state.segment, {"state": text}, generation=state.generation)
        state.generation = gen
        state.saved = text

    def stage(self, items: list[tuple[str, Ids, int]]) -> None:
        if items:
            self.store.put_many(
                self.parts_set, [(key, {"bm": bm.serialize(ids), "parts": parts}) for key, ids, parts in items]
            )

    def collect(self, state: SegmentStaging) -> None:
        if state.garbage:
            self.store.delete_many(self.parts_set, state.garbage)
            state.garbage = []

    def union(self, state: SegmentStaging, batch: str) -> BitMap:
        """All parts of a completing batch: staged ones from the store plus in-flight ones."""
        ob = state.open[batch]
        flying = state.inflight.get(batch, {})
        keys = [part_key(state.segment, batch, p) for p in sorted(ob.staged) if p not in flying]
        pieces: list[Ids] = list(flying.values())
        for key, record in zip(keys, self.store.get_many(self.parts_set, keys), strict=True):
            if record is None:
                raise CorruptSegment(f"staged part {key!r} of a replace batch is missing", segment=state.segment)
            raw = record.bins.get("bm")
            try:
                pieces.append(bm.deserialize(raw if isinstance(raw, bytes) else b"", untrusted=False))
            except CorruptSegment as exc:
                raise CorruptSegment(f"staged part {key!r} of a replace batch: {exc}", segment=state.segment) from exc
        if len(pieces) != ob.parts:
            raise CorruptSegment(
                f"replace batch {batch!r} of {state.segment!r} has {len(pieces)} of {ob.parts} parts",
                segment=state.segment,
            )
        members = BitMap()
        members.update(*pieces)
        return members

    def sweep(self) -> int:
        """Finish applied batches and delete parts of finished batches (after a crash). Best effort.

        Returns the number of part records deleted.
        """
        deleted = 0
        for segment, record in list(self.store.scan(self.meta_set)):
            try:
                state = SegmentStaging.from_record(segment, record)
            except CorruptSegment:
                continue
            marks = {src: self.segs.watermarks([segment], src)[segment] for src in state.sources()}
            if state.finish_applied(marks):
                try:
                    self.save(state)
                except Conflict:
                    continue
                deleted += len(state.garbage)
                self.collect(state)
        done_by_segment: dict[str, set[str]] = {}
        stale: list[str] = []
        for key, _ in list(self.store.scan(self.parts_set)):
            segment, _, rest = key.partition("/")
            batch = rest.rpartition("/")[0]
            if segment not in done_by_segment:
                found = self.store.get_many(self.meta_set, [segment])[0]
                try:
                    done_by_segment[segment] = set(SegmentStaging.from_record(segment, found).done)
                except CorruptSegment:
                    done_by_segment[segment] = set()
            if batch in done_by_segment[segment]:
                stale.append(key)
        if stale:
            self.store.delete_many(self.parts_set, stale)
        return deleted + len(stale)


__all__ = ["DONE_KEPT", "META_SET", "PARTS_SET", "OpenBatch", "PartOutcome", "SegmentStaging", "StagingStore", "part_key"]
