"""The Kafka message format of segment updates: decoding (consumer) and encoding (producer).

Pure functions, no I/O. A message is ``(key, value, headers)``; the key is
always the segment name (so one segment's updates stay in one partition, in
order). Two value encodings carry the same three operations:

JSON (small deltas)::

    {"op": "add" | "remove", "segment": "name", "ids": [1, 2, 3]}
    {"op": "add" | "remove", "segment": "name", "keys": ["cust_1", "cust_2"]}
    {"op": "replace", "segment": "name", "batch": "b1", "part": 0, "parts": 3, "ids": [...]}

A JSON message carries either ``ids`` (32-bit user IDs) or ``keys`` (string
user keys, translated by the consumer: see :mod:`segments.keys`), never both.
Keys are only checked for being a list here; the consumer validates them when
it translates them (a bad one is dead-lettered ``invalid_user_key``).

Binary (large deltas): the value is a Roaring portable-format bitmap and the
headers say what to do with it: ``op``, ``segment``, ``encoding=roaring``
and, for ``replace``, ``batch``, ``part`` and ``parts``.

Windowed segments: a JSON ``"at"`` (an ISO date or timestamp, or epoch
seconds as a number) or a binary ``at`` header (ISO text) says which time
bucket the update goes to (default: the moment the consumer applies it).
Text that is not a time is a ``bad_time`` decode error; whether the segment
is windowed and ``at`` is within its retention is the consumer's to check.

``decode`` never raises on bad input: it returns a :class:`DecodeError`
with a stable reason code (see :data:`REASONS`), which the consumer sends to
the dead-letter topic. ``encode_*`` split a bitmap by shard range so that
every message value stays under a byte budget.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from pyroaring import BitMap, FrozenBitMap

from segments import bitmap as bm
from segments.errors import BadTime, InvalidBitmap, InvalidSegmentName, InvalidUserId, InvalidUserKey
from segments.keys import check_user_key
from segments.names import check_name
from segments.windows import parse_time

Op = Literal["add", "remove", "replace"]
Headers = list[tuple[str, str | bytes | None]]
#: What confluent-kafka hands out: header values may be ``None``.
RawHeaders = Sequence[tuple[str, str | bytes | None]] | None

OPS: Final[frozenset[str]] = frozenset({"add", "remove", "replace"})
DEFAULT_TOPIC: Final[str] = "segment-updates"
#: Largest message value the encoder produces; Kafka's default cap is about 1 MB
#: (``message.max.bytes`` = 1_000_000 in librdkafka, 1_048_588 on the broker).
DEFAULT_MAX_MESSAGE_BYTES: Final[int] = 900_000
#: Replace batches are limited to this many parts (a 2**32-ID segment needs < 1000 parts).
MAX_PARTS: Final[int] = 100_000
#: A batch id: 1-64 characters of ``[A-Za-z0-9_.:-]``.
BATCH_PATTERN: Final[re.Pattern[str]] = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
#: Up to this many IDs the producer's ``encoding="auto"`` sends JSON, else roaring.
JSON_MAX_IDS: Final[int] = 64

#: Reason codes of decode errors, as they appear in the ``error`` header of dead letters.
REASONS: Final[dict[str, str]] = {
    "bad_json": "the value is not a JSON object of the documented shape",
    "unknown_op": "op is not add, remove or replace",
    "invalid_segment_name": "the segment name is not 1-128 characters of [A-Za-z0-9_.:]",
    "key_mismatch": "the message key is not the segment name",
    "invalid_user_id": "an ID is not an integer in [0, 2**32)",
    "corrupt_bitmap": "the binary value is not a valid Roaring portable bitmap",
    "missing_header": "a binary message lacks a required header",
    "bad_header": "a header value is unreadable or not one of the allowed values",
    "bad_part": "batch, part or parts of a replace are invalid or inconsistent",
    "bad_time": "at is not an ISO date or timestamp (or, in JSON, epoch seconds)",
}


@dataclass(frozen=True)
class Update:
    """One decoded segment update."""

    op: Op
    segment: str
    ids: BitMap | FrozenBitMap
    #: replace only: the batch id, this part's number (0-based) and the number of parts
    batch: str | None = None
    part: int | None = None
    parts: int | None = None
    #: a JSON message's string user keys, as sent (not validated yet): ``ids`` is then empty until
    #: the consumer translates them
    keys: Sequence[object] | None = None
    #: windowed segments: the moment whose bucket the update goes to (``None``: when applied)
    at: datetime | None = None
    #: set by the consumer for a windowed segment: the bucket's segment (``name::bucket``)
    bucket: str | None = None

    @property
    def destination(self) -> str:
        """The segment whose records the update changes: its bucket's for a windowed segment."""
        return self.bucket or self.segment

    @property
    def size(self) -> int:
        """IDs or keys carried (what batch limits count)."""
        return len(self.keys) if self.keys is not None else len(self.ids)


@dataclass(frozen=True)
class DecodeError:
    """Why a message could not be decoded; ``reason`` is one of :data:`REASONS`."""

    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class _Reject(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.error = DecodeError(reason, message)


# --------------------------------------------------------------------------- decoding


def decode(key: bytes | None, value: bytes | None, headers: RawHeaders) -> Update | DecodeError:
    """Decode one Kafka message; never raises on bad input."""
    encoding = "json"
    try:
        head = _headers(headers)
        encoding = head.get("encoding", "json")
        if encoding == "roaring":
            update = _decode_binary(value, head)
        elif encoding == "json":
            update = _decode_json(value)
        else:
            raise _Reject("bad_header", f"encoding header is {encoding!r}; expected 'roaring' (or 'json')")
        _check_key(key, update.segment)
        return update
    except _Reject as exc:
        return exc.error
    except Exception as exc:  # noqa: BLE001 - a message must never stop the consumer (no poison pills)
        reason = "corrupt_bitmap" if encoding == "roaring" else "bad_json"
        return DecodeError(reason, f"the message cannot be decoded: {type(exc).__name__}: {exc}"[:500])


def _headers(headers: RawHeaders) -> dict[str, str]:
    """The headers this codec reads, decoded; the last occurrence of a name wins."""
    out: dict[str, str] = {}
    for name, raw in headers or ():
        if name not in ("op", "segment", "encoding", "batch", "part", "parts", "at"):
            continue
        if raw is None:
            raise _Reject("bad_header", f"header {name!r} has no value")
        if isinstance(raw, str):
            out[name] = raw
            continue
        try:
            out[name] = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Reject("bad_header", f"header {name!r} is not UTF-8: {exc}") from exc
    return out


def _check_key(key: bytes | None, segment: str) -> None:
    if key is None:
        raise _Reject("key_mismatch", f"the message has no key; the key must be the segment name {segment!r}")
    if key != segment.encode("utf-8"):
        shown = key[:140].decode("utf-8", "replace")
        raise _Reject("key_mismatch", f"the message key {shown!r} is not the segment name {segment!r}")


def _op(value: object) -> Op:
    if value not in OPS:
        raise _Reject("unknown_op", f"op is {_show(value)}; expected 'add', 'remove' or 'replace'")
    return value  # type: ignore[return-value]


def _segment(value: object) -> str:
    try:
        return check_name(value)
    except InvalidSegmentName as exc:
        raise _Reject("invalid_segment_name", str(exc)) from exc


def _decode_json(value: bytes | None) -> Update:
    if not value:
        raise _Reject("bad_json", "the message has no value (expected a JSON object or a roaring bitmap "
                      "with an 'encoding: roaring' header)")
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Reject("bad_json", f"the value is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise _Reject("bad_json", "the value is JSON nested too deeply to decode") from exc
    if not isinstance(doc, dict):
        raise _Reject("bad_json", f"the value is a JSON {type(doc).__name__}, expected an object")
    for field in ("op", "segment"):
        if field not in doc:
            raise _Reject("bad_json", f"field {field!r} is missing")
    if ("ids" in doc) == ("keys" in doc):
        raise _Reject("bad_json", "give either 'ids' (user IDs) or 'keys' (user keys), not both"
                      if "ids" in doc else "field 'ids' (or 'keys') is missing")
    op = _op(doc["op"])
    segment = _segment(doc["segment"])
    at = _at(doc.get("at"), "field")
    keys: list[object] | None = None
    if "keys" in doc:
        keys = doc["keys"]
        if not isinstance(keys, list):
            raise _Reject("bad_json", f"'keys' is a JSON {type(keys).__name__}, expected a list of strings")
        ids: BitMap = BitMap()
    else:
        raw_ids = doc["ids"]
        if not isinstance(raw_ids, list):
            raise _Reject("bad_json", f"'ids' is a JSON {type(raw_ids).__name__}, expected a list of integers")
        ids = _json_ids(raw_ids)
    if op != "replace":
        return Update(op, segment, ids, keys=keys, at=at)
    batch, part, parts = _part_fields(doc.get("batch"), doc.get("part"), doc.get("parts"), "field")
    return Update(op, segment, ids, batch, part, parts, keys=keys, at=at)


def _at(value: object, what: str) -> datetime | None:
    """The ``at`` of a message (``None``: not given); text or, in JSON, epoch seconds."""
    if value is None:
        return None
    if what == "header" or isinstance(value, str):
        if not isinstance(value, str) or not 1 <= len(value) <= 64:
            raise _Reject("bad_time", f"{what} 'at' is {_show(value)}; expected an ISO date or timestamp "
                          "(e.g. 2026-11-30 or 2026-11-30T14:05:00Z)")
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Reject("bad_time", f"field 'at' is {_show(value)}; expected an ISO date or timestamp, "
                      "or epoch seconds")
    try:
        return parse_time(value)
    except BadTime as exc:
        raise _Reject("bad_time", f"{what} {exc}") from exc


def _json_ids(values: list[object]) -> BitMap:
    """IDs of a JSON list; short lists skip numpy (most deltas are a handful of IDs)."""
    if len(values) <= 256:
        for v in values:
            if type(v) is not int or not 0 <= v <= bm.MAX_USER_ID:
                break
        else:
            return BitMap(values)  # type: ignore[arg-type]
    try:
        return bm.from_ids(values)
    except InvalidUserId as exc:
        raise _Reject("invalid_user_id", str(exc)) from exc


def _decode_binary(value: bytes | None, head: dict[str, str]) -> Update:
    for name in ("op", "segment"):
        if name not in head:
            raise _Reject("missing_header", f"a roaring message needs an {name!r} header")
    op = _op(head["op"])
    segment = _segment(head["segment"])
    batch = part = parts = None
    if op == "replace":
        for name in ("batch", "part", "parts"):
            if name not in head:
                raise _Reject("missing_header", f"a roaring replace message needs a {name!r} header")
        batch, part, parts = _part_fields(head["batch"], _int_header(head, "part"), _int_header(head, "parts"),
                                          "header")
    at = _at(head.get("at"), "header")
    if not value:
        raise _Reject("corrupt_bitmap", "the message has no value")
    try:
        ids = bm.deserialize(value)
    except InvalidBitmap as exc:
        raise _Reject("corrupt_bitmap", str(exc)) from exc
    return Update(op, segment, ids, batch, part, parts, at=at)


def _int_header(head: dict[str, str], name: str) -> int:
    text = head[name]
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise _Reject("bad_part", f"header {name!r} is {text[:40]!r}; expected a non-negative integer")
    return int(text)


def _part_fields(batch: object, part: object, parts: object, what: str) -> tuple[str, int, int]:
    if batch is None or part is None or parts is None:
        missing = [n for n, v in (("batch", batch), ("part", part), ("parts", parts)) if v is None]
        raise _Reject("bad_part", f"a replace needs batch, part and parts; {what} {', '.join(map(repr, missing))} "
                      "missing")
    if not isinstance(batch, str) or not BATCH_PATTERN.fullmatch(batch):
        raise _Reject("bad_part", f"batch id {_show(batch)} is invalid: 1-64 characters of [A-Za-z0-9_.:-]")
    if type(parts) is not int or not 1 <= parts <= MAX_PARTS:
        raise _Reject("bad_part", f"parts is {_show(parts)}; expected an integer from 1 to {MAX_PARTS}")
    if type(part) is not int or not 0 <= part < parts:
        raise _Reject("bad_part", f"part is {_show(part)}; expected an integer from 0 to {parts - 1} "
                      f"(parts={parts})")
    return batch, part, parts


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class Message:
    """One message to produce: key, value and headers."""

    key: bytes
    value: bytes
    headers: Headers
    #: number of IDs it carries (for progress reporting)
    count: int


#: The most one shard can take in the portable format once run-optimized: 8 KiB of container
#: data (an array, bitset or run container is never larger after ``run_optimize``), its 4-byte
#: descriptive header, its 4-byte offset and (rounded up to a byte) its run-container flag.
_SHARD_MAX_BYTES: Final[int] = 8192 + 4 + 4 + 1
#: The cookie and container count in front of the containers.
_BITMAP_HEADER_BYTES: Final[int] = 8


def shards_per_message(max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> int:
    """How many consecutive shards always fit in one value of ``max_bytes``, however dense they are.

    A producer that cannot see the whole bitmap (one Spark task among many)
    splits by fixed shard ranges of this width instead of packing with
    :func:`chunks`: each range is one message, run-optimized, within the budget.
    """
    if max_bytes < 16 * 1024:
        raise ValueError(f"max_bytes must be at least 16384, got {max_bytes}")
    return (max_bytes - _BITMAP_HEADER_BYTES) // _SHARD_MAX_BYTES


def chunks(ids: BitMap | FrozenBitMap, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Iterator[BitMap]:
    """Split a bitmap into shard-aligned pieces whose portable serialization fits ``max_bytes``.

    An empty bitmap gives one empty piece. Pieces are cut at shard boundaries
    (``2**16`` IDs, at most ~8 KiB each), so any budget of 16 KiB or more works.
    """
    if max_bytes < 16 * 1024:
        raise ValueError(f"max_bytes must be at least 16384, got {max_bytes}")
    if not ids:
        yield BitMap()
        return
    whole = BitMap(ids)
    whole.run_optimize()
    if len(whole.serialize()) <= max_bytes:
        yield whole
        return
    pending: list[tuple[int, BitMap, int]] = []
    total = 0
    for shard, part in bm.split_by_shard(whole):
        part.run_optimize()
        size = len(part.serialize())
        if pending and total + size > max_bytes - 1024:
            yield from _fit(pending, max_bytes)
            pending, total = [], 0
        pending.append((shard, part, size))
        total += size
    if pending:
        yield from _fit(pending, max_bytes)


def _fit(pending: list[tuple[int, BitMap, int]], max_bytes: int) -> Iterator[BitMap]:
    """Union the pieces; halve the run of shards again if the union is still too big."""
    piece = BitMap.union(*(p for _, p, _ in pending))
    piece.run_optimize()
    if len(pending) == 1 or len(piece.serialize()) <= max_bytes:
        yield piece
        return
    half = len(pending) // 2
    yield from _fit(pending[:half], max_bytes)
    yield from _fit(pending[half:], max_bytes)


def _json_value(op: str, segment: str, ids: list[int], extra: dict[str, object]) -> bytes:
    doc: dict[str, object] = {"op": op, "segment": segment, **extra, "ids": ids}
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def at_text(at: object) -> str:
    """``at`` (a datetime, a date, ISO text or epoch seconds) as the ISO text messages carry.

    ``BadTime`` (code ``bad_time``) if it is not a time.
    """
    return parse_time(at).isoformat()


def _check_op_batch(op: Op, segment: str, batch: str | None) -> None:
    _op(op)
    check_name(segment)
    if op == "replace":
        if batch is None or not BATCH_PATTERN.fullmatch(batch):
            raise ValueError(f"replace needs a batch id of 1-64 characters of [A-Za-z0-9_.:-], got {batch!r}")
    elif batch is not None:
        raise ValueError("only replace takes a batch id")


def _json_size(key: str) -> int:
    """Bytes ``key`` takes in a compact JSON list with ``ensure_ascii=False``, its comma included.

    A valid key has no control character, so only ``"`` and ``\\`` are escaped.
    """
    return len(key.encode("utf-8")) + 3 + key.count('"') + key.count("\\")


def encode_keys(
    op: Op,
    segment: str,
    keys: Sequence[str],
    *,
    batch: str | None = None,
    at: object | None = None,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> list[Message]:
    """JSON messages carrying string user keys (``"keys"``), each value at most ``max_bytes``.

    Every key is validated first (``InvalidUserKey`` names the first bad one;
    nothing is encoded then). Duplicates are sent once, in first-seen order.
    ``add``/``remove`` may become several messages; ``replace`` becomes the
    parts ``0..n-1`` of ``batch``. ``at``: see :func:`at_text`.
    """
    _check_op_batch(op, segment, batch)
    if max_bytes < 16 * 1024:
        raise ValueError(f"max_bytes must be at least 16384, got {max_bytes}")
    unique = list(dict.fromkeys(check_user_key(k) for k in _key_batch(keys)))
    head: dict[str, object] = {} if at is None else {"at": at_text(at)}
    budget = max_bytes - 512  # the envelope: op, segment (<= 128), batch fields and at take far less
    pieces: list[list[str]] = [[]]
    size = 0
    for key in unique:
        cost = _json_size(key)
        if size + cost > budget and pieces[-1]:
            pieces.append([])
            size = 0
        pieces[-1].append(key)
        size += cost
    name = segment.encode("utf-8")
    out = []
    for number, piece in enumerate(pieces):
        doc: dict[str, object] = {"op": op, "segment": segment, **head}
        if op == "replace":
            doc.update(batch=batch, part=number, parts=len(pieces))
        doc["keys"] = piece
        value = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        out.append(Message(name, value, [], len(piece)))
    return out


def _key_batch(keys: Sequence[str]) -> Sequence[str]:
    if isinstance(keys, (str, bytes)):
        raise InvalidUserKey(f"expected a collection of user keys, got a single {type(keys).__name__}")
    return keys


def _json_pieces(ids: BitMap | FrozenBitMap, max_bytes: int) -> list[list[int]]:
    """Split a sorted ID list into runs whose JSON stays well under ``max_bytes`` (≤ 11 bytes per ID)."""
    per_message = max(1, (max_bytes - 512) // 11)
    values = ids.to_array().tolist() if len(ids) else []
    if not values:
        return [[]]
    return [values[i : i + per_message] for i in range(0, len(values), per_message)]


def encode(
    op: Op,
    segment: str,
    ids: BitMap | FrozenBitMap,
    *,
    batch: str | None = None,
    encoding: Literal["auto", "json", "roaring"] = "auto",
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    at: object | None = None,
) -> list[Message]:
    """The messages that carry one operation, each value at most ``max_bytes``.

    ``add``/``remove`` may become several messages (each applied on its own).
    ``replace`` becomes the parts ``0..n-1`` of ``batch`` (required), made
    visible together by the consumer. ``at`` (windowed segments: see
    :func:`at_text`) goes into every message.
    """
    _check_op_batch(op, segment, batch)
    when = None if at is None else at_text(at)
    messages = _encode(op, segment, ids, batch, encoding, max_bytes, when)
    if when is not None:
        for message in messages:
            if message.headers:  # a binary message: its headers say what to do (JSON's value says "at")
                message.headers.append(("at", when.encode()))
    return messages


def _encode(
    op: Op,
    segment: str,
    ids: BitMap | FrozenBitMap,
    batch: str | None,
    encoding: Literal["auto", "json", "roaring"],
    max_bytes: int,
    when: str | None,
) -> list[Message]:
    if encoding == "auto":
        encoding = "json" if len(ids) <= JSON_MAX_IDS else "roaring"
    key = segment.encode("utf-8")
    if encoding == "json":
        pieces = _json_pieces(ids, max_bytes)
        messages = []
        for number, values in enumerate(pieces):
            extra: dict[str, object] = (
                {"batch": batch, "part": number, "parts": len(pieces)} if op == "replace" else {}
            )
            if when is not None:
                extra["at"] = when
            messages.append(Message(key, _json_value(op, segment, values, extra), [], len(values)))
        return messages
    if encoding != "roaring":
        raise ValueError(f"encoding must be 'auto', 'json' or 'roaring', got {encoding!r}")
    parts = list(chunks(ids, max_bytes))
    if op != "replace":
        return [roaring_message(op, segment, piece) for piece in parts]
    return [roaring_message(op, segment, piece, batch=batch, part=number, parts=len(parts))
            for number, piece in enumerate(parts)]


def roaring_message(
    op: Op,
    segment: str,
    ids: BitMap | FrozenBitMap,
    *,
    batch: str | None = None,
    part: int | None = None,
    parts: int | None = None,
) -> Message:
    """The binary message carrying ``ids`` as they are (no splitting); ``replace`` needs all three part fields.

    Names and part fields are the caller's to validate (:func:`encode` does);
    run-optimize ``ids`` first for the smallest value.
    """
    key = segment.encode("utf-8")
    headers: Headers = [("op", op.encode()), ("segment", key), ("encoding", b"roaring")]
    if op == "replace":
        if batch is None or part is None or parts is None:
            raise ValueError("a replace message needs batch, part and parts")
        headers += [("batch", batch.encode()), ("part", str(part).encode()), ("parts", str(parts).encode())]
    return Message(key, bm.serialize(ids), headers, len(ids))


__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TOPIC",
    "MAX_PARTS",
    "REASONS",
    "DecodeError",
    "Message",
    "Op",
    "Update",
    "chunks",
    "at_text",
    "decode",
    "encode",
    "encode_keys",
    "roaring_message",
    "shards_per_message",
]
