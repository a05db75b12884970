"""The consumer's store side (plan + ``Sink``) against real stores and a set model.

One batch of one segment, whatever its messages, is one write that equals
applying them one by one (on a SQLite store).

Crash anywhere, replay from the last commit: the store equals applying every
message exactly once. The consumer's store side runs against a memory store that
dies after a chosen number of writes (as a ``kill -9`` would stop the
process between two store operations). A new sink then replays from the
last committed offset with other batch boundaries. The result is compared
with a set model; versions are checked to move once per applied write and
never on a replay.
"""

from __future__ import annotations

import tempfile

from hypothesis import event, given
from hypothesis import strategies as st
from pyroaring import BitMap

import segments
from ingest.batcher import Consumed
from ingest.codec import Update, decode, encode
from ingest.sink import Handling, Sink, handling, reason
from segments import errors
from segments.errors import StorageUnavailable
from segments.storage.forwarding import WRITES, ForwardingStore
from segments.storage.memory import MemoryStore
from tests.ingest.harness import SetModel
from tests.strategies import id_sets


class Crash(StorageUnavailable):
    """The simulated process death."""


class DyingStore(ForwardingStore):
    """A memory store whose process "dies" at the n-th write (that write does not happen)."""

    def __init__(self, inner: MemoryStore, writes_left: int | None) -> None:
        super().__init__(inner)
        self.writes_left = writes_left

    def before(self, op: str, set_name: str | None) -> None:
        if op in WRITES and self.writes_left is not None:
            if self.writes_left == 0:
                raise Crash("killed")
            self.writes_left -= 1

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- the stream


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]]:
    """Messages of three segments: deltas and replace batches with duplicates, out of order."""
    out: list[tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]] = []
    for _ in range(draw(st.integers(1, 14))):
        name = draw(st.sampled_from(["a", "b", "c"]))
        kind = draw(st.sampled_from(["add", "add", "remove", "replace"]))
        ids = BitMap(draw(st.sets(st.integers(0, 4 * 65536), max_size=30)))
        if kind != "replace":
            msgs = encode(kind, name, ids, encoding=draw(st.sampled_from(["json", "roaring"])))  # type: ignore[arg-type]
        else:
            cut = [BitMap(x for x in ids if x % 3 == r) for r in range(draw(st.integers(1, 3)))]
            batch = f"r{len(out)}"
            msgs = [
                m
                for i, piece in enumerate(cut)
                for m in encode("replace", name, piece, batch=batch, encoding="json")
            ]
            msgs = [
                type(m)(m.key, m.value.replace(b'"part":0,"parts":1', f'"part":{i},"parts":{len(cut)}'.encode()),
                        m.headers, m.count)
                for i, m in enumerate(msgs)
            ]
            msgs = draw(st.permutations(msgs))
            if draw(st.booleans()):
                msgs = [*msgs, draw(st.sampled_from(msgs))]  # a duplicate part
        out.extend((m.key, m.value, m.headers) for m in msgs)
    return out


def consumed(log: list[tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]]) -> list[Consumed]:
    return [Consumed("t", 0, offset, k, v, h, decode(k, v, h)) for offset, (k, v, h) in enumerate(log)]


def run(store: MemoryStore, log: list[Consumed], committed: int, batch_size: int, crash_after: int | None) -> int:
    """Consume from ``committed`` in batches; return the new committed offset (stops at the crash)."""
    segs = segments.Segments(DyingStore(store, crash_after))
    sink = Sink(segs)
    while committed < len(log):
        batch = log[committed : committed + batch_size]
        try:
            p = sink.prepare(batch)
            for work in p.work:
                sink.write(work)
        except Crash:
            event("crashed")
            return committed
        committed = batch[-1].offset + 1
    return committed


@given(streams(), st.integers(1, 6), st.lists(st.integers(0, 25), max_size=3), st.integers(1, 6))
def test_any_crash_then_replay_equals_applying_each_message_once(
    raw: list[tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]],
    batch_size: int,
    crashes: list[int],
    replay_batch: int,
) -> None:
    log = consumed(raw)
    model = SetModel()
    for record in log:
        assert isinstance(record.decoded, Update)
        model.apply_update(record.offset, record.decoded)

    store = MemoryStore()
    committed = 0
    for crash_after in crashes:
        committed = run(store, log, committed, batch_size, crash_after)
    assert run(store, log, committed, replay_batch, None) == len(log)

    segs = segments.Segments(store)
    assert {n: set(segs.evaluate(n)) for n in segs.names()} == model.members
    before = {i.name: (i.version, i.cardinality) for i in segs.infos()}
    assert all(v <= len(log) for v, _ in before.values())
    # a replay of the whole log changes nothing, not even a version
    assert run(store, log, 0, batch_size, None) == len(log)
    assert {i.name: (i.version, i.cardinality) for i in segs.infos()} == before
    # after a sweep, exactly the parts of the still-incomplete batches are staged
    staging = Sink(segs).staging
    staging.sweep()
    expected = {
        f"{name}/{batch}/{number}"
        for name, opened in model.open.items()
        for batch, (_, _, got) in opened.items()
        for number in got
    }
    assert {key for key, _ in store.scan(staging.parts_set)} == expected
    states = staging.load(model.open)
    assert {(n, b) for n, st in states.items() for b in st.open} == {
        (n, b) for n, opened in model.open.items() for b in opened
    }


@given(
    st.none() | id_sets,
    st.lists(st.tuples(st.sampled_from(["add", "remove", "replace"]), id_sets), max_size=12),
)
def test_one_write_of_a_batch_equals_applying_its_messages_one_by_one(
    start: set[int] | None, sequence: list[tuple[str, set[int]]]
) -> None:
    """``start`` None: the segment does not exist. A replace is one whole batch (all its parts)."""
    raw: list[tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]] = []
    model = None if start is None else set(start)
    for number, (op, ids) in enumerate(sequence):
        batch = f"b{number}" if op == "replace" else None
        for m in encode(op, "s", BitMap(ids), batch=batch):  # type: ignore[arg-type]
            raw.append((m.key, m.value, m.headers))
        if op == "add" or op == "replace":
            model = (set() if model is None or op == "replace" else model) | ids
        elif model is not None:
            model -= ids
    with tempfile.TemporaryDirectory() as tmp, segments.connect(f"sqlite:///{tmp}/s.db") as segs:
        if start is not None:
            segs.replace("s", start)
        version = segs.info("s").version if start is not None else 0
        sink = Sink(segs)
        p = sink.prepare(consumed(raw))
        assert p.rejected == []
        for work in p.work:
            assert not work.fold.add & work.fold.remove  # minimal: one remove-then-add is exact
            sink.write(work)
        if model is None:
            assert segs.names() == []
            return
        assert set(segs.evaluate("s")) == model
        info = segs.info("s")
        assert info.cardinality == len(model)
        changes = any(op != "remove" or ids for op, ids in sequence)  # a remove of no IDs writes nothing
        assert info.version == version + (1 if changes else 0)  # one write, whatever the count
        assert list(segs.store.scan(sink.staging.parts_set)) == []  # every batch was complete


def test_versions_move_once_per_applied_write() -> None:
    log = consumed(
        [(m.key, m.value, m.headers) for m in encode("add", "s", BitMap([1, 2]))]
        + [(m.key, m.value, m.headers) for m in encode("remove", "s", BitMap([1]))]
        + [(m.key, m.value, m.headers) for m in encode("add", "s", BitMap([5]))]
    )
    store = MemoryStore()
    assert run(store, log, 0, 2, None) == 3  # two batches: two writes
    segs = segments.Segments(store)
    assert segs.info("s").version == 2 and set(segs.evaluate("s")) == {2, 5}
    assert segs.watermarks(["s"], "t/0") == {"s": 2}


def test_a_segment_whose_stored_state_is_damaged_is_rejected_alone() -> None:
    store = MemoryStore()
    segs = segments.Segments(store)
    segs.add("good", [1])
    segs.add("bad", [1])
    store.put(segs.sets.meta, "bad", {"card": "x"})  # damaged meta record
    log = consumed(
        [(m.key, m.value, m.headers) for m in encode("add", "bad", BitMap([2]))]
        + [(m.key, m.value, m.headers) for m in encode("add", "good", BitMap([2]))]
    )
    sink = Sink(segs)
    p = sink.prepare(log)
    assert [(r.record.offset, r.reason) for r in p.rejected] == [(0, "corrupt_data")]
    assert "cannot be prepared" in p.rejected[0].message
    for work in p.work:
        sink.write(work)
    assert set(segs.evaluate("good")) == {1, 2}


def test_damaged_staging_state_rejects_only_that_segment() -> None:
    store = MemoryStore()
    segs = segments.Segments(store)
    sink = Sink(segs)
    store.put(sink.staging.meta_set, "bad", {"state": "{"})
    log = consumed(
        [(m.key, m.value, m.headers) for m in encode("replace", "bad", BitMap([2]), batch="b")]
        + [(m.key, m.value, m.headers) for m in encode("replace", "good", BitMap([3]), batch="b")]
    )
    p = sink.prepare(log)
    assert [(r.record.offset, r.reason) for r in p.rejected] == [(0, "corrupt_data")]
    for work in p.work:
        sink.write(work)
    assert segs.names() == ["good"] and set(segs.evaluate("good")) == {3}


def test_handling_is_decided_by_the_fault_alone() -> None:
    expected = {
        errors.StorageUnavailable: Handling.RETRY,
        errors.StorageTimeout: Handling.RETRY,
        errors.Conflict: Handling.RETRY,
        errors.StorageFull: Handling.RETRY,
        errors.StorageMisconfigured: Handling.STOP,
        errors.CorruptSegment: Handling.DEAD_LETTER,
        errors.RecordTooLarge: Handling.DEAD_LETTER,
        errors.InvalidBitmap: Handling.DEAD_LETTER,
    }
    every = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.SegmentsError)]
    for cls in every:
        error = cls.__new__(cls)  # the class decides; no message needed
        assert handling(error) in Handling, cls  # every fault has a handling
        assert handling(error) is expected.get(cls, handling(error)), cls
        assert reason(error) == cls.code
    assert set(expected) <= set(every)
    assert handling(RuntimeError("a bug")) is Handling.DEAD_LETTER and reason(RuntimeError()) == "apply_failed"
