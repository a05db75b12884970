"""The planner against a naive region oracle, and evaluation restricted to the plan against sets.

The oracle decides shard by shard, with plain booleans and Python sets, where
a node can be non-empty and where each segment is needed; the planner does
the same with int bitmasks over all shards at once.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from pyroaring import BitMap

from segments.catalog import SHARD_ENTRY, ShardMap, shards_in
from segments.evaluate import Evaluator
from segments.expressions import And, Diff, Expr, Not, Ref
from segments.plan import Planner
from tests.strategies import SEGMENT_NAMES, expressions, oracle

UNIVERSE = "all"
NAMES = [*SEGMENT_NAMES, UNIVERSE]
shard_sets = st.sets(st.integers(0, 12), max_size=10)


def _map(name: str, shards: set[int]) -> ShardMap:
    arr = np.zeros(len(shards), dtype=SHARD_ENTRY)
    for i, s in enumerate(sorted(shards)):
        arr[i] = (s, 1, i + 1)
    return ShardMap(f"{name}/map", arr)


def _can_be_nonempty(node: Expr, shard: int, has: dict[str, set[int]]) -> bool:
    """Naively, on one shard: can ``node`` hold a member there?"""
    if isinstance(node, Ref):
        return shard in has[node.name]
    if isinstance(node, Not):
        return shard in has[UNIVERSE]
    values = [_can_be_nonempty(op, shard, has) for op in node.operands]
    if isinstance(node, And):
        return all(values)
    if isinstance(node, Diff):
        return values[0]
    return any(values)


def _needed(node: Expr, shard: int, has: dict[str, set[int]], out: dict[str, set[int]]) -> None:
    """Naively, on one shard the root may be non-empty on: record which segments the answer reads there."""
    if not _can_be_nonempty(node, shard, has):
        return
    if isinstance(node, Ref):
        out[node.name].add(shard)
        return
    if isinstance(node, Not):
        out[UNIVERSE].add(shard)
        _needed(node.operand, shard, has, out)
        return
    for op in node.operands:
        _needed(op, shard, has, out)


def _oracle_needs(expr: Expr, has: dict[str, set[int]]) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {n: set() for n in NAMES}
    for shard in range(16):
        _needed(expr, shard, has, out)
    return out


@given(has=st.fixed_dictionaries({n: shard_sets for n in NAMES}), expr=expressions())
def test_planned_shards_equal_the_naive_region_oracle(has: dict[str, set[int]], expr: Expr) -> None:
    maps = {n: _map(n, shards) for n, shards in has.items()}
    needs = Planner(maps, UNIVERSE).needs(expr)
    expected = _oracle_needs(expr, has)
    for name, need in needs.items():
        planned = has[name] if need is None else set(shards_in(need))
        # the planner never asks for a shard the segment does not have, nor for one the oracle would skip
        assert planned <= has[name]
        assert planned == expected[name], (name, str(expr))
    # and it plans every segment the oracle reads somewhere
    assert {n for n, s in expected.items() if s} <= set(needs)


member_sets = st.sets(st.integers(0, 12 * 65536 + 100), max_size=60)


@given(sets=st.fixed_dictionaries({n: member_sets for n in NAMES}), expr=expressions())
def test_evaluating_only_the_planned_shards_matches_sets(sets: dict[str, set[int]], expr: Expr) -> None:
    """Bitmaps cut down to exactly the planned shards still give the exact answer."""
    sets = dict(sets)
    sets[UNIVERSE] = sets[UNIVERSE] | set().union(*(sets[n] for n in SEGMENT_NAMES))
    maps = {n: _map(n, {i >> 16 for i in members}) for n, members in sets.items()}
    plan = Planner(maps, UNIVERSE)
    loaded = {}
    for name, need in plan.needs(expr).items():
        mask = maps[name].mask if need is None else need
        shards = set(shards_in(mask))
        loaded[name] = (BitMap(i for i in sets[name] if i >> 16 in shards), mask)

    def region(mask: int) -> BitMap:
        out = BitMap()
        for s in shards_in(mask):
            out.add_range(s << 16, (s + 1) << 16)
        return out

    expected = oracle(expr, sets)
    evaluator = Evaluator(plan, loaded, region)  # type: ignore[arg-type]
    assert evaluator.count(expr) == len(expected)
    assert set(Evaluator(plan, loaded, region).eval(expr)) == expected  # type: ignore[arg-type]
