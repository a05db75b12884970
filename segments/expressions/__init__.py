"""Audience expressions: tree, text parser, canonical printer, JSON form and limits."""

from __future__ import annotations

from typing import Any

from ..errors import ExpressionSyntaxError
from .ast import And, Diff, Expr, Not, Or, Ref, Xor, depth, refs, uses_complement
from .json_form import from_json, to_json
from .limits import MAX_DEPTH, MAX_REFS
from .parser import parse


def to_expr(expr: object) -> Expr:
    """Accept text, a JSON tree (dict) or an already-built tree."""
    if isinstance(expr, (Ref, Not, And, Diff, Xor, Or)):
        return expr
    if isinstance(expr, str):
        return parse(expr)
    if isinstance(expr, dict):
        return from_json(expr)
    raise ExpressionSyntaxError(
        f"an expression is text or a JSON tree, got {type(expr).__name__}", 0, "text or a JSON object"
    )


def to_text(expr: Expr) -> str:
    """Canonical text of an expression."""
    return str(expr)


__all__ = [
    "MAX_DEPTH",
    "MAX_REFS",
    "And",
    "Any",
    "Diff",
    "Expr",
    "Not",
    "Or",
    "Ref",
    "Xor",
    "depth",
    "from_json",
    "parse",
    "refs",
    "to_expr",
    "to_json",
    "to_text",
    "uses_complement",
]
