"""Parser for the text form of audience expressions.

Grammar (keywords are case-insensitive)::

    expr    := xor   (("|" | "OR") xor)*
    xor     := inter (("^" | "XOR") inter)*
    inter   := unary (("&" | "AND" | "-" | "AND NOT" | "EXCEPT") unary)*   left to right
    unary   := ("~" | "NOT") unary | "(" expr ")" | NAME [WINDOW]
    NAME    := [A-Za-z0-9_.:]{1,128}
    WINDOW  := "[" (N "d" | N "h" | DATE [".." DATE]) "]"        a windowed segment's time window

Errors carry the 0-based character position and what was expected there.

Every limit of ``limits`` is enforced while parsing, so refusing a hostile
expression costs no more than reading up to the point where it crosses one:
the text length is checked first, tokens are read one at a time as the
parser asks for them, the 257th reference is refused when it is read, and
each node's height is known when it is built (a node 65 levels high is
refused right there). Parentheses and ``~`` count as nesting too, which
bounds the parser's recursion whatever the tree they produce.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ExpressionSyntaxError, ExpressionTooComplex
from ..names import KEYWORDS
from .ast import And, Diff, Expr, Not, Or, Ref, Window, Xor
from .limits import MAX_DEPTH, MAX_REFS, MAX_TEXT

_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z0-9_.:]+)|(?P<sym>[|&^~()\-])|(?P<win>\[[^\]]{0,40}\]))")


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "name", "op" or "end"
    text: str
    pos: int


# Operator token kinds: "|", "^", "&", "-", "~", "(", ")"
_WORDS = {"or": "|", "xor": "^", "and": "&", "except": "-", "not": "~"}
_OPERAND_START = "a segment name, '~', 'NOT' or '('"


def _describe(tok: Token, source: str) -> str:
    if tok.kind == "end":
        return "the end of the expression"
    if tok.kind == "op" and tok.text not in "()":
        word = re.match(r"[A-Za-z]+", source[tok.pos :])
        if word:
            return repr(word.group(0))
    return repr(tok.text)


def tokenize(text: str) -> Iterator[Token]:
    """The tokens of ``text``, one at a time, ending with an ``end`` token."""
    pos = 0
    n = len(text)
    while True:
        m = _TOKEN.match(text, pos)
        if m is None:
            stripped = len(text) - len(text[pos:].lstrip())
            if stripped >= n:
                break
            raise ExpressionSyntaxError(
                f"unexpected character {text[stripped]!r} at position {stripped}; "
                f"expected {_OPERAND_START} or an operator (| & - ^ OR AND EXCEPT XOR)",
                stripped,
                "a segment name or an operator",
            )
        if m.group("name") is not None:
            word = m.group("name")
            start = m.start("name")
            if word.lower() in _WORDS:
                yield Token("op", _WORDS[word.lower()], start)
            else:
                if len(word) > 128:
                    raise ExpressionSyntaxError(
                        f"segment name at position {start} is {len(word)} characters long (at most 128)",
                        start,
                        "a segment name of at most 128 characters",
                    )
                yield Token("name", word, start)
        elif m.group("win") is not None:
            yield Token("window", m.group("win")[1:-1], m.start("win"))
        else:
            yield Token("op", m.group("sym"), m.start("sym"))
        pos = m.end()
    yield Token("end", "", n)


#: A parsed subtree and its height (a lone reference has height 1).
_Node = tuple[Expr, int]


class _Parser:
    def __init__(self, text: str) -> None:
        self.source = text
        self.tokens = tokenize(text)
        self.previous = Token("end", "", 0)
        self.current = next(self.tokens)
        self.refs = 0
        self.nesting = 0

    def peek(self) -> Token:
        return self.current

    def take(self) -> Token:
        tok = self.current
        if tok.kind != "end":
            self.previous, self.current = tok, next(self.tokens)
        return tok

    def at(self, symbol: str) -> bool:
        tok = self.current
        return tok.kind == "op" and tok.text == symbol

    def error(self, expected: str) -> ExpressionSyntaxError:
        tok = self.peek()
        return ExpressionSyntaxError(
            f"at position {tok.pos}: expected {expected}, found {_describe(tok, self.source)}",
            tok.pos,
            expected,
        )

    def parse(self) -> Expr:
        if self.peek().kind == "end":
            raise ExpressionSyntaxError(
                f"the expression is empty; expected {_OPERAND_START} at position 0", 0, _OPERAND_START
            )
        expr, _ = self.union()
        if self.peek().kind != "end":
            if self.at(")"):
                raise self.error("an operator or the end of the expression (unbalanced ')')")
            raise self.error("an operator (| & - ^ OR AND EXCEPT XOR) or the end of the expression")
        return expr

    def node(
        self, cls: type[And] | type[Diff] | type[Xor] | type[Or], operands: list[_Node], at: Token
    ) -> _Node:
        """``cls`` over ``operands``, refused if it is higher than ``MAX_DEPTH``."""
        height = 1 + max(h for _, h in operands)
        if height > MAX_DEPTH:
            raise ExpressionTooComplex(
                f"expression tree is more than {MAX_DEPTH} levels deep (at position {at.pos})", at.pos
            )
        return cls(tuple(e for e, _ in operands)), height

    def union(self) -> _Node:
        operands = [self.xor()]
        last = self.current
        while self.at("|"):
            last = self.take()
            operands.append(self.xor())
        return operands[0] if len(operands) == 1 else self.node(Or, operands, last)

    def xor(self) -> _Node:
        operands = [self.inter()]
        last = self.current
        while self.at("^"):
            last = self.take()
            operands.append(self.inter())
        return operands[0] if len(operands) == 1 else self.node(Xor, operands, last)

    def inter(self) -> _Node:
        current = self.unary()
        group_cls: type[And] | type[Diff] | None = None
        group: list[_Node] = []
        last = self.previous
        while self.at("&") or self.at("-"):
            tok = self.take()
            cls: type[And] | type[Diff] = And if tok.text == "&" else Diff
            if tok.text == "&" and self.at("~") and self._is_word_not():
                self.take()  # "AND NOT" is the difference operator
                cls = Diff
            operand = self.unary()
            if cls is group_cls:
                group.append(operand)
                last = tok
                continue
            if group_cls is not None:
                current = self.node(group_cls, group, last)
            group_cls = cls
            group = [current, operand]
            last = tok
        if group_cls is not None:
            current = self.node(group_cls, group, last)
        return current

    def _is_word_not(self) -> bool:
        """Whether the pending ``~`` token was spelt ``NOT`` right after ``AND``."""
        prev = self.previous
        return prev.kind == "op" and self._spelt_as_word(prev) and self._spelt_as_word(self.current)

    def _spelt_as_word(self, tok: Token) -> bool:
        return self.source[tok.pos : tok.pos + 1].isalpha()

    def unary(self) -> _Node:
        tok = self.peek()
        if tok.kind == "op" and tok.text == "~":
            self.take()
            self.enter(tok)
            operand, height = self.unary()
            self.nesting -= 1
            if height + 1 > MAX_DEPTH:
                raise ExpressionTooComplex(
                    f"expression tree is more than {MAX_DEPTH} levels deep (at position {tok.pos})", tok.pos
                )
            return Not(operand), height + 1
        if tok.kind == "op" and tok.text == "(":
            self.take()
            self.enter(tok)
            inner = self.union()
            if not self.at(")"):
                raise self.error(f"')' to close the '(' opened at position {tok.pos}")
            self.take()
            self.nesting -= 1
            return inner
        if tok.kind == "name":
            self.take()
            self.refs += 1
            if self.refs > MAX_REFS:
                raise ExpressionTooComplex(
                    f"expression references more than {MAX_REFS} segments (at position {tok.pos})",
                    tok.pos,
                )
            window = self.peek()
            if window.kind == "window":
                self.take()
                return Ref(tok.text, Window.parse(window.text, window.pos)), 1
            return Ref(tok.text), 1
        if tok.kind == "window":
            raise ExpressionSyntaxError(
                f"at position {tok.pos}: a window [{tok.text}] must follow a segment name", tok.pos, _OPERAND_START
            )
        raise self.error(_OPERAND_START)

    def enter(self, tok: Token) -> None:
        self.nesting += 1
        if self.nesting >= MAX_DEPTH:
            raise ExpressionTooComplex(
                f"expression is nested deeper than {MAX_DEPTH} levels (at position {tok.pos})",
                tok.pos,
            )


def parse(text: str) -> Expr:
    """Parse expression text into a tree; raises ``ExpressionError`` subclasses."""
    if not isinstance(text, str):
        raise ExpressionSyntaxError(f"expression text must be a string, got {type(text).__name__}", 0, "text")
    if len(text) > MAX_TEXT:
        raise ExpressionTooComplex(
            f"expression text is {len(text)} characters long (at most {MAX_TEXT})", MAX_TEXT
        )
    return _Parser(text).parse()


__all__ = ["KEYWORDS", "parse", "tokenize"]
