"""The JSON tree form of expressions.

``{"and": [{"segment": "a"}, {"not": {"segment": "b"}}]}`` with the keys
``segment``, ``and``, ``or``, ``diff``, ``xor`` and ``not``. A one-element
operand list stands for its element.

The limits are enforced during the conversion, as in the text parser: a node
deeper than ``MAX_DEPTH`` levels of the JSON (which bounds the height of the
tree built from it) or the 257th reference is refused when it is reached,
before the rest of the tree is looked at.
"""

from __future__ import annotations

from typing import Any

from ..errors import ExpressionSyntaxError, ExpressionTooComplex, InvalidSegmentName
from ..names import check_name
from .ast import And, Diff, Expr, Not, Or, Ref, Window, Xor
from .limits import MAX_DEPTH, MAX_REFS

_NARY: dict[str, type[And] | type[Or] | type[Diff] | type[Xor]] = {
    "and": And,
    "or": Or,
    "diff": Diff,
    "xor": Xor,
}
_KEYS = ("segment", "and", "or", "diff", "xor", "not")


def from_json(tree: object) -> Expr:
    """Convert a JSON tree (already decoded) into an expression."""
    counter = [0]
    return _convert(tree, "$", 1, counter)


def _fail(path: str, message: str) -> ExpressionSyntaxError:
    return ExpressionSyntaxError(
        f"invalid expression tree at {path}: {message}", 0, "one of " + ", ".join(_KEYS)
    )


def _convert(node: object, path: str, level: int, counter: list[int]) -> Expr:
    if level > MAX_DEPTH:
        raise ExpressionTooComplex(f"expression is nested deeper than {MAX_DEPTH} levels (at {path})", 0)
    if not isinstance(node, dict):
        raise _fail(path, f"expected an object, got {type(node).__name__}")
    if "segment" in node and len(node) > 1 and set(node) <= {"segment", "window", "from", "to"}:
        return _windowed(node, path, counter)
    if len(node) != 1:
        raise _fail(path, f"expected exactly one key, got {sorted(map(str, node))[:6]}")
    ((key, value),) = node.items()
    if key == "segment":
        if not isinstance(value, str):
            raise _fail(path, "'segment' must be a string")
        try:
            check_name(value)
        except InvalidSegmentName as exc:
            raise ExpressionSyntaxError(f"at {path}: {exc}", 0, "a segment name") from exc
        counter[0] += 1
        if counter[0] > MAX_REFS:
            raise ExpressionTooComplex(f"expression references more than {MAX_REFS} segments", 0)
        return Ref(value)
    if key == "not":
        return Not(_convert(value, f"{path}.not", level + 1, counter))
    cls = _NARY.get(key) if isinstance(key, str) else None
    if cls is None:
        raise _fail(path, f"unknown key {key!r}")
    if not isinstance(value, list) or not value:
        raise _fail(path, f"{key!r} takes a non-empty list of operands")
    operands = tuple(_convert(item, f"{path}.{key}[{i}]", level + 1, counter) for i, item in enumerate(value))
    if len(operands) == 1:
        return operands[0]
    return cls(operands)


def _windowed(node: dict[Any, Any], path: str, counter: list[int]) -> Ref:
    """``{"segment", "window": "7d"}`` or ``{"segment", "from": date, "to": date}``."""
    keys = set(node)
    ref = _convert({"segment": node["segment"]}, path, 1, counter)
    assert isinstance(ref, Ref)
    if keys == {"segment", "window"} and isinstance(node["window"], str):
        return Ref(ref.name, Window.parse(node["window"]))
    if keys in ({"segment", "from", "to"}, {"segment", "from"}) and all(
        isinstance(node.get(k, node["from"]), str) for k in ("from", "to")
    ):
        start, end = node["from"], node.get("to", node["from"])
        return Ref(ref.name, Window.parse(start if start == end else f"{start}..{end}"))
    raise _fail(path, 'a windowed segment is {"segment", "window": "7d"} or {"segment", "from", "to"} '
                      "(ISO dates)")


def to_json(expr: Expr) -> dict[str, Any]:
    """Convert an expression to its JSON tree."""
    if isinstance(expr, Ref):
        if expr.window is not None:
            return {"segment": expr.name, "window": str(expr.window)}
        return {"segment": expr.name}
    if isinstance(expr, Not):
        return {"not": to_json(expr.operand)}
    key = {And: "and", Or: "or", Diff: "diff", Xor: "xor"}[type(expr)]
    return {key: [to_json(op) for op in expr.operands]}
