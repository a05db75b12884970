"""The message codec: every documented form decodes, every bad form has its reason, encoding splits to fit."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroaring import BitMap

from ingest.codec import (
    MAX_PARTS,
    REASONS,
    DecodeError,
    Update,
    chunks,
    decode,
    encode,
)
from segments import bitmap as bm
from tests.strategies import id_sets

Headers = list[tuple[str, str | bytes | None]]


def jmsg(doc: object) -> bytes:
    return json.dumps(doc).encode()


def roaring_headers(op: str, segment: str, **extra: object) -> Headers:
    headers: Headers = [("op", op.encode()), ("segment", segment.encode()), ("encoding", b"roaring")]
    headers += [(k, str(v).encode()) for k, v in extra.items()]
    return headers


# --------------------------------------------------------------------------- good messages


@pytest.mark.parametrize("op", ["add", "remove"])
def test_json_delta_decodes(op: str) -> None:
    update = decode(b"premium", jmsg({"op": op, "segment": "premium", "ids": [3, 1, 2, 3]}), None)
    assert update == Update(op, "premium", BitMap([1, 2, 3]))  # type: ignore[arg-type]


def test_json_replace_part_decodes_with_batch_fields() -> None:
    value = jmsg({"op": "replace", "segment": "s", "batch": "b-1", "part": 2, "parts": 3, "ids": []})
    update = decode(b"s", value, [])
    assert isinstance(update, Update)
    assert (update.op, update.batch, update.part, update.parts, len(update.ids)) == ("replace", "b-1", 2, 3, 0)


def test_binary_delta_and_replace_decode() -> None:
    ids = BitMap(range(0, 300_000, 7))
    update = decode(b"s", bm.serialize(ids), roaring_headers("remove", "s"))
    assert update == Update("remove", "s", ids)
    part = decode(b"s", bm.serialize(ids), roaring_headers("replace", "s", batch="x", part=0, parts=1))
    assert isinstance(part, Update)
    assert (part.op, part.batch, part.part, part.parts, part.ids) == ("replace", "x", 0, 1, ids)


def test_unknown_headers_are_ignored_and_json_needs_no_headers() -> None:
    value = jmsg({"op": "add", "segment": "s", "ids": [1]})
    update = decode(b"s", value, [("trace-id", b"\xff\x00"), ("other", None)])
    assert update == Update("add", "s", BitMap([1]))


# --------------------------------------------------------------------------- every bad form


BAD: list[tuple[str, bytes | None, bytes | None, Headers | None, str]] = [
    ("not json", b"s", b"{nope", None, "bad_json"),
    ("not utf-8", b"s", b"\xff\xfe{}", None, "bad_json"),
    ("empty value", b"s", b"", None, "bad_json"),
    ("tombstone", b"s", None, None, "bad_json"),
    ("json list", b"s", b"[1, 2]", None, "bad_json"),
    ("deeply nested json", b"s", b"[" * 100_000 + b"]" * 100_000, None, "bad_json"),
    ("deeply nested ids", b"s", b'{"op": "add", "segment": "s", "ids": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
     None, "bad_json"),
    ("ids missing", b"s", jmsg({"op": "add", "segment": "s"}), None, "bad_json"),
    ("ids not a list", b"s", jmsg({"op": "add", "segment": "s", "ids": "1,2"}), None, "bad_json"),
    ("op missing", b"s", jmsg({"segment": "s", "ids": [1]}), None, "bad_json"),
    ("unknown op", b"s", jmsg({"op": "delete", "segment": "s", "ids": [1]}), None, "unknown_op"),
    ("op wrong type", b"s", jmsg({"op": 1, "segment": "s", "ids": [1]}), None, "unknown_op"),
    ("name with dash", b"a-b", jmsg({"op": "add", "segment": "a-b", "ids": [1]}), None, "invalid_segment_name"),
    ("name too long", b"x" * 129, jmsg({"op": "add", "segment": "x" * 129, "ids": [1]}), None,
     "invalid_segment_name"),
    ("name keyword", b"and", jmsg({"op": "add", "segment": "and", "ids": [1]}), None, "invalid_segment_name"),
    ("name not a string", b"1", jmsg({"op": "add", "segment": 1, "ids": [1]}), None, "invalid_segment_name"),
    ("id too large", b"s", jmsg({"op": "add", "segment": "s", "ids": [1, 2**32]}), None, "invalid_user_id"),
    ("id negative", b"s", jmsg({"op": "add", "segment": "s", "ids": [-1]}), None, "invalid_user_id"),
    ("id float", b"s", jmsg({"op": "add", "segment": "s", "ids": [1.5]}), None, "invalid_user_id"),
    ("id bool", b"s", jmsg({"op": "add", "segment": "s", "ids": [True]}), None, "invalid_user_id"),
    ("id string", b"s", jmsg({"op": "add", "segment": "s", "ids": ["7"]}), None, "invalid_user_id"),
    ("id huge", b"s", jmsg({"op": "add", "segment": "s", "ids": [10**30]}), None, "invalid_user_id"),
    ("no key", None, jmsg({"op": "add", "segment": "s", "ids": [1]}), None, "key_mismatch"),
    ("other key", b"t", jmsg({"op": "add", "segment": "s", "ids": [1]}), None, "key_mismatch"),
    ("corrupt bitmap", b"s", b"\x3a\x30\x00\x00garbage", roaring_headers("add", "s"), "corrupt_bitmap"),
    ("empty bitmap value", b"s", b"", roaring_headers("add", "s"), "corrupt_bitmap"),
    ("json as bitmap", b"s", jmsg({"op": "add"}), roaring_headers("add", "s"), "corrupt_bitmap"),
    ("no op header", b"s", bm.serialize(BitMap([1])), [("segment", b"s"), ("encoding", b"roaring")],
     "missing_header"),
    ("no segment header", b"s", bm.serialize(BitMap([1])), [("op", b"add"), ("encoding", b"roaring")],
     "missing_header"),
    ("replace without parts header", b"s", bm.serialize(BitMap([1])),
     roaring_headers("replace", "s", batch="b", part=0), "missing_header"),
    ("unknown encoding", b"s", b"x", [("encoding", b"gzip")], "bad_header"),
    ("header not utf-8", b"s", b"x", [("encoding", b"roaring"), ("op", b"\xff"), ("segment", b"s")],
     "bad_header"),
    ("header without value", b"s", b"x", [("encoding", None)], "bad_header"),
    ("replace without batch", b"s", jmsg({"op": "replace", "segment": "s", "ids": [1]}), None, "bad_part"),
    ("part out of range", b"s", jmsg({"op": "replace", "segment": "s", "batch": "b", "part": 3, "parts": 3,
                                      "ids": []}), None, "bad_part"),
    ("zero parts", b"s", jmsg({"op": "replace", "segment": "s", "batch": "b", "part": 0, "parts": 0,
                               "ids": []}), None, "bad_part"),
    ("too many parts", b"s", jmsg({"op": "replace", "segment": "s", "batch": "b", "part": 0,
                                   "parts": MAX_PARTS + 1, "ids": []}), None, "bad_part"),
    ("part not int", b"s", jmsg({"op": "replace", "segment": "s", "batch": "b", "part": "0", "parts": 1,
                                 "ids": []}), None, "bad_part"),
    ("batch with slash", b"s", jmsg({"op": "replace", "segment": "s", "batch": "a/b", "part": 0, "parts": 1,
                                     "ids": []}), None, "bad_part"),
    ("binary part not a number", b"s", bm.serialize(BitMap([1])),
     roaring_headers("replace", "s", batch="b", part="x", parts=2), "bad_part"),
    ("ids and keys", b"s", jmsg({"op": "add", "segment": "s", "ids": [1], "keys": ["a"]}), None, "bad_json"),
    ("keys not a list", b"s", jmsg({"op": "add", "segment": "s", "keys": "a,b"}), None, "bad_json"),
    ("at not a time", b"s", jmsg({"op": "add", "segment": "s", "ids": [1], "at": "yesterday"}), None, "bad_time"),
    ("at a list", b"s", jmsg({"op": "add", "segment": "s", "keys": ["a"], "at": [2026, 11, 30]}), None,
     "bad_time"),
    ("at a bool", b"s", jmsg({"op": "add", "segment": "s", "ids": [1], "at": True}), None, "bad_time"),
    ("at epoch milliseconds", b"s", jmsg({"op": "add", "segment": "s", "ids": [1], "at": 1764633600000000}), None,
     "bad_time"),
    ("at header not a time", b"s", bm.serialize(BitMap([1])), roaring_headers("add", "s", at="30/11/2026"),
     "bad_time"),
]


@pytest.mark.parametrize(("key", "value", "headers", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_message_gives_its_reason(key: bytes | None, value: bytes | None, headers: Headers | None,
                                      reason: str) -> None:
    result = decode(key, value, headers)
    assert isinstance(result, DecodeError), result
    assert result.reason == reason, result
    assert result.reason in REASONS
    assert result.message and str(result).startswith(f"{reason}: ")


def test_every_reason_is_exercised() -> None:
    assert {b[4] for b in BAD} == set(REASONS)


@given(st.binary(max_size=200), st.sampled_from(["add", "remove", "replace", "x"]))
def test_decode_never_raises_on_arbitrary_bytes(value: bytes, op: str) -> None:
    for headers in (None, roaring_headers(op, "s", batch="b", part=0, parts=1)):
        result = decode(b"s", value, headers)
        assert isinstance(result, (Update, DecodeError))


# --------------------------------------------------------------------------- encoding


@given(id_sets, st.sampled_from(["add", "remove"]), st.sampled_from(["json", "roaring", "auto"]))
def test_encode_then_decode_round_trips(ids: set[int], op: str, encoding: str) -> None:
    messages = encode(op, "seg", BitMap(ids), encoding=encoding, max_bytes=16 * 1024)  # type: ignore[arg-type]
    decoded = [decode(m.key, m.value, m.headers) for m in messages]
    assert all(isinstance(d, Update) and d.op == op and d.segment == "seg" for d in decoded)
    assert all(len(m.value) <= 16 * 1024 for m in messages)
    union: set[int] = set()
    for d in decoded:
        assert isinstance(d, Update)
        assert not union & set(d.ids), "pieces overlap"
        union |= set(d.ids)
    assert union == ids
    assert sum(m.count for m in messages) == len(ids)


def test_replace_is_split_into_numbered_parts_of_one_batch_each_under_the_limit() -> None:
    import random

    rng = random.Random(7)
    ids = BitMap(rng.sample(range(0, 40 * 65536), 400_000))  # ~40 shards of ~8 KiB each: ~330 KB
    messages = encode("replace", "big", ids, batch="b7", max_bytes=64 * 1024)
    assert len(messages) > 5
    decoded = [decode(m.key, m.value, m.headers) for m in messages]
    assert [(d.batch, d.part, d.parts) for d in decoded if isinstance(d, Update)] == [
        ("b7", i, len(messages)) for i in range(len(messages))
    ]
    assert all(len(m.value) <= 64 * 1024 for m in messages)
    parts = [d.ids for d in decoded if isinstance(d, Update)]
    assert BitMap.union(*parts) == ids
    # shard ranges: each part's IDs come after the previous part's
    assert all(parts[i].max() < parts[i + 1].min() for i in range(len(parts) - 1))


def test_a_dense_large_bitmap_fits_default_kafka_limits() -> None:
    ids = BitMap()
    ids.add_range(0, 60_000_000)  # run containers: tiny
    for i in range(0, 20_000_000, 3):  # bitset containers: 8 KiB per shard, ~300 shards
        ids.discard(i)
    pieces = list(chunks(ids))
    assert all(len(bm.serialize(p)) <= 900_000 for p in pieces)
    assert sum(len(p) for p in pieces) == len(ids)
    assert len(pieces) >= 3


def test_empty_replace_is_one_empty_part() -> None:
    messages = encode("replace", "s", BitMap(), batch="b", encoding="roaring")
    assert len(messages) == 1
    d = decode(messages[0].key, messages[0].value, messages[0].headers)
    assert isinstance(d, Update) and (d.part, d.parts, len(d.ids)) == (0, 1, 0)


def test_auto_encoding_uses_json_for_small_sets_and_roaring_for_large() -> None:
    small = encode("add", "s", BitMap([1, 2]))
    large = encode("add", "s", BitMap(range(1000)))
    assert json.loads(small[0].value) == {"op": "add", "segment": "s", "ids": [1, 2]}
    assert ("encoding", b"roaring") in large[0].headers


@pytest.mark.parametrize(
    ("op", "segment", "batch", "message"),
    [
        ("replace", "s", None, "batch id"),
        ("replace", "s", "a b", "batch id"),
        ("add", "s", "b", "only replace"),
    ],
)
def test_encode_refuses_what_the_consumer_would_reject(op: str, segment: str, batch: str | None,
                                                       message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode(op, segment, BitMap([1]), batch=batch)  # type: ignore[arg-type]


def test_encode_refuses_bad_names_and_tiny_budgets() -> None:
    from segments.errors import InvalidSegmentName

    with pytest.raises(InvalidSegmentName):
        encode("add", "a-b", BitMap([1]))
    with pytest.raises(ValueError, match="at least"):
        list(chunks(BitMap([1]), 1000))
