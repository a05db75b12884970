"""The size history of every segment: one point per published version, bounded.

Record: set ``seghist`` (with the deployment's prefix), key = the segment's
name, bin ``points``: JSON list of ``[version, ms, cardinality, op, added,
removed]`` in version order (``added``/``removed`` are ``null`` when the
writer did not compute them, for a ``replace`` of shards it did not read).

Bound: the newest :data:`KEEP_ALL` points are kept as they are; older ones
are thinned to the last point of each hour for :data:`HOURLY_FOR_MS`, and to
the last point of each day beyond that, so a segment written every second
for a year keeps ~1,000 + 720 + 335 points (well under 200 KB).

The point is appended after the version is published, in its own
generation-checked write; a crash in between loses that point, never data.
Deleting a segment deletes its history.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .catalog import Sets
from .errors import Conflict, CorruptSegment, SegmentsError
from .storage.base import Record, Store

KEEP_ALL = 1000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
HOURLY_FOR_MS = 30 * DAY_MS
_ATTEMPTS = 8

log = logging.getLogger("segments.history")


@dataclass(frozen=True)
class Point:
    version: int
    at_ms: int
    cardinality: int
    op: str
    added: int | None = None
    removed: int | None = None

    def as_list(self) -> list[object]:
        return [self.version, self.at_ms, self.cardinality, self.op, self.added, self.removed]

    def as_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "at_ms": self.at_ms,
            "cardinality": self.cardinality,
            "op": self.op,
            "added": self.added,
            "removed": self.removed,
        }


def thin(points: Sequence[Point]) -> list[Point]:
    """Keep the newest ``KEEP_ALL`` points, then the last one per hour (30 days), then per day."""
    if len(points) <= KEEP_ALL:
        return list(points)
    recent = list(points[-KEEP_ALL:])
    newest = recent[0].at_ms
    kept: dict[tuple[str, int], Point] = {}
    for p in points[:-KEEP_ALL]:
        age = newest - p.at_ms
        bucket = ("h", p.at_ms // HOUR_MS) if age <= HOURLY_FOR_MS else ("d", p.at_ms // DAY_MS)
        kept[bucket] = p  # points are in version order: the last one of the bucket wins
    return sorted(kept.values(), key=lambda p: p.version) + recent


class History:
    def __init__(self, store: Store, sets: Sets) -> None:
        self.store = store
        self.set = sets.history

    def points(self, name: str, *, since_ms: int | None = None, until_ms: int | None = None) -> list[Point]:
        points = self._decode(name, self.store.get_many(self.set, [name])[0])
        return [
            p for p in points
            if (since_ms is None or p.at_ms >= since_ms) and (until_ms is None or p.at_ms <= until_ms)
        ]

    @staticmethod
    def _decode(name: str, record: Record | None) -> list[Point]:
        if record is None:
            return []
        try:
            raw = json.loads(str(record.bins["points"]))
            points = [Point(int(v), int(t), int(c), str(o), a, r) for v, t, c, o, a, r in raw]
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptSegment(f"the size history of {name!r} is damaged: {exc}", segment=name) from exc
        return points

    def record(self, name: str, point: Point) -> None:
        """Append a point (best effort: a failure is logged, the published version stands)."""
        try:
            for _ in range(_ATTEMPTS):
                record = self.store.get_many(self.set, [name])[0]
                points = self._decode(name, record)
                if points and points[-1].version >= point.version:
                    if point.version != 1:
                        return  # recorded already (a retry), or a newer version was recorded first
                    points = []  # version 1 again: the segment was deleted and created anew
                points = thin([*points, point])
                bins = {"points": json.dumps([p.as_list() for p in points], separators=(",", ":"))}
                try:
                    self.store.put(self.set, name, bins, generation=record.generation if record else 0)
                    return
                except Conflict:
                    continue
            log.warning("size history of %r: gave up recording version %d (busy)", name, point.version)
        except SegmentsError as exc:
            log.warning("size history of %r: version %d not recorded: %s", name, point.version, exc)

    def delete(self, name: str) -> None:
        self.store.delete(self.set, name)


__all__ = ["KEEP_ALL", "History", "Point", "thin"]
