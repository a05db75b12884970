"""Windowed segments against a per-day set model, on every backend."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from segments.errors import BadTime, NameTaken, SegmentNotFound
from segments.expressions import And, Expr, Ref
from segments.expressions.ast import Window

NOW = datetime.now(UTC).replace(second=0, microsecond=0)  # not later than now: a write "today" is not in the future
RETENTION = 20


ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove", "replace"]),
        st.integers(0, RETENTION - 1),  # days ago
        st.sets(st.integers(0, 3 * 65536), max_size=25),
    ),
    max_size=25,
)
windows = st.one_of(
    st.none(),
    st.integers(1, RETENTION + 3).map(lambda n: Window(last=n, unit="d")),
    st.integers(1, 4).map(lambda n: Window(last=24 * n, unit="h")),
    st.tuples(st.integers(0, RETENTION + 2), st.integers(0, 5)).map(
        lambda t: Window(start=(NOW - timedelta(days=t[0] + t[1])).date(), end=(NOW - timedelta(days=t[0])).date())
    ),
)


def _model(days: dict[date, set[int]], window: Window | None, as_of: datetime) -> set[int]:
    today = as_of.date()
    oldest_kept = (NOW - timedelta(days=RETENTION - 1)).date()
    if window is None:
        first, last = (as_of - timedelta(days=RETENTION - 1)).date(), today
    elif window.last is not None:
        count = window.last if window.unit == "d" else window.last // 24
        first, last = today - timedelta(days=count - 1), today
    else:
        assert window.start is not None and window.end is not None
        first, last = window.start, min(window.end, today)
    out: set[int] = set()
    for day, members in days.items():
        if first <= day <= last and day >= oldest_kept:
            out |= members
    return out


@given(ops=ops, window=windows, as_of_days=st.integers(0, 8), other=st.sets(st.integers(0, 3 * 65536), max_size=40))
def test_windows_answer_like_a_per_day_set_model(connect_fresh, ops, window, as_of_days, other) -> None:  # type: ignore[no-untyped-def]
    segs = connect_fresh()
    segs.create_windowed("paid", granularity="day", retention=RETENTION)
    segs.replace("gold", other)
    days: dict[date, set[int]] = {}
    for op, ago, ids in ops:
        at = NOW - timedelta(days=ago)
        bucket = days.setdefault(at.date(), set())
        if op == "add":
            segs.add("paid", ids, at=at)
            bucket |= ids
        elif op == "remove":
            segs.remove("paid", ids, at=at)
            bucket -= ids
        else:
            segs.replace("paid", ids, at=at)
            bucket.clear()
            bucket |= ids
    as_of = NOW - timedelta(days=as_of_days)
    expr: Expr = Ref("paid", window)
    note(f"expr={expr} as_of={as_of}")
    expected = _model(days, window, as_of)
    assert segs.reach(expr, as_of=as_of) == len(expected)
    assert set(segs.evaluate(And((expr, Ref("gold"))), as_of=as_of)) == expected & other
    assert segs.reach(segs.parse(str(expr)), as_of=as_of) == len(expected)  # the grammar round trip


def test_retention_time_checks_and_names(connect_fresh) -> None:  # type: ignore[no-untyped-def]
    segs = connect_fresh()
    segs.replace("plain", [1])
    config = segs.create_windowed("paid", retention=3)
    assert segs.create_windowed("paid", retention=3) == segs.windowed()[0]  # idempotent
    with pytest.raises(NameTaken):
        segs.create_windowed("paid", retention=4)
    with pytest.raises(NameTaken):
        segs.create_windowed("plain")
    with pytest.raises(NameTaken):
        segs.define_audience("paid", "plain")
    with pytest.raises(BadTime):
        segs.add("paid", [1], at=NOW - timedelta(days=10))  # outside the retention
    with pytest.raises(BadTime):
        segs.add("paid", [1], at=datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(BadTime):
        segs.add("plain", [1], at=NOW)
    with pytest.raises(BadTime):
        segs.reach("plain[7d]")
    with pytest.raises(BadTime):
        segs.add("paid", [1], at="yesterday")
    now = datetime.now(UTC)
    for ago in range(3):
        segs.add("paid", [ago], at=now - timedelta(days=ago))
    assert segs.reach("paid") == 3 and segs.reach("paid[1d]") == 1
    assert segs.expire(now=now) == {}  # idempotent: nothing past the retention yet
    later = now + timedelta(days=2)
    assert segs.expire(now=later) == {"paid": sorted(config.bucket_of(now - timedelta(days=a)) for a in (1, 2))}
    assert segs.expire(now=later) == {}
    assert segs.reach("paid") == 1
    history = segs.reach_history("paid[2d]", start=now - timedelta(days=3), end=now, step="1d")
    assert [reach for _, reach in history] == [0, 0, 0, 1]  # only the bucket of now is left
    assert segs.delete("paid") == ["paid"]
    assert [n for n in segs.names(buckets=True) if n.startswith("paid")] == []


window_texts = st.one_of(
    st.builds(lambda n, u: f"{n}{u}", st.integers(1, 999_999), st.sampled_from("dh")),
    st.dates(date(2000, 1, 1), date(2100, 1, 1)).map(date.isoformat),
    st.tuples(st.dates(date(2000, 1, 1), date(2100, 1, 1)), st.integers(0, 400)).map(
        lambda t: f"{t[0].isoformat()}..{(t[0] + timedelta(days=t[1])).isoformat()}"
    ),
)


@given(expr=st.recursive(
    st.tuples(st.sampled_from(["a", "b", "paid"]), st.none() | window_texts).map(
        lambda t: Ref(t[0], None if t[1] is None else Window.parse(t[1]))
    ),
    lambda kids: st.lists(kids, min_size=2, max_size=3).map(lambda ops: And(tuple(ops))),
    max_leaves=6,
))
def test_windows_round_trip_through_text_and_json(expr: Expr) -> None:
    from segments.expressions import from_json, parse, to_json

    assert parse(str(expr)) == expr
    assert from_json(to_json(expr)) == expr


def test_an_audience_may_use_a_windowed_segment(connect_fresh) -> None:  # type: ignore[no-untyped-def]
    segs = connect_fresh()
    segs.replace("gold", [1, 2, 3])
    segs.create_windowed("paid", retention=40)
    segs.add("paid", [2, 3, 4], at=datetime.now(UTC))
    segs.add("paid", [1], at=datetime.now(UTC) - timedelta(days=10))
    segs.define_audience("recent_gold", "gold & paid[7d]")
    assert sorted(segs.evaluate("recent_gold")) == [2, 3]
    assert sorted(segs.evaluate("recent_gold | paid[30d]")) == [1, 2, 3, 4]
    assert segs.matches(2, "recent_gold") and not segs.matches(1, "recent_gold")
    with pytest.raises(NameTaken, match="an audience"):
        segs.replace("recent_gold", [1])


def test_windowed_names_work_wherever_a_segment_does(connect_fresh) -> None:  # type: ignore[no-untyped-def]
    segs = connect_fresh()
    segs.replace("all", range(100))
    segs.replace("a", range(50))
    segs.create_windowed("w")
    segs.add("w", [1, 2, 60])
    segs.remove("w", [2])  # without at: today's bucket
    assert sorted(segs.evaluate("w")) == [1, 60]
    assert segs.overlap(["w", "a"]).matrix == [[2, 1], [1, 50]]
    assert segs.contains("w", 60) and not segs.contains("w", 2)
    assert sorted(i for _, part in segs.iter_shards("w") for i in part) == [1, 60]
    assert {r.segment: r.both for r in segs.insights("a", ["w", "a"]).rows} == {"a": 50, "w": 1}
    # far-away moments resolve to no bucket instead of failing
    assert segs.reach("w[7d]", as_of="0001-01-01") == 0
    assert segs.reach("w[9999-12-31]") == 0
    with pytest.raises(SegmentNotFound):
        segs.reach("nope[7d]")
