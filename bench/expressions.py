"""The benchmark expressions and the reference evaluators every method is checked against.

Expressions are parsed with the library's own parser, so every method sees
the same tree. ``naive_count`` chains pyroaring operators the way a
developer would without an engine; ``set_count`` does the same over Python
sets. ``touched_bytes`` computes what a query must read at the least (the
physical floor's numerator).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyroaring import BitMap

from segments.expressions import And, Diff, Expr, Not, Or, Ref, Xor, parse

from .datasets import UNIVERSE

#: the headline query of the issue
HEADLINE = "((s10 | s30) & s60) - s1 & clustered"


@dataclass(frozen=True)
class Query:
    key: str
    text: str

    @property
    def tree(self) -> Expr:
        return parse(self.text)

    @property
    def terms(self) -> int:
        return count_terms(self.tree)


#: 2 to 8 terms, every operator, every shape; ``q5`` is the headline query
QUERIES: tuple[Query, ...] = (
    Query("q2a", "s10 & s30"),
    Query("q2b", "s1 & clustered"),
    Query("q3", "s60 - s10 | s1"),
    Query("q4", "(s30 ^ s60) & skewed | s1"),
    Query("q5", HEADLINE),
    Query("q6", "~s1 & s60 & (s30 | skewed) - s10 ^ clustered"),
    Query("q7", "(s10 | clustered) & (s30 | skewed) & s60 - s1 ^ skewed"),
    Query("q8", "~(s1 | s10) & (s30 ^ skewed) - (s60 & clustered) | s1 & ~skewed"),
)


def count_terms(node: Expr) -> int:
    if isinstance(node, Ref):
        return 1
    if isinstance(node, Not):
        return count_terms(node.operand)
    return sum(count_terms(op) for op in node.operands)


# -- reference evaluators ----------------------------------------------------


def naive_count(node: Expr, bitmaps: Mapping[str, BitMap]) -> int:
    """Binary pyroaring operators, left to right, every intermediate materialised."""
    return len(_fold(node, bitmaps))


def set_count(node: Expr, sets: Mapping[str, set[int]]) -> int:
    """The same evaluation over Python sets."""
    return len(_fold(node, sets))


def _fold(node: Expr, values_of: Mapping[str, Any]) -> Any:
    """Binary operators left to right over any type with ``& | - ^`` (bitmaps or sets)."""
    if isinstance(node, Ref):
        return values_of[node.name]
    if isinstance(node, Not):
        return values_of[UNIVERSE] - _fold(node.operand, values_of)
    values = [_fold(op, values_of) for op in node.operands]
    result = values[0]
    for value in values[1:]:
        if isinstance(node, And):
            result = result & value
        elif isinstance(node, Or):
            result = result | value
        elif isinstance(node, Diff):
            result = result - value
        else:
            result = result ^ value
    return result


# -- the physical floor --------------------------------------------------------


def container_bytes(bitmap: BitMap) -> np.ndarray:
    """Serialized payload bytes of each 2^16-ID container, indexed by shard (0 where empty).

    Read from the portable serialization's headers: a bitmap container is
    8192 bytes, an array container 2 per member, a run container 2 + 4 per run.
    """
    if not bitmap:
        return np.zeros(0, dtype=np.int64)
    data = bitmap.serialize()
    cookie = int.from_bytes(data[0:4], "little")
    has_runs = cookie & 0xFFFF == 12347
    if has_runs:
        n = (cookie >> 16) + 1
        flags = np.frombuffer(data, dtype=np.uint8, count=(n + 7) // 8, offset=4)
        is_run = np.unpackbits(flags, bitorder="little")[:n].astype(bool)
        pos = 4 + (n + 7) // 8
    else:
        n = int.from_bytes(data[4:8], "little")
        is_run = np.zeros(n, dtype=bool)
        pos = 8
    header = np.frombuffer(data, dtype="<u2", count=2 * n, offset=pos).reshape(n, 2)
    keys = header[:, 0].astype(np.int64)
    cards = header[:, 1].astype(np.int64) + 1
    sizes = np.where(cards > 4096, 8192, 2 * cards)
    pos += 4 * n
    if is_run.any():
        if not has_runs or n >= 4:  # an offset header gives each container's position
            offsets = np.frombuffer(data, dtype="<u4", count=n, offset=pos).astype(np.int64)
            for i in np.flatnonzero(is_run).tolist():
                sizes[i] = 2 + 4 * int.from_bytes(data[offsets[i] : offsets[i] + 2], "little")
        else:  # small bitmaps with runs: containers follow one another
            for i in range(n):
                if is_run[i]:
                    sizes[i] = 2 + 4 * int.from_bytes(data[pos : pos + 2], "little")
                pos += int(sizes[i])
    out = np.zeros(int(keys[-1]) + 1, dtype=np.int64)
    out[keys] = sizes
    return out


class _FloorPlanner:
    """The least data a query must read: per segment, the containers of the shards that can contribute.

    Same upper-bound/region planning as the engine's: ``ub(node)`` bounds the
    shards where a node can be non-empty, a node matters only on
    ``R(parent) ∩ ub(node)``, and ``~x`` next to a positive ``&`` operand is a
    subtraction (the universe is not read).
    """

    def __init__(self, shard_bytes: Mapping[str, np.ndarray]) -> None:
        width = max(len(v) for v in shard_bytes.values())
        self.bytes = {n: np.pad(v, (0, width - len(v))) for n, v in shard_bytes.items()}
        self.present = {n: v > 0 for n, v in self.bytes.items()}
        self.width = width

    def ub(self, node: Expr) -> np.ndarray:
        if isinstance(node, Ref):
            return self.present[node.name]
        if isinstance(node, Not):
            return self.present[UNIVERSE]
        parts = [self.ub(op) for op in node.operands]
        if isinstance(node, And):
            out: np.ndarray = np.logical_and.reduce(parts)
            return out
        if isinstance(node, Diff):
            return parts[0]
        union: np.ndarray = np.logical_or.reduce(parts)
        return union

    def touched(self, root: Expr) -> dict[str, int]:
        """Bytes per segment that evaluating ``root`` must read."""
        need: dict[str, np.ndarray] = {}

        def mark(name: str, region: np.ndarray) -> None:
            region = region & self.present[name]
            need[name] = need[name] | region if name in need else region

        def walk(node: Expr, region: np.ndarray) -> None:
            if isinstance(node, Ref):
                mark(node.name, region)
            elif isinstance(node, Not):
                mark(UNIVERSE, region)
                walk(node.operand, region & self.ub(node.operand))
            elif isinstance(node, And) and not all(isinstance(op, Not) for op in node.operands):
                for op in node.operands:
                    inner = op.operand if isinstance(op, Not) else op
                    walk(inner, region & self.ub(inner))
            else:
                for op in node.operands:
                    walk(op, region & self.ub(op))

        walk(root, self.ub(root))
        return {name: int(self.bytes[name][mask].sum()) for name, mask in need.items()}


def touched_bytes(root: Expr, shard_bytes: Mapping[str, np.ndarray]) -> tuple[int, dict[str, int]]:
    per_segment = _FloorPlanner(shard_bytes).touched(root)
    return sum(per_segment.values()), per_segment


# -- other systems' query languages ------------------------------------------------


def to_clickhouse(node: Expr) -> str:
    """The expression with ClickHouse bitmap functions over columns named like the segments."""
    if isinstance(node, Ref):
        return node.name
    if isinstance(node, Not):
        return f"bitmapAndnot({UNIVERSE}, {to_clickhouse(node.operand)})"
    fn = {And: "bitmapAnd", Or: "bitmapOr", Diff: "bitmapAndnot", Xor: "bitmapXor"}[type(node)]
    result = to_clickhouse(node.operands[0])
    for op in node.operands[1:]:
        result = f"{fn}({result}, {to_clickhouse(op)})"
    return result


def to_redis(node: Expr, prefix: str) -> tuple[list[tuple[str, ...]], str, list[str]]:
    """``BITOP`` commands computing the expression, the key holding the result, and the temporaries.

    Keys are ``<prefix><segment>``. ``a - b`` is ``NOT b`` then ``AND``; ``~x`` is
    ``NOT x`` then ``AND all`` (Redis complements whole bytes, the universe clears the padding).
    """
    commands: list[tuple[str, ...]] = []
    temps: list[str] = []

    def tmp() -> str:
        key = f"{prefix}tmp:{len(temps)}"
        temps.append(key)
        return key

    def emit(n: Expr) -> str:
        if isinstance(n, Ref):
            return f"{prefix}{n.name}"
        if isinstance(n, Not):
            inner = emit(n.operand)
            out = tmp()
            commands.append(("BITOP", "NOT", out, inner))
            commands.append(("BITOP", "AND", out, out, f"{prefix}{UNIVERSE}"))
            return out
        keys = [emit(op) for op in n.operands]
        out = tmp()
        if isinstance(n, Diff):
            rest = keys[1:]
            if len(rest) > 1:
                commands.append(("BITOP", "OR", out, *rest))
                commands.append(("BITOP", "NOT", out, out))
            else:
                commands.append(("BITOP", "NOT", out, rest[0]))
            commands.append(("BITOP", "AND", out, keys[0], out))
        else:
            op = {And: "AND", Or: "OR", Xor: "XOR"}[type(n)]
            commands.append(("BITOP", op, out, *keys))
        return out

    result = emit(node)
    return commands, result, temps


__all__ = [
    "HEADLINE",
    "QUERIES",
    "Query",
    "container_bytes",
    "naive_count",
    "set_count",
    "to_clickhouse",
    "to_redis",
    "touched_bytes",
]
