"""The pure batcher: plan drops replays, groups by segment and routes replace parts (the fold's
equivalence with applying one by one is checked on the real path, plan + sink, in test_sink.py)."""

from __future__ import annotations

from pyroaring import BitMap

from ingest.batcher import Batch, Consumed, group, plan
from ingest.codec import DecodeError, Update
from segments import SegmentStaging


def rec(offset: int, update: Update | DecodeError, partition: int = 0, topic: str = "t") -> Consumed:
    return Consumed(topic, partition, offset, b"k", b"v", [], update)


def test_plan_drops_messages_at_or_below_the_watermark_and_writes_the_rest_once() -> None:
    records = [rec(o, Update("add", "s", BitMap([o]))) for o in range(10)]
    p = plan(group(records)[0], {("s", "t/0"): 6}, {})
    assert p.replayed == {("s", "t/0"): 7}
    [work] = p.work
    assert (work.segment, work.source, work.position) == ("s", "t/0", 9)
    assert set(work.fold.add) == {7, 8, 9}
    assert work.applied == {"add": 3} and work.ids == {"add": 3}


def test_plan_groups_by_segment_and_partition_in_offset_order() -> None:
    records = [
        rec(5, Update("remove", "a", BitMap([1])), partition=1),
        rec(2, Update("add", "a", BitMap([1, 2])), partition=1),
        rec(3, Update("add", "b", BitMap([9]))),
        rec(4, DecodeError("bad_json", "x")),
    ]
    groups, rejected = group(records)
    assert [(g.segment, g.source, [r.offset for r in g.records]) for g in groups] == [
        ("b", "t/0", [3]),
        ("a", "t/1", [2, 5]),
    ]
    assert [(r.record.offset, r.reason) for r in rejected] == [(4, "bad_json")]
    p = plan(groups, {}, {})
    a = next(w for w in p.work if w.segment == "a")
    assert set(a.fold.add) == {2} and set(a.fold.remove) == {1}  # add then remove, in offset order


def test_plan_routes_replace_parts_through_staging() -> None:
    def part(offset: int, number: int, ids: list[int], parts: int = 2, batch: str = "b") -> Consumed:
        return rec(offset, Update("replace", "s", BitMap(ids), batch, number, parts))

    records = [
        rec(0, Update("add", "s", BitMap([100]))),
        part(1, 1, [2]),
        rec(2, Update("add", "s", BitMap([101]))),
        part(3, 1, [2]),  # duplicate
        part(4, 0, [1]),  # completes: the segment becomes {1, 2} here
        rec(5, Update("remove", "s", BitMap([1]))),
        part(6, 0, [1], parts=3, batch="c"),
        part(7, 1, [1], parts=5, batch="c"),  # inconsistent
    ]
    state = SegmentStaging("s")
    p = plan(group(records)[0], {}, {"s": state})
    [work] = p.work
    assert work.fold.base == "b"
    assert set(work.fold.add) == set() and set(work.fold.remove) == {1}
    assert work.parts == {"staged": 2, "duplicate": 1, "completed": 1, "rejected": 1}
    assert [(r.record.offset, r.reason) for r in p.rejected] == [(7, "bad_part")]
    assert state.open["b"].complete_at == 4
    assert state.to_stage() == [("s/c/0", BitMap([1]), 3)]


def test_batch_is_due_when_full_or_stale_and_forgets_revoked_partitions() -> None:
    batch = Batch(max_messages=3, max_ids=100, max_wait=1.0)
    assert not batch.due(0.0)
    batch.add(rec(0, Update("add", "s", BitMap([1, 2]))), now=10.0)
    batch.add(rec(0, Update("add", "s", BitMap([3])), partition=1), now=10.5)
    assert not batch.due(10.9) and batch.due(11.0)
    assert not batch.due(11.0, drained=False)  # stale, but more is waiting: keep filling
    assert batch.ids == 3
    assert batch.drop_partitions({("t", 1)}) == 1
    assert batch.ids == 2 and len(batch.records) == 1
    batch.add(rec(1, DecodeError("bad_json", "x")), now=10.6)
    batch.add(rec(2, Update("add", "s", BitMap([4]))), now=10.7)
    assert batch.full and batch.due(10.7)
    big = Batch(max_messages=100, max_ids=5, max_wait=1.0)
    big.add(rec(0, Update("add", "s", BitMap(range(5)))), now=0.0)
    assert big.full
    batch.clear()
    assert batch.records == [] and batch.started is None and not batch.due(100.0)
