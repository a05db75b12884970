"""Planning: which shards of which segment can contribute to an expression. Pure.

Input: the expression and the shard map of every segment it names (plus the
universe's when it has a complement). Output: per segment, the mask of the
shards a query must load (``None``: all of them), and per leaf the region it
is needed on (for clipping). No store, no cache, no bitmaps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .catalog import ShardMap
from .expressions import And, Diff, Expr, Not, Ref


@dataclass(frozen=True)
class Plan:
    """What evaluation needs of a plan: the region of every leaf (by node identity), and the
    universe. Holds no shard map, so remembering plans costs only their masks."""

    region: dict[int, int]
    universe: str


class Planner:
    """Which shards of which segment can contribute to an expression.

    ``ub(node)`` is an upper bound of the shards where ``node`` can be
    non-empty; a node is only needed exactly on ``R(node) = R(parent) ∩ ub(node)``
    (``R(root) = ub(root)``). Loading each segment on the union of its
    ``R`` values yields a result that is exact everywhere, and so does
    clipping any leaf to its own ``R`` (``region``). Shard sets are
    int bitmasks (bit ``s`` for shard ``s``): a 50M-user segment has ~763
    shards, and an ``&`` of two masks costs nanoseconds where frozensets
    cost tens of microseconds.
    """

    def __init__(self, maps: Mapping[str, ShardMap], universe: str) -> None:
        self.maps = maps
        self.universe = universe
        self._ub: dict[int, int] = {}
        self._needs: dict[str, int] = {}
        #: id(leaf) -> R(leaf); for a ``Not``, the region of its universe
        self.region: dict[int, int] = {}

    def mask(self, name: str) -> int:
        return self.maps[name].mask

    def ub(self, node: Expr) -> int:
        key = id(node)
        hit = self._ub.get(key)
        if hit is not None:
            return hit
        if isinstance(node, Ref):
            out = self.mask(node.name)
        elif isinstance(node, Not):
            out = self.mask(self.universe)
        elif isinstance(node, And):
            out = -1
            for op in node.operands:
                out &= self.ub(op)
        elif isinstance(node, Diff):
            out = self.ub(node.operands[0])
            for op in node.operands[1:]:
                self.ub(op)
        else:
            out = 0
            for op in node.operands:
                out |= self.ub(op)
        self._ub[key] = out
        return out

    def plan(self, root: Expr) -> tuple[Plan, dict[str, int | None]]:
        """The :class:`Plan` of ``root`` and the shards needed per segment (see :meth:`needs`)."""
        needs = self.needs(root)
        return Plan(self.region, self.universe), needs

    def needs(self, root: Expr) -> dict[str, int | None]:
        """Mask of the shards needed per segment (``None``: all of them)."""
        self._walk(root, self.ub(root))
        return {n: (None if m == self.mask(n) else m) for n, m in self._needs.items()}

    def _need(self, node: Expr, name: str, region: int) -> None:
        region &= self.mask(name)
        self.region[id(node)] = region
        self._needs[name] = self._needs.get(name, 0) | region

    def _walk(self, node: Expr, region: int) -> None:
        if isinstance(node, Ref):
            self._need(node, node.name, region)
        elif isinstance(node, Not):
            self._need(node, self.universe, region)
            self._walk(node.operand, region & self.ub(node.operand))
        elif isinstance(node, And) and not all(isinstance(op, Not) for op in node.operands):
            # ``~x`` next to a positive operand is a subtraction: ``y & ~x = (y & U) - x``.
            # The universe is an ``&`` operand (galloped over, never complemented).
            for op in node.operands:
                if isinstance(op, Not):
                    self._need(op, self.universe, region)
                    self._walk(op.operand, region & self.ub(op.operand))
                else:
                    self._walk(op, region & self.ub(op))
        else:
            for op in node.operands:
                self._walk(op, region & self.ub(op))
