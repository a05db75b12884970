"""Audiences: live named expressions against a set model, on every backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from pyroaring import BitMap

import segments
from segments.errors import AudienceCycle, InUse, NameTaken, SegmentNotFound
from segments.expressions import Expr, Ref, refs
from tests.strategies import SEGMENT_NAMES, expressions, oracle, overlapping_sets


@pytest.fixture
def segs(store_url: str) -> Iterator[segments.Segments]:
    with segments.connect(store_url) as s:
        yield s


def _model_of(expr: Expr, sets: dict[str, set[int]], audiences: dict[str, Expr]) -> set[int]:
    """The oracle with audiences: expand by hand, then evaluate over sets."""

    def expand(node: Expr) -> Expr:
        if isinstance(node, Ref):
            return expand(audiences[node.name]) if node.name in audiences else node
        from segments.expressions import Not

        if isinstance(node, Not):
            return Not(expand(node.operand))
        return type(node)(tuple(expand(op) for op in node.operands))

    return oracle(expand(expr), sets)


def test_an_audience_is_live_and_usable_wherever_a_segment_is(segs: segments.Segments) -> None:
    segs.replace("all", range(100))
    segs.replace("gold", range(0, 50))
    segs.replace("churned", range(40, 60))
    gold_active = segs.define_audience("gold_active", "gold - churned", "gold card, not churned")
    assert gold_active.version == 1 and str(gold_active.expr) == "gold - churned"
    assert segs.reach("gold_active") == 40
    result = segs.reach_detailed("gold_active & ~churned")
    assert result.reach == 40 and result.audiences == {"gold_active": 1}
    assert set(result.versions) == {"all", "gold", "churned"}
    # live: the segments change underneath, the audience follows
    segs.add("gold", [95, 96])
    assert segs.reach("gold_active") == 42
    assert sorted(segs.evaluate("gold_active"))[-2:] == [95, 96]
    # audiences of audiences, overlap, membership, export
    segs.define_audience("top", "gold_active & all")
    assert segs.reach("top") == 42
    overlap = segs.overlap(["top", "churned"])
    assert overlap.sizes == [42, 20] and overlap.matrix[0][1] == 0
    assert segs.contains("top", 95) and not segs.contains("top", 45)
    assert sum(len(part) for _, part in segs.iter_shards("top")) == 42
    assert segs.matches(95, "top") and not segs.matches(45, "top | ~all")
    assert segs.match_many([1, 45, 95, 99], "top") == [True, False, True, False]
    assert segs.audiences_of(1) == ["gold_active", "top"]
    # redefinition is versioned and remembered
    again = segs.define_audience("gold_active", "gold", "all gold")
    assert again.version == 2 and [d.expr for d in again.history] == ["gold - churned", "gold"]
    assert segs.reach("top") == 52


def test_names_cycles_and_dependents_are_refused_clearly(segs: segments.Segments) -> None:
    segs.replace("all", range(10))
    segs.replace("a", [1, 2])
    segs.define_audience("x", "a")
    with pytest.raises(NameTaken):
        segs.define_audience("a", "all")
    with pytest.raises(NameTaken):
        segs.replace("x", [1])  # an audience's name cannot become a segment
    with pytest.raises(NameTaken):
        segs.define_audience("all", "a")
    with pytest.raises(SegmentNotFound) as missing:
        segs.define_audience("y", "a | nope")
    assert missing.value.names == ["nope"]
    segs.define_audience("y", "x | a")
    with pytest.raises(AudienceCycle) as cycle:
        segs.define_audience("x", "y & a")
    assert cycle.value.cycle == ["x", "y", "x"]
    with pytest.raises(AudienceCycle):
        segs.define_audience("x", "x")
    assert str(segs.audience("x").expr) == "a"  # the refused definitions changed nothing
    with pytest.raises(InUse) as in_use:
        segs.delete("a")
    assert in_use.value.dependents == ["x", "y"]
    with pytest.raises(InUse):
        segs.delete_audience("x")
    assert segs.delete_audience("x", cascade=True) == ["x", "y"]
    assert segs.list_audiences() == []
    segs.define_audience("z", "a")
    assert segs.delete("a", cascade=True) == ["a", "z"]
    with pytest.raises(SegmentNotFound):
        segs.reach("z")


@given(sets=overlapping_sets(), defs=st.lists(expressions(max_leaves=4), min_size=1, max_size=3),
       query=expressions(names=[*SEGMENT_NAMES, "aud0"], max_leaves=5), users=st.lists(st.integers(0, 70000), max_size=8))
def test_audience_answers_equal_the_set_model(connect_fresh, sets, defs, query, users) -> None:  # type: ignore[no-untyped-def]
    """Audience k may use the segments and the audiences before it; queries use them all."""
    segs = connect_fresh()
    sets = dict(sets)
    sets["all"] = set().union(*sets.values()) | {7}
    for name, members in sets.items():
        segs.replace(name, members)
    audiences: dict[str, Expr] = {}
    for i, definition in enumerate(reversed(defs)):
        name = f"aud{len(defs) - 1 - i}"
        # aud(n-1) uses segments only, aud(k) may use aud(k+1): rename a leaf to the next audience
        if audiences:
            leaf = refs(definition)[0]
            definition = segs.parse(str(definition).replace(leaf, sorted(audiences)[0], 1)) if leaf else definition
        segs.define_audience(name, definition)
        audiences[name] = definition
    note(f"audiences: { {k: str(v) for k, v in audiences.items()} }; query: {query}")
    expected = _model_of(query, sets, audiences)
    assert segs.reach(query) == len(expected)
    assert set(segs.evaluate(query)) == expected
    assert segs.match_many(users, query) == [u in expected for u in users]
    insight = segs.insights(query, SEGMENT_NAMES)
    for row in insight.rows:
        both = len(expected & sets[row.segment])
        assert row.both == both
        share_u = len(sets[row.segment] & sets["all"]) / len(sets["all"])
        share_a = both / len(expected) if expected else 0.0
        assert row.index == (pytest.approx(share_a / share_u * 100) if share_u else None)


class AudienceMachine(RuleBasedStateMachine):
    """Segments change underneath audiences; every audience always answers like its definition."""

    url = ""

    @initialize()
    def start(self) -> None:
        self.segs = segments.connect(self.url, set_prefix=f"m{uuid.uuid4().hex[:8]}_")
        self.sets: dict[str, set[int]] = {"all": set(range(0, 200_000, 97))}
        self.segs.replace("all", self.sets["all"])
        for name in SEGMENT_NAMES:
            self.sets[name] = set()
            self.segs.replace(name, [])
        self.audiences: dict[str, Expr] = {}

    @rule(name=st.sampled_from(SEGMENT_NAMES), ids=st.sets(st.integers(0, 200_000), max_size=30))
    def add(self, name: str, ids: set[int]) -> None:
        self.segs.add(name, BitMap(ids))
        self.sets[name] |= ids

    @rule(name=st.sampled_from(SEGMENT_NAMES), ids=st.sets(st.integers(0, 200_000), max_size=30))
    def replace(self, name: str, ids: set[int]) -> None:
        self.segs.replace(name, BitMap(ids))
        self.sets[name] = set(ids)

    @rule(name=st.sampled_from(["p", "q"]), expr=expressions(max_leaves=4))
    def define(self, name: str, expr: Expr) -> None:
        self.segs.define_audience(name, expr)
        self.audiences[name] = expr

    @rule(expr=expressions(names=[*SEGMENT_NAMES], max_leaves=3))
    def define_on_audience(self, expr: Expr) -> None:
        if "p" not in self.audiences:
            return
        combined = segments.parse(f"p & ({expr})")
        self.segs.define_audience("r", combined)
        self.audiences["r"] = combined

    @invariant()
    def audiences_are_live(self) -> None:
        if not hasattr(self, "segs"):
            return
        for name in self.audiences:
            expected = _model_of(Ref(name), self.sets, self.audiences)
            assert self.segs.reach(name) == len(expected)

    def teardown(self) -> None:
        if hasattr(self, "segs"):
            self.segs.close()


def test_audience_state_machine(store_url: str) -> None:
    AudienceMachine.url = store_url
    AudienceMachine.TestCase().runTest()
