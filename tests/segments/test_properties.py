"""Property tests: every backend's answers equal a plain ``set`` oracle, and the algebra's laws hold."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from pyroaring import BitMap

import segments
from segments import bitmap as bm
from segments.expressions import Expr, Ref, to_json
from tests.strategies import SEGMENT_NAMES, expressions, id_sets, oracle, overlapping_sets

segment_sets = st.fixed_dictionaries({name: id_sets for name in SEGMENT_NAMES})
#: mostly heavily overlapping segments (where a wrong operator shows), sometimes independent ones
oracle_sets = st.one_of(overlapping_sets(), overlapping_sets(), segment_sets)


def _load(
    segs: segments.Segments, sets: dict[str, set[int]], universe: set[int] | None = None
) -> dict[str, set[int]]:
    """Store the sets and a universe; by default the universe covers every segment."""
    model = dict(sets)
    model["all"] = set().union(*sets.values()) | {7, 2**32 - 1} if universe is None else universe
    for name, members in model.items():
        segs.replace(name, members)
    return model


# Segments spread over ~40 shards, so planning, region clipping and partial cache entries matter.
spread_ids = st.one_of(st.integers(0, 40 * 65536), st.sampled_from([0, 65535, 65536, 39 * 65536]))
spread_sets = st.one_of(
    st.sets(spread_ids, max_size=80),
    st.builds(lambda start, n: set(range(start, start + n)), st.integers(0, 38 * 65536), st.integers(1, 70000)),
)


@given(
    sets=oracle_sets,
    expr=expressions(),
    universe=st.one_of(st.none(), id_sets),
)
def test_reach_and_evaluate_match_the_set_oracle(connect_fresh, sets, expr: Expr, universe) -> None:  # type: ignore[no-untyped-def]
    """Also with a universe that does not cover every segment: ``y & ~x`` is ``(y & all) - x``."""
    segs = connect_fresh()
    model = _load(segs, sets, universe)
    expected = oracle(expr, model)
    note(f"expr = {expr}")
    assert segs.reach(str(expr)) == len(expected)
    assert set(segs.evaluate(to_json(expr))) == expected
    # a second, hot evaluation answers the same
    assert segs.reach(expr) == len(expected)


@given(
    sets=st.fixed_dictionaries({name: spread_sets for name in SEGMENT_NAMES}),
    warmup=st.lists(expressions(max_leaves=3), max_size=3),
    expr=expressions(),
    partial_universe=st.booleans(),
)
def test_warm_partial_and_cold_caches_agree_with_the_oracle(  # type: ignore[no-untyped-def]
    connect_fresh, store_url, sets, warmup, expr: Expr, partial_universe: bool
) -> None:
    writer = connect_fresh()
    universe = set(range(0, 30 * 65536, 3)) if partial_universe else None
    model = _load(writer, sets, universe)
    expected = oracle(expr, model)
    # hot: every segment cached whole
    writer.warm()
    assert writer.reach(expr) == len(expected)
    # partial: a second client's cache was filled by narrower queries first
    reader = segments.connect(store_url, set_prefix=writer.sets.prefix)
    try:
        for w in warmup:
            assert reader.reach(w) == len(oracle(w, model))
        assert set(reader.evaluate(expr)) == expected
        # after an update, refreshed shard by shard
        changed = set(range(5 * 65536 - 10, 5 * 65536 + 10)) | {33 * 65536}
        writer.add("a", changed)
        model["a"] = model["a"] | changed
        assert reader.reach(expr) == len(oracle(expr, model))
    finally:
        reader.close()


# Large segments over ~40 shards plus one small one ``d``: the evaluator counts an ``|``, ``^`` or ``-`` of
# a composite and a selective operand by inclusion–exclusion (``Evaluator._split``), the composite's part
# inside the small one evaluated inside it (``Evaluator.within``).
big_sets = st.one_of(
    st.sets(st.integers(0, 40 * 65536), min_size=200, max_size=400),
    st.builds(lambda start, n: set(range(start, start + n)), st.integers(0, 38 * 65536), st.integers(2000, 70000)),
)
small_sets = st.one_of(st.sets(st.integers(0, 40 * 65536), max_size=3), st.sets(spread_ids, max_size=3))


@given(
    sets=st.fixed_dictionaries({"a": big_sets, "b": big_sets, "c": big_sets, "d": small_sets}),
    composite=expressions(["a", "b", "c", "d"], max_leaves=5).filter(lambda e: not isinstance(e, Ref)),
    op=st.sampled_from(["|", "^", "-"]),
    small_first=st.booleans(),
    partial_universe=st.booleans(),
    warmup=st.lists(expressions(max_leaves=2), max_size=2),
)
def test_counts_by_inclusion_exclusion_match_the_set_oracle(  # type: ignore[no-untyped-def]
    connect_fresh, store_url, sets, composite: Expr, op: str, small_first: bool, partial_universe: bool, warmup
) -> None:
    writer = connect_fresh()
    universe = set(range(0, 30 * 65536, 2)) if partial_universe else None
    model = _load(writer, sets, universe)
    small = "(d & ~c)" if small_first and op == "-" else "d"
    text = f"{small} {op} ({composite})" if small_first else f"({composite}) {op} {small}"
    expr = segments.parse(text)
    expected = oracle(expr, model)
    note(f"expr = {text}")
    writer.warm()
    assert writer.reach(text) == len(expected)
    reader = segments.connect(store_url, set_prefix=writer.sets.prefix)
    try:  # partial cache entries: narrower queries first
        for w in warmup:
            assert reader.reach(w) == len(oracle(w, model))
        assert reader.reach(text) == len(expected)
    finally:
        reader.close()


COMPLEMENT_PATTERNS = ["a & ~b", "a & b & ~c", "~a & b", "(a | b) & ~c & ~d", "~a & ~b", "a - ~b", "~(a & ~b)"]


@given(sets=segment_sets, universe=id_sets)
def test_complement_inside_intersection_respects_the_universe(connect_fresh, sets, universe) -> None:  # type: ignore[no-untyped-def]
    """Segments may hold IDs outside the universe; ``~x`` is always relative to it."""
    segs = connect_fresh()
    model = _load(segs, sets, universe)
    for text in COMPLEMENT_PATTERNS:
        expr = segments.parse(text)
        expected = oracle(expr, model)
        assert segs.reach(text) == len(expected), text
        assert set(segs.evaluate(text)) == expected, text


LAWS = [
    ("~(a | b)", "~a & ~b"),
    ("~(a & b)", "~a | ~b"),
    ("a & (b | c)", "(a & b) | (a & c)"),
    ("a | (b & c)", "(a | b) & (a | c)"),
    ("a | (a & b)", "a"),
    ("a & (a | b)", "a"),
    ("a - b", "a & ~b"),
    ("a ^ b", "(a - b) | (b - a)"),
    ("~~a", "a"),
    ("a - (b | c)", "a - b - c"),
]


@given(sets=segment_sets)
def test_algebra_laws(connect_fresh, sets) -> None:  # type: ignore[no-untyped-def]
    segs = connect_fresh()
    _load(segs, sets)
    for left, right in LAWS:
        assert segs.evaluate(left) == segs.evaluate(right), (left, right)
        assert segs.reach(left) == segs.reach(right), (left, right)


@given(id_sets)
def test_serialization_round_trip(members: set[int]) -> None:
    original = BitMap(members)
    data = bm.serialize(original)
    assert bm.deserialize(data) == original
    assert BitMap.union(BitMap(), *[p for _, p in bm.split_by_shard(original)]) == original


@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_deserialization(data: bytes) -> None:
    try:
        bm.deserialize(data)
    except segments.InvalidBitmap:
        pass


@given(id_sets, st.data())
def test_mutated_serialized_bytes_are_rejected_or_valid(members: set[int], data: st.DataObject) -> None:
    raw = bytearray(bm.serialize(BitMap(members)))
    if raw:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        decoded = bm.deserialize(bytes(raw[:cut]))
    except segments.InvalidBitmap:
        return
    assert all(0 <= x < 2**32 for x in decoded.to_array()[:10])


class SegmentsMachine(RuleBasedStateMachine):
    """Drives add/remove/replace/delete/reconnect against a set model."""

    url: str = "memory://unused"

    def __init__(self) -> None:
        super().__init__()
        self.prefix = f"m{uuid.uuid4().hex[:8]}_"
        self.segs = segments.connect(self.url, set_prefix=self.prefix)
        self.model: dict[str, set[int]] = {}
        self.versions: dict[str, int] = {}

    @initialize()
    def universe(self) -> None:
        self.segs.replace("all", range(0, 200000, 1))
        self.model["all"] = set(range(0, 200000))
        self.versions["all"] = 1

    def _bump(self, name: str, before: set[int] | None) -> None:
        if before is None or before != self.model[name]:
            self.versions[name] = self.versions.get(name, 0) + 1

    @rule(name=st.sampled_from(SEGMENT_NAMES), members=id_sets)
    def replace(self, name: str, members: set[int]) -> None:
        before = self.model.get(name)
        info = self.segs.replace(name, members)
        self.model[name] = set(members)
        self.versions[name] = self.versions.get(name, 0) + 1
        assert info.version == self.versions[name]
        del before

    @rule(name=st.sampled_from(SEGMENT_NAMES), members=id_sets)
    def add(self, name: str, members: set[int]) -> None:
        before = None if name not in self.model else set(self.model[name])
        info = self.segs.add(name, members)
        self.model[name] = self.model.get(name, set()) | members
        self._bump(name, before)
        assert info.cardinality == len(self.model[name])
        assert info.version == self.versions[name]

    @rule(name=st.sampled_from(SEGMENT_NAMES), members=id_sets)
    def remove(self, name: str, members: set[int]) -> None:
        if name not in self.model:
            with pytest.raises(segments.SegmentNotFound):
                self.segs.remove(name, members)
            return
        before = set(self.model[name])
        info = self.segs.remove(name, members)
        self.model[name] -= members
        self._bump(name, before)
        assert info.cardinality == len(self.model[name])

    @precondition(lambda self: any(n in self.model for n in SEGMENT_NAMES))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(n for n in SEGMENT_NAMES if n in self.model)))
        self.segs.delete(name)
        del self.model[name]
        del self.versions[name]

    @rule()
    def reconnect(self) -> None:
        self.segs.close()
        self.segs = segments.connect(self.url, set_prefix=self.prefix)

    @rule(expr=expressions(max_leaves=4))
    def query(self, expr: Expr) -> None:
        needed = {r for r in segments.expressions.refs(expr)}
        if not needed <= set(self.model):
            with pytest.raises(segments.SegmentNotFound):
                self.segs.reach(expr)
            return
        assert self.segs.reach(expr) == len(oracle(expr, self.model))

    @invariant()
    def matches_model(self) -> None:
        assert self.segs.names() == sorted(self.model)
        for name, members in self.model.items():
            info = self.segs.info(name)
            assert info.cardinality == len(members)
            assert info.version == self.versions[name]
            assert set(self.segs.evaluate(name)) == members

    def teardown(self) -> None:
        self.segs.close()


def test_state_machine(store_url: str) -> None:
    machine = type("Machine", (SegmentsMachine,), {"url": store_url})
    from hypothesis import settings

    current = settings()
    run = settings(current, max_examples=min(current.max_examples, 25), stateful_step_count=15)
    machine.TestCase.settings = run  # type: ignore[attr-defined]
    machine.TestCase().runTest()  # type: ignore[attr-defined]
