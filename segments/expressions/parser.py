"""Parser for the text form of audience expressions.

Grammar (keywords are case-insensitive)::

    expr    := xor   (("|" | "OR") xor)*
    xor     := inter (("^" | "XOR") inter)*
    inter   := unary (("&" | "AND" | "-" | "AND NOT" | "EXCEPT") unary)*   left to right
    unary   := ("~" | "NOT") unary | "(" expr ")" | NAME
    NAME    := [A-Za-z0-9_.:]{1,128}

Errors carry the 0-based character position and what was expected there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ExpressionSyntaxError, ExpressionTooComplex
from ..names import KEYWORDS
from .ast import And, Diff, Expr, Not, Or, Ref, Xor, depth
from .limits import MAX_DEPTH, MAX_REFS, MAX_TEXT

_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z0-9_.:]+)|(?P<sym>[|&^~()\-]))")


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


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
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
                tokens.append(Token("op", _WORDS[word.lower()], start))
            else:
                if len(word) > 128:
                    raise ExpressionSyntaxError(
                        f"segment name at position {start} is {len(word)} characters long (at most 128)",
                        start,
                        "a segment name of at most 128 characters",
                    )
                tokens.append(Token("name", word, start))
        else:
            tokens.append(Token("op", m.group("sym"), m.start("sym")))
        pos = m.end()
    tokens.append(Token("end", "", n))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.source = text
        self.tokens = tokenize(text)
        self.i = 0
        self.refs = 0
        self.nesting = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at(self, symbol: str) -> bool:
        tok = self.peek()
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
        expr = self.union()
        if self.peek().kind != "end":
            if self.at(")"):
                raise self.error("an operator or the end of the expression (unbalanced ')')")
            raise self.error("an operator (| & - ^ OR AND EXCEPT XOR) or the end of the expression")
        return expr

    def union(self) -> Expr:
        operands = [self.xor()]
        while self.at("|"):
            self.take()
            operands.append(self.xor())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def xor(self) -> Expr:
        operands = [self.inter()]
        while self.at("^"):
            self.take()
            operands.append(self.inter())
        return operands[0] if len(operands) == 1 else Xor(tuple(operands))

    def inter(self) -> Expr:
        current: Expr = self.unary()
        group_cls: type[And] | type[Diff] | None = None
        group: list[Expr] = []
        while self.at("&") or self.at("-"):
            symbol = self.take().text
            cls: type[And] | type[Diff] = And if symbol == "&" else Diff
            if symbol == "&" and self.at("~") and self._is_word_not():
                self.take()  # "AND NOT" is the difference operator
                cls = Diff
            operand = self.unary()
            if cls is group_cls:
                group.append(operand)
                continue
            if group_cls is not None:
                current = group_cls(tuple(group))
            group_cls = cls
            group = [current, operand]
        if group_cls is not None:
            current = group_cls(tuple(group))
        return current

    def _is_word_not(self) -> bool:
        """Whether the pending ``~`` token was spelt ``NOT`` right after ``AND``."""
        prev = self.tokens[self.i - 1]
        tok = self.peek()
        return prev.kind == "op" and self._spelt_as_word(prev) and self._spelt_as_word(tok)

    def _spelt_as_word(self, tok: Token) -> bool:
        return self.text_at(tok).isalpha()

    def text_at(self, tok: Token) -> str:
        return self.source[tok.pos : tok.pos + 1]

    def unary(self) -> Expr:
        tok = self.peek()
        if tok.kind == "op" and tok.text == "~":
            self.take()
            self.enter(tok)
            operand = self.unary()
            self.nesting -= 1
            return Not(operand)
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
            return Ref(tok.text)
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
    parser = _Parser(text)
    expr = parser.parse()
    check_depth(expr)
    return expr


def check_depth(expr: Expr) -> None:
    height = depth(expr)
    if height > MAX_DEPTH:
        raise ExpressionTooComplex(
            f"expression tree is {height} levels deep (at most {MAX_DEPTH})", 0
        )


__all__ = ["KEYWORDS", "parse", "tokenize"]
