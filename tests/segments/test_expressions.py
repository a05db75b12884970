"""The expression language: grammar, precedence, canonical printing, JSON form, limits."""

from __future__ import annotations

import pytest
from hypothesis import given

from segments import ExpressionSyntaxError, ExpressionTooComplex, parse, to_json
from segments.expressions import And, Diff, Not, Or, Ref, Xor, depth, from_json, to_expr
from tests.strategies import expressions

a, b, c, d = Ref("a"), Ref("b"), Ref("c"), Ref("d")


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("a", a),
        ("a | b", Or((a, b))),
        ("a OR b or c", Or((a, b, c))),
        ("a & b", And((a, b))),
        ("a AND b", And((a, b))),
        ("a - b", Diff((a, b))),
        ("a AND NOT b", Diff((a, b))),
        ("a and not b", Diff((a, b))),
        ("a EXCEPT b", Diff((a, b))),
        ("a ^ b", Xor((a, b))),
        ("a XOR b", Xor((a, b))),
        ("~a", Not(a)),
        ("NOT a", Not(a)),
        ("a & ~b", And((a, Not(b)))),
        ("a & NOT b", And((a, Not(b)))),
        # & and - share a level and group left to right
        ("a & b - c", Diff((And((a, b)), c))),
        ("a - b & c", And((Diff((a, b)), c))),
        ("a - b - c", Diff((a, b, c))),
        # precedence: ~ > & - > ^ > |
        ("a | b ^ c & d", Or((a, Xor((b, And((c, d))))))),
        ("a & b ^ c | d", Or((Xor((And((a, b)), c)), d))),
        ("~a & b", And((Not(a), b))),
        ("~(a | b)", Not(Or((a, b)))),
        ("(a | b) & c", And((Or((a, b)), c))),
        ("(a & b) & c", And((And((a, b)), c))),
        ("  a\t&\nb  ", And((a, b))),
        ("x.y:z_1 | 2024", Or((Ref("x.y:z_1"), Ref("2024")))),
    ],
)
def test_parse(text: str, tree: object) -> None:
    assert parse(text) == tree


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("", 0, "a segment name"),
        ("a &", 3, "a segment name"),
        ("& a", 0, "a segment name"),
        ("(a | b", 6, "')'"),
        ("a | b)", 5, "an operator"),
        ("a b", 2, "an operator"),
        ("a && b", 3, "a segment name"),
        ("a @ b", 2, "a segment name or an operator"),
        ("a - -b", 4, "a segment name"),
        ("a | ()", 5, "a segment name"),
        ("premium & active 30d", 17, "an operator"),
    ],
)
def test_syntax_errors_carry_position_and_expectation(text: str, position: int, expected: str) -> None:
    with pytest.raises(ExpressionSyntaxError) as info:
        parse(text)
    assert info.value.position == position
    assert expected in info.value.expected
    assert f"position {position}" in str(info.value)


def test_name_longer_than_128_is_a_syntax_error() -> None:
    with pytest.raises(ExpressionSyntaxError) as info:
        parse("a | " + "x" * 129)
    assert info.value.position == 4
    assert "128" in str(info.value)


def test_depth_limit() -> None:
    ok = "(" * 62 + "a" + ")" * 62
    assert parse(ok) == a
    with pytest.raises(ExpressionTooComplex) as info:
        parse("(" * 70 + "a" + ")" * 70)
    assert "64" in str(info.value)
    with pytest.raises(ExpressionTooComplex):
        parse("~" * 100 + "a")


def test_reference_limit() -> None:
    assert isinstance(parse(" | ".join(f"s{i}" for i in range(256))), Or)
    with pytest.raises(ExpressionTooComplex) as info:
        parse(" | ".join(f"s{i}" for i in range(257)))
    assert "256" in str(info.value)


def test_alternating_chain_too_deep_is_refused_not_crashing() -> None:
    text = "a" + "".join(" & b - c" for _ in range(100))
    with pytest.raises(ExpressionTooComplex):
        parse(text)


@given(expressions())
def test_print_parse_round_trip(expr: object) -> None:
    assert parse(str(expr)) == expr


@given(expressions())
def test_json_round_trip(expr: object) -> None:
    assert from_json(to_json(expr)) == expr  # type: ignore[arg-type]


def test_json_form() -> None:
    tree = {"and": [{"segment": "a"}, {"not": {"segment": "b"}}]}
    assert to_expr(tree) == And((a, Not(b)))
    assert to_expr({"or": [{"segment": "a"}]}) == a
    assert to_expr({"diff": [{"segment": "a"}, {"segment": "b"}, {"segment": "c"}]}) == Diff((a, b, c))
    assert to_expr({"xor": [{"segment": "a"}, {"segment": "b"}]}) == Xor((a, b))


@pytest.mark.parametrize(
    ("tree", "fragment"),
    [
        ({}, "exactly one key"),
        ({"segment": "a", "not": {"segment": "b"}}, "exactly one key"),
        ({"nand": []}, "unknown key"),
        ({"and": []}, "non-empty list"),
        ({"and": {"segment": "a"}}, "non-empty list"),
        ({"segment": 5}, "must be a string"),
        ({"segment": "bad name"}, "invalid segment name"),
        ({"not": "a"}, "expected an object"),
        ([{"segment": "a"}], "text or a JSON tree"),
    ],
)
def test_json_errors(tree: object, fragment: str) -> None:
    with pytest.raises(ExpressionSyntaxError) as info:
        to_expr(tree)
    assert fragment in str(info.value)


def test_json_limits() -> None:
    deep: dict[str, object] = {"segment": "a"}
    for _ in range(70):
        deep = {"not": deep}
    with pytest.raises(ExpressionTooComplex):
        to_expr(deep)
    wide = {"or": [{"segment": f"s{i}"} for i in range(300)]}
    with pytest.raises(ExpressionTooComplex):
        to_expr(wide)


def test_non_text_non_tree_is_refused() -> None:
    with pytest.raises(ExpressionSyntaxError):
        to_expr(42)


def test_canonical_text_examples() -> None:
    assert str(parse("((s10 | s30) & s60) - s1 & clustered")) == "(s10 | s30) & s60 - s1 & clustered"
    assert str(parse("a AND NOT b")) == "a - b"
    assert str(parse("NOT (a OR b)")) == "~(a | b)"
    assert to_json(parse("a & ~b")) == {"and": [{"segment": "a"}, {"not": {"segment": "b"}}]}


# A limit is enforced where it is crossed: the parser never reads what follows. Each input below
# crosses a limit and then has a syntax error further on; the limit, at the point where it is
# crossed, is what gets reported.


def test_reference_limit_stops_the_text_parser_at_the_257th_reference() -> None:
    text = " | ".join(f"s{i}" for i in range(300)) + " @"
    with pytest.raises(ExpressionTooComplex) as info:
        parse(text)
    assert info.value.position == text.index("s256")


def test_depth_limit_stops_the_text_parser_at_the_node_that_crosses_it() -> None:
    text = "a" + " & b - c" * 100 + " ) ("
    with pytest.raises(ExpressionTooComplex) as info:
        parse(text)
    position = info.value.position
    assert position is not None and position < len("a" + " & b - c" * 33)
    with pytest.raises(ExpressionTooComplex) as info:
        parse("(" * 100 + "a @")
    assert info.value.position == 63
    with pytest.raises(ExpressionTooComplex) as info:
        parse("~" * 100 + "a @")
    assert info.value.position == 63


def test_every_tree_the_text_parser_accepts_is_within_the_depth_limit() -> None:
    # 21 parenthesised levels of (x | y ^ z & w) make a tree 3 levels deeper per level
    text = "a"
    for _ in range(21):
        text = f"(b | c ^ d & {text})"
    tree = parse(text)
    assert depth(tree) == 1 + 21 * 3 == 64
    with pytest.raises(ExpressionTooComplex):
        parse(f"(e | f ^ g & {text})")


def test_json_limits_stop_the_conversion_where_they_are_crossed() -> None:
    wide: list[object] = [{"segment": f"s{i}"} for i in range(300)]
    with pytest.raises(ExpressionTooComplex, match="256"):
        to_expr({"or": [*wide, {"bad": 1}]})  # the bad node comes after the 257th reference
    deep: dict[str, object] = {"bad": 1}
    for _ in range(100):
        deep = {"not": deep}
    with pytest.raises(ExpressionTooComplex, match="64"):
        to_expr(deep)  # the bad node is below level 64
