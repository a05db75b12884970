"""``api.bodies``: the direct reading of plain ``{"ids": [...]}`` bodies agrees with ``json.loads``.

A body is read straight into an array only when it is exactly a list of
plain decimal IDs; then the array must equal what ``json.loads`` reads. And
every such body must take that path (else large bodies would cost their
Python integers after all). Bodies are drawn with JSON's whitespace and with
near misses: leading zeros, signs, fractions, exponents, form feeds, other
keys, trailing commas.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from api.bodies import RawBody, parse_members, plain_ids

WHITESPACE = st.text(alphabet=" \t\n\r", max_size=3)
NEAR_MISS = st.sampled_from(["007", "-1", "+1", "1.0", "1e3", "\f1", "1,", "", "99999999999", '"1"', "null"])


@st.composite
def bodies(draw: st.DrawFn) -> str:
    ids = draw(st.lists(st.integers(0, 2**32 + 5), max_size=30))
    items = [f"{draw(WHITESPACE)}{i}{draw(WHITESPACE)}" for i in ids]
    if items and draw(st.booleans()):
        items[draw(st.integers(0, len(items) - 1))] = draw(NEAR_MISS)
    key = draw(st.sampled_from(['"ids"', '"ids"', '"ids"', '"id"', '"ids" ']))
    extra = draw(st.sampled_from(["", "", "", ', "expr": "a"']))
    w = [draw(WHITESPACE) for _ in range(6)]
    return f"{w[0]}{{{w[1]}{key}{w[2]}:{w[3]}[{','.join(items)}]{extra}{w[4]}}}{w[5]}"


def _is_plain(text: str) -> bool:
    """What ``json.loads`` says: exactly ``{"ids": [...]}`` of integers of at most 10 digits."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    if not isinstance(value, dict) or list(value) != ["ids"] or not isinstance(value["ids"], list):
        return False
    return all(type(i) is int and 0 <= i < 10**10 for i in value["ids"])


@given(bodies())
def test_plain_id_lists_are_read_as_json_reads_them(text: str) -> None:
    direct = plain_ids(RawBody("application/json", text.encode()))
    assert (direct is not None) == _is_plain(text), text
    if direct is not None:
        assert direct.tolist() == json.loads(text)["ids"]


def test_a_large_plain_body_becomes_an_array() -> None:
    ids = list(range(0, 3_000_000, 3))
    members = parse_members(RawBody("application/json", json.dumps({"ids": ids}).encode()), allow_expr=True)
    assert members.kind == "ids"
    assert members.value.tolist() == ids  # an array: no Python integer per ID was made
