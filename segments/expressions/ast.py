"""The expression tree: frozen dataclasses, printed in canonical text by ``str()``.

Precedence, highest first: ``~``, then ``&`` and ``-`` (left to right), then
``^``, then ``|``. ``And``, ``Diff``, ``Xor`` and ``Or`` are n-ary: a chain of
the same operator at one level (``a & b & c``) is one node, while a
parenthesised operand stays its own node, so ``parse(str(e)) == e`` for every
tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import ClassVar, TypeAlias

from ..errors import ExpressionSyntaxError

_RELATIVE = re.compile(r"([1-9][0-9]{0,5})([dh])")
_DATE = r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
_RANGE = re.compile(rf"{_DATE}(?:\.\.{_DATE})?")


@dataclass(frozen=True, slots=True)
class Window:
    """A time window of a windowed segment: the last ``last`` days/hours, or a UTC date range.

    Text: ``7d``, ``24h``, ``2026-11-01..2026-11-30`` (inclusive), ``2026-11-30`` (one day).
    """

    last: int | None = None
    unit: str = "d"
    start: date | None = None
    end: date | None = None

    def __str__(self) -> str:
        if self.last is not None:
            return f"{self.last}{self.unit}"
        assert self.start is not None and self.end is not None
        if self.start == self.end:
            return self.start.isoformat()
        return f"{self.start.isoformat()}..{self.end.isoformat()}"

    @classmethod
    def parse(cls, text: str, position: int = 0) -> Window:
        """``7d`` / ``24h`` / ``YYYY-MM-DD[..YYYY-MM-DD]``; ``ExpressionSyntaxError`` otherwise."""
        expected = "a window: 7d, 24h, 2026-11-30 or 2026-11-01..2026-11-30"
        relative = _RELATIVE.fullmatch(text)
        if relative:
            return cls(last=int(relative.group(1)), unit=relative.group(2))
        dates = _RANGE.fullmatch(text)
        if not dates:
            raise ExpressionSyntaxError(f"invalid window [{text}] at position {position}", position, expected)
        try:
            y1, m1, d1, y2, m2, d2 = dates.groups()
            start = date(int(y1), int(m1), int(d1))
            end = date(int(y2), int(m2), int(d2)) if y2 else start
        except ValueError as exc:
            raise ExpressionSyntaxError(f"invalid window [{text}]: {exc}", position, expected) from exc
        if end < start:
            raise ExpressionSyntaxError(f"invalid window [{text}]: it ends before it starts", position, expected)
        return cls(start=start, end=end)


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to a stored segment (of a windowed segment: with an optional time window)."""

    name: str
    window: Window | None = None

    def __str__(self) -> str:
        return self.name if self.window is None else f"{self.name}[{self.window}]"


@dataclass(frozen=True, slots=True)
class Not:
    """Complement relative to the universe segment."""

    operand: Expr

    def __str__(self) -> str:
        inner = str(self.operand)
        if isinstance(self.operand, (Ref, Not)):
            return f"~{inner}"
        return f"~({inner})"


@dataclass(frozen=True, slots=True)
class _Nary:
    operands: tuple[Expr, ...]

    symbol: ClassVar[str] = "?"
    #: Binding strength: higher binds tighter.
    level: ClassVar[int] = 0

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two operands")

    def __str__(self) -> str:
        parts = [_print_operand(self, i, op) for i, op in enumerate(self.operands)]
        return f" {self.symbol} ".join(parts)


@dataclass(frozen=True, slots=True)
class And(_Nary):
    """Intersection: ``a & b & ...``."""

    symbol: ClassVar[str] = "&"
    level: ClassVar[int] = 3


@dataclass(frozen=True, slots=True)
class Diff(_Nary):
    """Difference: ``a - b - ...`` (the first operand minus all the others)."""

    symbol: ClassVar[str] = "-"
    level: ClassVar[int] = 3


@dataclass(frozen=True, slots=True)
class Xor(_Nary):
    """Symmetric difference: ``a ^ b ^ ...``."""

    symbol: ClassVar[str] = "^"
    level: ClassVar[int] = 2


@dataclass(frozen=True, slots=True)
class Or(_Nary):
    """Union: ``a | b | ...``."""

    symbol: ClassVar[str] = "|"
    level: ClassVar[int] = 1


Expr: TypeAlias = Ref | Not | And | Diff | Xor | Or


def _print_operand(parent: _Nary, index: int, child: Expr) -> str:
    text = str(child)
    if not isinstance(child, _Nary):
        return text
    if child.level > parent.level:
        return text
    # Same level: only the leftmost operand of a different operator reads back the same.
    if index == 0 and child.level == parent.level and type(child) is not type(parent):
        return text
    return f"({text})"


def refs(expr: Expr) -> list[str]:
    """Every segment name referenced, in order of appearance (with repeats)."""
    out: list[str] = []
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Ref):
            out.append(node.name)
        elif isinstance(node, Not):
            stack.append(node.operand)
        else:
            stack.extend(reversed(node.operands))
    return out


def depth(expr: Expr) -> int:
    """Height of the tree; a lone reference has depth 1."""
    if isinstance(expr, Ref):
        return 1
    if isinstance(expr, Not):
        return 1 + depth(expr.operand)
    return 1 + max(depth(op) for op in expr.operands)


def uses_complement(expr: Expr) -> bool:
    """Whether the expression contains a ``~`` (and so needs the universe)."""
    if isinstance(expr, Ref):
        return False
    if isinstance(expr, Not):
        return True
    return any(uses_complement(op) for op in expr.operands)


@dataclass(frozen=True, slots=True)
class Facts:
    """What the query path asks of every tree: its references, and whether it has ``~`` or windows."""

    refs: tuple[str, ...]
    complement: bool
    windows: bool


_FACTS: dict[int, tuple[Expr, Facts]] = {}


def facts(expr: Expr) -> Facts:
    """The :class:`Facts` of a tree, remembered per tree object (parsed texts are cached objects)."""
    hit = _FACTS.get(id(expr))
    if hit is not None and hit[0] is expr:
        return hit[1]
    found = Facts(tuple(refs(expr)), uses_complement(expr), _has_windows(expr))
    if len(_FACTS) >= 4096:
        _FACTS.clear()
    _FACTS[id(expr)] = (expr, found)  # the entry keeps the tree alive, so its id is not reused
    return found


def _has_windows(expr: Expr) -> bool:
    if isinstance(expr, Ref):
        return expr.window is not None
    if isinstance(expr, Not):
        return _has_windows(expr.operand)
    return any(_has_windows(op) for op in expr.operands)
