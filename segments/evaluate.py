"""Evaluation: an expression tree plus bitmaps in, a bitmap or a count out. Pure.

The bitmaps come loaded exactly on the regions the :class:`~segments.plan.Planner`
computed; cached bitmaps are never mutated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from pyroaring import BitMap, FrozenBitMap

from .expressions import And, Diff, Expr, Not, Or, Ref
from .plan import Plan, Planner


class Evaluator:
    """Bottom-up evaluation on cached bitmaps, proportional to the planned region.

    * A cached bitmap usually holds the whole segment while the plan needs
      only some of its shards (``... & recent_signups``). A leaf that would be
      walked container by container (an operand of ``|`` or ``^``, the first
      operand of ``-``, the universe of ``~``) is first clipped to its region:
      a copy of just those containers. An operand of ``&`` and a subtracted
      operand stay whole: CRoaring gallops past the containers it does not need.
    * ``~x`` inside an ``&`` that has a positive operand is a subtraction,
      ``y & ~x = (y & U) - x``; the complement is never materialised.
    * Intermediates this evaluator made are updated in place (no allocation
      per operator), except array-heavy subtractions; a cached bitmap is
      never mutated.
    """

    def __init__(
        self,
        plan: Plan | Planner,
        loaded: dict[str, tuple[BitMap, int]],
        region_bitmap: Callable[[int], FrozenBitMap],
    ) -> None:
        self.plan = plan
        self.loaded = loaded
        self.region_bitmap = region_bitmap
        self.universe = plan.universe

    def leaf(self, node: Expr, name: str, clip: bool) -> tuple[BitMap, bool]:
        """``(bitmap, owned)``: an owned bitmap was made for this query and may be mutated."""
        bitmap, held = self.loaded[name]
        region = self.plan.region[id(node)]
        if not clip or held & ~region == 0:
            return bitmap, False
        if region == 0:
            return BitMap(), True
        return BitMap.intersection(bitmap, self.region_bitmap(region)), True

    def value(self, node: Expr, clip: bool = True) -> tuple[BitMap, bool]:
        if isinstance(node, Ref):
            return self.leaf(node, node.name, clip)
        if isinstance(node, Not):
            whole, owned = self.leaf(node, self.universe, True)
            operand, _ = self.value(node.operand, clip=False)
            return _apply(whole, owned, operand, _SUB)
        if isinstance(node, And):
            return self._and(node.operands)
        if isinstance(node, Diff):
            acc, owned = self.value(node.operands[0])
            for op in node.operands[1:]:
                acc, owned = _apply(acc, owned, self.value(op, clip=False)[0], _SUB)
            return acc, owned
        kind = _OR if isinstance(node, Or) else _XOR
        values = [self.value(op) for op in node.operands]
        # Accumulate into an owned operand when there is one.
        values.sort(key=lambda pair: not pair[1])
        acc, owned = values[0]
        for value, _ in values[1:]:
            acc, owned = _apply(acc, owned, value, kind)
        return acc, owned

    def _and(self, operands: Sequence[Expr], last_subtrahend: bool = False) -> tuple[BitMap, bool]:
        positive = [op for op in operands if not isinstance(op, Not)]
        negative = [op.operand for op in operands if isinstance(op, Not)]
        if not positive:
            # ~a & ~b = ~(a | b): one complement instead of several.
            acc, owned = self.leaf(operands[0], self.universe, True)
        else:
            values = sorted(self._and_operands(operands, positive), key=lambda p: len(p[0]))
            acc, owned = values[0]
            for value, _ in values[1:]:
                acc, owned = _apply(acc, owned, value, _AND)
        for op in negative:
            acc, owned = _apply(acc, owned, self.value(op, clip=False)[0], _SUB)
        return acc, owned

    def _and_operands(self, operands: Sequence[Expr], positive: Sequence[Expr]) -> list[tuple[BitMap, bool]]:
        """The positive operands of an ``&``, plus the universe when some operand is ``~x``."""
        values = [self.value(op, clip=False) for op in positive]
        complement = next((op for op in operands if isinstance(op, Not)), None)
        if complement is not None:
            values.append(self.leaf(complement, self.universe, False))
        return values

    def eval(self, node: Expr) -> BitMap:
        """Materialise a node. May return a cached bitmap: never mutate an unowned result."""
        return self.value(node)[0]

    def count(self, node: Expr) -> int:
        """Cardinality of a node: the last operation is a ``*_cardinality`` call, nothing is materialised."""
        if isinstance(node, Ref):
            return len(self.leaf(node, node.name, True)[0])
        if isinstance(node, Not):
            whole, _ = self.leaf(node, self.universe, True)
            return len(whole) - whole.intersection_cardinality(self.value(node.operand, clip=False)[0])
        if isinstance(node, And):
            positive = [op for op in node.operands if not isinstance(op, Not)]
            negative = [op.operand for op in node.operands if isinstance(op, Not)]
            if not positive:
                return len(self._and(node.operands)[0])
            values = sorted(self._and_operands(node.operands, positive), key=lambda p: len(p[0]))
            subtract = [self.value(op, clip=False)[0] for op in negative]
            # The last operation is cardinality-only: a subtrahend if there is one, else the largest operand.
            last = subtract.pop() if subtract else values.pop()[0]
            acc, owned = values[0]
            for value, _ in values[1:]:
                acc, owned = _apply(acc, owned, value, _AND)
            for value in subtract:
                acc, owned = _apply(acc, owned, value, _SUB)
            if negative:
                return acc.difference_cardinality(last)
            return acc.intersection_cardinality(last)
        if isinstance(node, Diff):
            acc, owned = self.value(node.operands[0])
            rest = [self.value(op, clip=False)[0] for op in node.operands[1:]]
            for value in rest[:-1]:
                acc, owned = _apply(acc, owned, value, _SUB)
            return acc.difference_cardinality(rest[-1])
        kind = _OR if isinstance(node, Or) else _XOR
        values = [self.value(op) for op in node.operands]
        values.sort(key=lambda pair: not pair[1])
        acc, owned = values[0]
        for value, _ in values[1:-1]:
            acc, owned = _apply(acc, owned, value, kind)
        last = values[-1][0]
        if kind == _OR:
            return acc.union_cardinality(last)
        return acc.symmetric_difference_cardinality(last)


_AND, _OR, _SUB, _XOR = range(4)


def _apply(acc: BitMap, owned: bool, value: BitMap, kind: int) -> tuple[BitMap, bool]:
    """``acc <op> value``, in place when ``acc`` is owned.

    Except one case: CRoaring subtracts array containers in place with scalar
    code but out of place with AVX2 (5x faster), so an array-heavy ``acc`` is
    subtracted out of place.
    """
    if owned and kind == _SUB:
        stats = acc.get_statistics()
        owned = stats["n_array_containers"] <= stats["n_bitset_containers"]
    if owned:
        if kind == _AND:
            acc &= value
        elif kind == _OR:
            acc |= value
        elif kind == _SUB:
            acc -= value
        else:
            acc ^= value
        return acc, True
    if kind == _AND:
        return acc & value, True
    if kind == _OR:
        return acc | value, True
    if kind == _SUB:
        return acc - value, True
    return acc ^ value, True


def holds(node: Expr, uid: int, bitmaps: Mapping[str, BitMap | FrozenBitMap], universe: str) -> bool:
    """Whether user ``uid`` is selected by ``node``: membership tests only, no set operation.

    ``bitmaps`` need only be exact on ``uid``'s shard.
    """
    if isinstance(node, Ref):
        return uid in bitmaps[node.name]
    if isinstance(node, Not):
        return uid in bitmaps[universe] and not holds(node.operand, uid, bitmaps, universe)
    if isinstance(node, And):
        return all(holds(op, uid, bitmaps, universe) for op in node.operands)
    if isinstance(node, Or):
        return any(holds(op, uid, bitmaps, universe) for op in node.operands)
    if isinstance(node, Diff):
        first, *rest = node.operands
        return holds(first, uid, bitmaps, universe) and not any(holds(op, uid, bitmaps, universe) for op in rest)
    count = sum(holds(op, uid, bitmaps, universe) for op in node.operands)  # Xor: odd number of operands
    return count % 2 == 1
