"""User keys and time buckets in ingest, without Kafka: the codec's forms and the sink's translation and placement.

The sink runs against real stores (memory, SQLite). Expected answers come from
dict/set models built here, not from the library.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroaring import BitMap

import segments
from ingest.batcher import Consumed
from ingest.codec import DecodeError, Update, at_text, decode, encode, encode_keys
from ingest.sink import Sink
from segments.errors import BadTime, InvalidUserKey
from segments.keys import MAX_KEY_BYTES
from segments.storage.memory import MemoryStore

Raw = tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]


def j(doc: object) -> bytes:
    return json.dumps(doc).encode()


def consumed(raw: list[Raw], partition: int = 0) -> list[Consumed]:
    return [Consumed("t", partition, n, k, v, h, decode(k, v, h)) for n, (k, v, h) in enumerate(raw)]


def apply(sink: Sink, records: list[Consumed]) -> list[tuple[int, str, str]]:
    """Prepare and write one batch; the rejects as (offset, reason, message)."""
    plan = sink.prepare(records)
    for work in plan.work:
        sink.write(work)
    return [(r.record.offset, r.reason, r.message) for r in plan.rejected]


def members_by_key(segs: segments.Segments, name: str) -> set[str]:
    keys = segs.keys.reverse(list(segs.evaluate(name)))
    assert None not in keys, "a member that is no key's ID"
    return {k for k in keys if k is not None}


@pytest.fixture
def segs() -> Iterator[segments.Segments]:
    with segments.Segments(MemoryStore()) as s:
        yield s


# --------------------------------------------------------------------------- the codec


def test_json_keys_decode_as_sent_and_ids_stay_empty() -> None:
    update = decode(b"s", j({"op": "add", "segment": "s", "keys": ["b", "a", "b"]}), None)
    assert isinstance(update, Update)
    assert (update.keys, len(update.ids), update.size, update.at) == (["b", "a", "b"], 0, 3, None)


def test_at_in_json_and_in_a_header_decodes_to_utc() -> None:
    update = decode(b"s", j({"op": "add", "segment": "s", "ids": [1], "at": "2026-11-30T14:05:00Z"}), None)
    assert isinstance(update, Update) and update.at == datetime(2026, 11, 30, 14, 5, tzinfo=UTC)
    update = decode(b"s", j({"op": "remove", "segment": "s", "keys": ["k"],
                                 "at": datetime(2026, 11, 30, tzinfo=UTC).timestamp()}), None)
    assert isinstance(update, Update) and update.at == datetime(2026, 11, 30, tzinfo=UTC)
    headers: list[tuple[str, str | bytes | None]] = [
        ("op", b"add"), ("segment", b"s"), ("encoding", b"roaring"), ("at", b"2026-11-30"),
    ]
    update = decode(b"s", BitMap([5]).serialize(), headers)
    assert isinstance(update, Update) and update.at == datetime(2026, 11, 30, tzinfo=UTC)
    assert decode(b"s", j({"op": "add", "segment": "s", "ids": [1], "at": None}), None) == Update(
        "add", "s", BitMap([1])
    )


def test_encode_puts_at_in_json_values_and_binary_headers() -> None:
    small = encode("add", "s", BitMap([1]), at="2026-11-30")
    assert json.loads(small[0].value)["at"] == "2026-11-30T00:00:00+00:00" and small[0].headers == []
    big = encode("replace", "s", BitMap(range(0, 40 * 65536, 3)), batch="b", at="2026-11-30", max_bytes=64 * 1024)
    assert len(big) > 1
    for message in big:
        update = decode(message.key, message.value, message.headers)
        assert isinstance(update, Update) and update.at == datetime(2026, 11, 30, tzinfo=UTC)
    with pytest.raises(BadTime):
        encode("add", "s", BitMap([1]), at="not a time")


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=40),
                max_size=300))
def test_encode_keys_round_trips_and_every_value_fits(keys: list[str]) -> None:
    keys = [k for k in keys if len(k.encode()) <= MAX_KEY_BYTES]
    messages = encode_keys("replace", "s", keys, batch="b", max_bytes=16 * 1024)
    assert all(len(m.value) <= 16 * 1024 for m in messages)
    seen: list[object] = []
    for number, message in enumerate(messages):
        update = decode(message.key, message.value, message.headers)
        assert isinstance(update, Update) and (update.part, update.parts) == (number, len(messages))
        seen += list(update.keys or [])
    assert seen == list(dict.fromkeys(keys))


def test_encode_keys_splits_long_keys_under_the_budget() -> None:
    keys = [f"{'x' * 200}{i:06d}\"\\" for i in range(3000)]  # quotes and backslashes are escaped
    messages = encode_keys("add", "s", keys, max_bytes=16 * 1024)
    assert len(messages) > 30 and all(len(m.value) <= 16 * 1024 for m in messages)
    assert sum(m.count for m in messages) == 3000


@pytest.mark.parametrize("bad", ["", "a\tb", "x" * 257, "\udc80", 7])
def test_encode_keys_refuses_a_bad_key_before_encoding_anything(bad: object) -> None:
    with pytest.raises(InvalidUserKey):
        encode_keys("add", "s", ["fine", bad])  # type: ignore[list-item]
    with pytest.raises(InvalidUserKey, match="single str"):
        encode_keys("add", "s", "abc")


def test_at_text_accepts_the_library_forms() -> None:
    when = datetime(2026, 11, 30, 14, tzinfo=UTC)
    assert at_text(when) == at_text("2026-11-30T14:00:00Z") == at_text(when.timestamp()) == "2026-11-30T14:00:00+00:00"


# --------------------------------------------------------------------------- the sink: keys


def test_keys_are_translated_in_one_create_call_and_one_lookup_per_batch(
    segs: segments.Segments, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, bool]] = []
    translate = segs.keys.translate

    def counting(keys: list[str], create: bool = False) -> list[int | None]:
        calls.append((len(keys), create))
        return translate(keys, create)

    monkeypatch.setattr(segs.keys, "translate", counting)
    raw: list[Raw] = []
    for i in range(50):
        raw.append((b"a", j({"op": "add", "segment": "a", "keys": [f"k{i}", f"k{i + 1}"]}), []))
    raw.append((b"a", j({"op": "remove", "segment": "a", "keys": ["k3", "never"]}), []))
    raw.append((b"b", j({"op": "replace", "segment": "b", "batch": "x", "part": 0, "parts": 1, "keys": ["k7"]}), []))
    raw.append((b"b", j({"op": "add", "segment": "b", "ids": [10**9]}), []))
    assert apply(Sink(segs), consumed(raw)) == []
    assert calls == [(101, True), (2, False)]
    assert members_by_key(segs, "a") == {f"k{i}" for i in range(51)} - {"k3"}
    assert segs.keys.reverse(sorted(segs.evaluate("b"))) == ["k7", None]  # 10**9 is a raw ID, no key's
    assert segs.keys.translate(["never"]) == [None]  # a remove never allocates


def test_a_message_with_a_bad_key_is_rejected_alone_and_allocates_nothing(segs: segments.Segments) -> None:
    raw: list[Raw] = [
        (b"a", j({"op": "add", "segment": "a", "keys": ["ok1"]}), []),
        (b"a", j({"op": "add", "segment": "a", "keys": ["new_but_bad_company", "tab\there"]}), []),
        (b"a", j({"op": "add", "segment": "a", "keys": [["nested"]]}), []),
        (b"a", j({"op": "remove", "segment": "a", "keys": [""]}), []),
        (b"a", j({"op": "add", "segment": "a", "keys": ["x" * 257]}), []),
        (b"a", j({"op": "add", "segment": "a", "keys": ["ok2"]}), []),
    ]
    rejected = apply(Sink(segs), consumed(raw))
    assert [(offset, why) for offset, why, _ in rejected] == [(n, "invalid_user_key") for n in range(1, 5)]
    assert "U+0009" in rejected[0][2] and "must be a string" in rejected[1][2] and "empty" in rejected[2][2]
    assert members_by_key(segs, "a") == {"ok1", "ok2"}
    report = segs.keys.check()
    assert report.ok and report.keys == 2  # new_but_bad_company was not given an ID
    assert segs.keys.translate(["new_but_bad_company"]) == [None]


def test_damaged_key_records_reject_only_the_messages_that_need_them(segs: segments.Segments) -> None:
    segs.keys.create(["good", "damaged"])
    segs.store.put(segs.keys.sets.ids, "damaged", {"id": "not a number"})
    segs.keys.cache.clear()
    raw: list[Raw] = [
        (b"a", j({"op": "add", "segment": "a", "keys": ["good"]}), []),
        (b"a", j({"op": "add", "segment": "a", "keys": ["damaged"]}), []),
        (b"b", j({"op": "add", "segment": "b", "keys": ["fresh"]}), []),
    ]
    rejected = apply(Sink(segs), consumed(raw))
    assert [(offset, why) for offset, why, _ in rejected] == [(1, "corrupt_data")]
    assert members_by_key(segs, "a") == {"good"} and members_by_key(segs, "b") == {"fresh"}


@given(st.lists(st.tuples(st.sampled_from(["add", "remove", "replace"]),
                          st.lists(st.sampled_from([f"u{i}" for i in range(12)]), max_size=6)),
                max_size=12), st.integers(1, 5))
def test_keyed_stream_equals_a_model_whatever_the_batches(ops: list[tuple[str, list[str]]], size: int) -> None:
    raw: list[Raw] = []
    model: set[str] | None = None
    for number, (op, keys) in enumerate(ops):
        batch = f"b{number}" if op == "replace" else None
        raw += [(m.key, m.value, m.headers) for m in encode_keys(op, "s", keys, batch=batch)]  # type: ignore[arg-type]
        if op == "remove":
            model = None if model is None else model - set(keys)
        else:
            model = (set() if model is None or op == "replace" else model) | set(keys)
    with segments.Segments(MemoryStore()) as segs:
        sink = Sink(segs)
        records = consumed(raw)
        for start in range(0, len(records), size):
            assert apply(sink, records[start : start + size]) == []
        if model is None:
            assert segs.names() == []
        else:
            assert members_by_key(segs, "s") == model
        removed_only = {k for op, keys in ops if op == "remove" for k in keys} - {
            k for op, keys in ops if op != "remove" for k in keys
        }
        assert segs.keys.translate(sorted(removed_only)) == [None] * len(removed_only)
        assert segs.keys.check().ok


# --------------------------------------------------------------------------- the sink: time buckets


def day(offset: int) -> str:
    return (datetime.now(UTC) - timedelta(days=offset)).strftime("%Y-%m-%d")


def test_updates_of_different_buckets_are_never_folded_together(segs: segments.Segments) -> None:
    segs.create_windowed("paid", granularity="day", retention=30)
    raw: list[Raw] = [
        (b"paid", j({"op": "add", "segment": "paid", "ids": [1, 2], "at": day(2)}), []),
        (b"paid", j({"op": "remove", "segment": "paid", "ids": [1], "at": day(1)}), []),
        (b"paid", j({"op": "add", "segment": "paid", "keys": ["cust_a"], "at": day(1)}), []),
        (b"paid", j({"op": "add", "segment": "paid", "ids": [3], "at": day(2) + "T23:59:59Z"}), []),
        (b"paid", j({"op": "remove", "segment": "paid", "ids": [2]}), []),  # no at: now, today's bucket
    ]
    assert apply(Sink(segs), consumed(raw)) == []
    uid = segs.keys.translate(["cust_a"])[0]
    assert set(segs.evaluate(f"paid[{day(2)}]")) == {1, 2, 3}
    assert set(segs.evaluate(f"paid[{day(1)}]")) == {uid}
    assert set(segs.evaluate(f"paid[{day(0)}]")) == set()
    assert set(segs.evaluate("paid")) == {1, 2, 3, uid}
    # the watermark is the bucket's: a replay of the batch changes nothing
    before = {i.name: i.version for i in segs.infos()}
    assert apply(Sink(segs), consumed(raw)) == []
    assert {i.name: i.version for i in segs.infos()} == before


def test_a_replace_in_parts_replaces_one_bucket(segs: segments.Segments) -> None:
    segs.create_windowed("active", granularity="day", retention=30)
    segs.add("active", [1, 2], at=day(3))
    segs.add("active", [9], at=day(4))
    raw: list[Raw] = [
        (b"active", j({"op": "replace", "segment": "active", "batch": "r", "part": 1, "parts": 2, "ids": [5],
                       "at": day(3)}), []),
        (b"active", j({"op": "add", "segment": "active", "ids": [6], "at": day(3)}), []),
        (b"active", j({"op": "replace", "segment": "active", "batch": "r", "part": 0, "parts": 2,
                       "keys": ["k"], "at": day(3)}), []),
    ]
    sink = Sink(segs)
    assert apply(sink, consumed(raw)[:2]) == []
    assert set(segs.evaluate(f"active[{day(3)}]")) == {1, 2, 6}  # the part waits, the add is applied
    records = consumed(raw)
    assert apply(sink, records[2:]) == []
    assert set(segs.evaluate(f"active[{day(3)}]")) == {5, *segs.keys.translate(["k"])}
    assert set(segs.evaluate(f"active[{day(4)}]")) == {9}


@pytest.mark.parametrize(
    ("segment", "at", "says"),
    [
        ("plain", day(0), "not windowed"),
        ("missing", day(0), "not windowed"),
        ("win", day(40), "outside the retention"),
        ("win", (datetime.now(UTC) + timedelta(hours=2)).isoformat(), "in the future"),
    ],
)
def test_a_bad_at_is_rejected_bad_time_and_the_rest_flows(segs: segments.Segments, segment: str, at: str,
                                                          says: str) -> None:
    segs.add("plain", [1])
    segs.create_windowed("win", granularity="day", retention=30)
    raw: list[Raw] = [
        (segment.encode(), j({"op": "add", "segment": segment, "keys": ["never_allocated"], "at": at}), []),
        (b"plain", j({"op": "add", "segment": "plain", "ids": [2]}), []),
        (b"win", j({"op": "add", "segment": "win", "ids": [3], "at": day(0)}), []),
    ]
    rejected = apply(Sink(segs), consumed(raw))
    assert [(offset, why) for offset, why, _ in rejected] == [(0, "bad_time")] and says in rejected[0][2]
    assert set(segs.evaluate("plain")) == {1, 2} and set(segs.evaluate("win")) == {3}
    assert segs.keys.translate(["never_allocated"]) == [None]
    assert "missing" not in segs.names()


def test_a_message_without_at_keeps_its_bucket_across_retries(segs: segments.Segments) -> None:
    segs.create_windowed("w", granularity="hour", retention=48)
    sink = Sink(segs)
    records = consumed([(b"w", j({"op": "add", "segment": "w", "ids": [1]}), [])])
    first = sink.resolve(records)[0][0].decoded
    again = sink.resolve(records)[0][0].decoded
    assert isinstance(first, Update) and isinstance(again, Update)
    assert first.bucket is not None and first.bucket.startswith("w::") and first.bucket == again.bucket


def test_decode_errors_of_at_are_bad_time() -> None:
    result = decode(b"s", j({"op": "add", "segment": "s", "ids": [1], "at": "2026-13-45"}), None)
    assert isinstance(result, DecodeError) and result.reason == "bad_time" and "2026-13-45" in result.message
