"""Replace in parts (segments.staging): the state machine, its store records, the crash-safe apply."""

from __future__ import annotations

import pytest
from pyroaring import BitMap

import segments
from segments import PartOutcome, SegmentStaging, StagingStore
from segments.errors import CorruptSegment
from segments.staging import DONE_KEPT
from segments.storage.base import Record


def part(batch: str, number: int, parts: int, ids: list[int] | None = None) -> tuple[str, int, int, BitMap]:
    """``on_part``'s first arguments: part ``number`` of ``parts`` of ``batch`` (ids default to ``[number]``)."""
    return batch, number, parts, BitMap(ids if ids is not None else [number])


def test_parts_in_any_order_complete_once_and_duplicates_are_ignored() -> None:
    state = SegmentStaging("s")
    kinds = [
        state.on_part(*part("b", 2, 3), "t/0", 10).kind,
        state.on_part(*part("b", 0, 3), "t/0", 11).kind,
        state.on_part(*part("b", 2, 3), "t/0", 12).kind,
        state.on_part(*part("b", 1, 3), "t/0", 13).kind,
        state.on_part(*part("b", 1, 3), "t/0", 14).kind,
    ]
    assert kinds == ["staged", "staged", "duplicate", "completed", "duplicate"]
    assert state.open["b"].complete_at == 13 and state.open["b"].start == 10
    assert state.newest == ("t/0", 10)
    assert state.to_stage() == []  # a batch completed in this consumer batch needs no staging


def test_inconsistent_part_count_is_rejected() -> None:
    state = SegmentStaging("s")
    state.on_part(*part("b", 0, 3), "t/0", 1)
    outcome = state.on_part(*part("b", 1, 4), "t/0", 2)
    assert outcome.kind == PartOutcome.REJECTED and "has 3 parts" in outcome.message


def test_a_batch_started_later_wins_whatever_the_completion_order() -> None:
    state = SegmentStaging("s")
    assert state.on_part(*part("old", 0, 2), "t/0", 1).kind == "staged"
    assert state.on_part(*part("new", 0, 1), "t/0", 2).kind == "completed"  # newer, completes first
    assert "old" not in state.open and "old" in state.done  # older open batch superseded
    assert state.on_part(*part("old", 1, 2), "t/0", 3).kind == "duplicate"  # too late: finished


def test_an_older_batch_completing_after_a_newer_one_was_applied_is_stale() -> None:
    """Defensive: normally the older batch is discarded when the newer completes (see above)."""
    state = SegmentStaging("s")
    state.on_part(*part("old", 0, 2), "t/0", 1)
    state.on_part(*part("new", 0, 2), "t/0", 2)
    state.newest = ("t/0", 2)  # "new" was applied meanwhile (as if completed in an earlier run)
    state.open["new"].staged = {0, 1}
    state.open["new"].complete_at = 3
    assert state.on_part(*part("old", 1, 2), "t/0", 4).kind == PartOutcome.STALE
    assert "old" in state.done and state.garbage == []


def test_finish_applied_moves_completed_batches_to_done_and_collects_their_parts() -> None:
    state = SegmentStaging("s")
    state.on_part(*part("b", 0, 2), "t/0", 5)
    state.mark_staged()
    state.on_part(*part("b", 1, 2), "t/0", 9)
    assert state.finish_applied({"t/0": 8}) == []  # not yet recorded by the segment
    assert state.finish_applied({"t/0": 9}) == ["b"]
    assert state.done == ["b"] and state.open == {} and state.garbage == ["s/b/0"]


def test_state_round_trips_through_its_record_and_keeps_a_bounded_done_list() -> None:
    state = SegmentStaging("s")
    for i in range(DONE_KEPT + 10):
        state.on_part(*part(f"b{i}", 0, 1), "t/0", i)
        state.finish_applied({"t/0": i})
    state.on_part(*part("open", 0, 2), "t/3", 1000)
    state.mark_staged()
    back = SegmentStaging.from_record("s", Record({"state": state.to_json()}, 4))
    assert back.open.keys() == {"open"} and back.open["open"].staged == {0}
    assert back.done == state.done[-DONE_KEPT:] and len(back.done) == DONE_KEPT
    assert back.newest == state.newest and back.generation == 4


def test_damaged_state_record_is_a_corrupt_segment_error() -> None:
    with pytest.raises(CorruptSegment, match="staging state"):
        SegmentStaging.from_record("s", Record({"state": "{bad"}, 1))


def test_store_stages_unions_and_sweeps_parts() -> None:
    segs = segments.connect("memory://")
    store = StagingStore(segs)
    state = store.load(["s"])["s"]
    state.on_part(*part("b", 0, 2, [1, 2]), "t/0", 0)
    store.stage(state.to_stage())
    state.mark_staged()
    store.save(state)
    again = store.load(["s"])["s"]
    assert again.open["b"].staged == {0}
    again.on_part(*part("b", 1, 2, [70_000]), "t/0", 1)
    assert set(store.union(again, "b")) == {1, 2, 70_000}
    store.save(again)
    # a crash after the segment write: the state still lists the batch; the sweep finishes it
    segs.apply("s", add=[1, 2, 70_000], source="t/0", position=1)
    assert store.sweep() == 1
    final = store.load(["s"])["s"]
    assert final.open == {} and final.done == ["b"]
    assert list(segs.store.scan(store.parts_set)) == []


def test_missing_staged_part_is_reported_not_silently_dropped() -> None:
    segs = segments.connect("memory://")
    store = StagingStore(segs)
    state = store.load(["s"])["s"]
    state.on_part(*part("b", 0, 2), "t/0", 0)
    state.mark_staged()  # claims part 0 is staged, but it never was
    state.on_part(*part("b", 1, 2), "t/0", 1)
    with pytest.raises(CorruptSegment, match="missing"):
        store.union(state, "b")


def test_apply_stages_parts_then_replaces_the_segment_once_when_complete() -> None:
    segs = segments.connect("memory://")
    segs.add("s", [1, 2, 3])
    staging = StagingStore(segs)
    state = staging.load(["s"])["s"]
    assert state.on_part(*part("b", 0, 2, [10, 11]), "t/0", 5).kind == PartOutcome.STAGED
    assert staging.apply("s", state, create=False, source="t/0", position=5) is None  # nothing to write yet
    assert set(segs.evaluate("s")) == {1, 2, 3}
    assert [key for key, _ in segs.store.scan(staging.parts_set)] == ["s/b/0"]

    state = staging.load(["s"])["s"]  # as a restarted process would
    assert state.on_part(*part("b", 1, 2, [70_000]), "t/0", 6).kind == PartOutcome.COMPLETED
    result = staging.apply("s", state, batch="b", add=BitMap([99]), remove=BitMap([10]), source="t/0", position=6)
    assert result is not None and result.applied and result.meta.version == 2
    assert set(segs.evaluate("s")) == {11, 70_000, 99}
    assert segs.watermarks(["s"], "t/0") == {"s": 6}
    assert list(segs.store.scan(staging.parts_set)) == []
    again = staging.load(["s"])["s"]
    assert again.open == {} and again.done == ["b"]
    assert again.on_part(*part("b", 1, 2, [70_000]), "t/0", 6).kind == PartOutcome.DUPLICATE


def test_a_batch_applied_just_before_a_crash_is_finished_when_loaded() -> None:
    segs = segments.connect("memory://")
    staging = StagingStore(segs)
    state = staging.load(["s"])["s"]
    state.on_part(*part("b", 0, 2, [1]), "t/0", 0)
    staging.apply("s", state, create=False, source="t/0", position=0)
    state.on_part(*part("b", 1, 2, [2]), "t/0", 1)
    # what apply() does up to the segment write, then the process dies
    staging.save(state)
    segs.replace_from("s", staging.union(state, "b"), source="t/0", position=1)

    reloaded = staging.load(["s"])["s"]
    assert reloaded.open == {} and reloaded.done == ["b"] and reloaded.garbage == ["s/b/0"]
    assert staging.load(["s"], {("s", "t/0"): 0})["s"].open.keys() == {"b"}  # a watermark given is believed
    assert staging.apply("s", reloaded, create=False, source="t/0", position=1) is None
    assert list(segs.store.scan(staging.parts_set)) == [] and set(segs.evaluate("s")) == {1, 2}
