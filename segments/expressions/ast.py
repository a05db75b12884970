"""The expression tree: frozen dataclasses, printed in canonical text by ``str()``.

Precedence, highest first: ``~``, then ``&`` and ``-`` (left to right), then
``^``, then ``|``. ``And``, ``Diff``, ``Xor`` and ``Or`` are n-ary: a chain of
the same operator at one level (``a & b & c``) is one node, while a
parenthesised operand stays its own node, so ``parse(str(e)) == e`` for every
tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to a stored segment."""

    name: str

    def __str__(self) -> str:
        return self.name


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
