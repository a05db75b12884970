"""Hypothesis strategies: ID sets that hit shard and container edges, and expressions."""

from __future__ import annotations

from hypothesis import strategies as st

from segments.expressions import And, Diff, Expr, Not, Or, Ref, Xor

MAX_ID = 2**32 - 1
EDGES = [0, 1, 4095, 4096, 65535, 65536, 65537, 131071, 131072, 2**31, MAX_ID - 65536, MAX_ID - 1, MAX_ID]

SEGMENT_NAMES = ["a", "b", "c", "d"]

ids = st.one_of(
    st.sampled_from(EDGES),
    st.integers(0, 3 * 65536),
    st.integers(0, MAX_ID),
)


@st.composite
def dense_run(draw: st.DrawFn) -> set[int]:
    """A contiguous run, possibly crossing a shard boundary (run/bitset containers)."""
    start = draw(st.sampled_from([0, 65536 - 3000, 2 * 65536, MAX_ID - 5000]))
    length = draw(st.integers(1, 6000))
    return set(range(start, min(start + length, MAX_ID + 1)))


id_sets = st.one_of(
    st.just(set()),
    st.sets(ids, max_size=60),
    st.builds(lambda a, b: a | b, dense_run(), st.sets(ids, max_size=20)),
)


@st.composite
def overlapping_sets(draw: st.DrawFn, names: list[str] = SEGMENT_NAMES) -> dict[str, set[int]]:
    """Segments drawn from one small pool of IDs, so most pairs share most members.

    With independent draws two sets rarely meet, and an evaluator that computed
    ``a ^ b`` as ``a | b`` or ``a - b`` as ``b - a`` would agree with the oracle.
    The pool spans a few shards and a dense run so containers of every kind meet.
    """
    pool = sorted(draw(st.sets(st.sampled_from(EDGES) | st.integers(0, 3 * 65536), min_size=1, max_size=40)))
    pool += list(range(65536 - 50, 65536 + 50))
    return {name: {i for i in pool if draw(st.integers(0, 9)) < 7} for name in names}


def expressions(names: list[str] = SEGMENT_NAMES, max_leaves: int = 8) -> st.SearchStrategy[Expr]:
    leaves = st.sampled_from(names).map(Ref)

    def extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        pairs = st.lists(children, min_size=2, max_size=3).map(tuple)
        return st.one_of(
            children.map(Not),
            pairs.map(And),
            pairs.map(Or),
            pairs.map(Diff),
            pairs.map(Xor),
        )

    return st.recursive(leaves, extend, max_leaves=max_leaves)


def oracle(expr: Expr, sets: dict[str, set[int]], universe: str = "all") -> set[int]:
    """The naive model: evaluate over Python sets."""
    if isinstance(expr, Ref):
        return sets[expr.name]
    if isinstance(expr, Not):
        return sets[universe] - oracle(expr.operand, sets, universe)
    values = [oracle(op, sets, universe) for op in expr.operands]
    result = set(values[0])
    for v in values[1:]:
        if isinstance(expr, And):
            result &= v
        elif isinstance(expr, Or):
            result |= v
        elif isinstance(expr, Diff):
            result -= v
        else:
            result ^= v
    return result
