"""Size history: one point per published version, bounded, deleted with the segment."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

import segments
from segments.history import DAY_MS, HOUR_MS, KEEP_ALL, Point, thin


def test_every_published_version_is_a_point_and_delete_forgets_them(store_url: str) -> None:
    with segments.connect(store_url) as segs:
        segs.replace("a", [1, 2, 3])
        segs.add("a", [4, 70_000])
        segs.add("a", [4])  # no change: no version, no point
        segs.apply("a", add=[5], remove=[1, 2])
        points = segs.history("a")
        assert [(p.version, p.cardinality, p.op, p.added, p.removed) for p in points] == [
            (1, 3, "replace", None, None), (2, 5, "add", 2, 0), (3, 4, "apply", 1, 2),
        ]
        assert points[-1].version == segs.info("a").version
        cut = segs.info("a").updated_at
        since = segs.history("a", since=cut)
        assert since[-1].version == 3 and all(p.at_ms >= cut.timestamp() * 1000 - 1 for p in since)
        assert segs.history("a", until=datetime.fromtimestamp(0, UTC)) == []
        segs.delete("a")
        segs.replace("a", [9])
        assert [(p.version, p.cardinality) for p in segs.history("a")] == [(1, 1)]


@given(st.lists(st.integers(1, 5 * DAY_MS), min_size=0, max_size=3000))
def test_thinning_keeps_the_newest_points_then_one_per_hour_then_per_day(gaps: list[int]) -> None:
    points, at = [], 0
    for version, gap in enumerate(gaps, 1):
        at += gap
        points.append(Point(version, at, version, "add"))
    kept = thin(points)
    assert [p.version for p in kept] == sorted(p.version for p in kept)
    assert kept[-KEEP_ALL:] == points[-KEEP_ALL:]
    older = kept[:-KEEP_ALL] if len(points) > KEEP_ALL else []
    newest = points[-KEEP_ALL].at_ms if len(points) > KEEP_ALL else 0
    hours = {p.at_ms // HOUR_MS for p in older if newest - p.at_ms <= 30 * DAY_MS}
    days = {p.at_ms // DAY_MS for p in older if newest - p.at_ms > 30 * DAY_MS}
    assert len(older) == len(hours) + len(days)  # at most one point per hour, then per day
    span_days = (points[-1].at_ms - points[0].at_ms) // DAY_MS + 2 if points else 0
    assert len(kept) <= KEEP_ALL + 30 * 24 + span_days
    assert thin(kept) == kept  # thinning again changes nothing
