"""``deserialize`` consumes exactly one portable roaring bitmap: anything appended, or anything missing, is refused.

``serialized_length`` reads the length from the headers the way the Java, Go
and C readers walk the stream; these tests check it against what pyroaring
writes for every container kind and header form, and that a suffix or a cut
of any length makes ``deserialize`` refuse the bytes.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroaring import BitMap

from segments import bitmap as bm
from segments.errors import CorruptSegment, InvalidBitmap
from tests.strategies import MAX_ID, id_sets


@st.composite
def bitmaps(draw: st.DrawFn) -> BitMap:
    """Bitmaps of every container kind (array, bitset, run) and header form.

    Few or many containers (the offset header is left out of a run-cookie bitmap
    of fewer than 4 containers; from 17 on the length is computed vectorized).
    """
    out = BitMap(draw(id_sets))
    for _ in range(draw(st.integers(0, 40))):
        start = draw(st.integers(0, MAX_ID))
        kind = draw(st.sampled_from(["run", "bitset", "array"]))
        if kind == "run":
            out.add_range(start, min(start + draw(st.integers(1, 70_000)), MAX_ID + 1))
        elif kind == "bitset":
            base = start & ~0xFFFF
            out.update(range(base, base + 0x10000, draw(st.sampled_from([2, 3, 7, 13]))))
        else:
            out.update(draw(st.sets(st.integers(start, min(start + 65_535, MAX_ID)), max_size=30)))
    if draw(st.booleans()):
        out.run_optimize()
    return out


def _forms(bitmap: BitMap) -> str:
    data = bm.serialize(bitmap)
    (cookie,) = struct.unpack_from("<I", data)
    return "no-run cookie" if cookie == 12346 else f"run cookie, {(cookie >> 16) + 1} containers"


@given(bitmaps())
def test_round_trip_and_exact_length(bitmap: BitMap) -> None:
    data = bm.serialize(bitmap)
    assert bm.serialized_length(data) == len(data)
    assert bm.deserialize(data) == bitmap
    assert bm.deserialize(memoryview(data)) == bitmap
    assert bm.deserialize(bytearray(data), untrusted=False) == bitmap


@given(bitmaps(), st.binary(min_size=1, max_size=64) | bitmaps().map(bm.serialize))
def test_anything_appended_is_refused(bitmap: BitMap, suffix: bytes) -> None:
    data = bm.serialize(bitmap)
    with pytest.raises(InvalidBitmap) as caller:
        bm.deserialize(data + suffix)
    assert caller.value.code == "invalid_bitmap"
    assert f"{len(suffix)} bytes follow the end of the bitmap at byte {len(data)}" in str(caller.value)
    with pytest.raises(CorruptSegment):
        bm.deserialize(data + suffix, untrusted=False)


@given(bitmaps(), st.data())
def test_any_truncation_is_refused(bitmap: BitMap, data: st.DataObject) -> None:
    raw = bm.serialize(bitmap)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(InvalidBitmap):
        bm.deserialize(raw[:cut])
    with pytest.raises(CorruptSegment):
        bm.deserialize(raw[:cut], untrusted=False)


@given(bitmaps(), st.data())
def test_the_loop_and_the_vectorized_length_agree(bitmap: BitMap, data: st.DataObject) -> None:
    raw = bytearray(bm.serialize(bitmap))
    if len(raw) > 8 and data.draw(st.booleans()):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    answers: list[int | str] = []
    for threshold in (0, 1 << 17):  # every bitmap through numpy, then every one through the loop
        original = bm._LOOP_MAX_CONTAINERS
        bm._LOOP_MAX_CONTAINERS = threshold
        try:
            answers.append(bm.serialized_length(bytes(raw)))
        except ValueError as exc:
            answers.append(type(exc).__name__)
        finally:
            bm._LOOP_MAX_CONTAINERS = original
    assert answers[0] == answers[1], (_forms(bitmap), answers)


def test_the_reported_case_two_bitmaps_concatenated() -> None:
    """A file of 70,014 IDs read back as the 8 of its first bitmap (the issue's report)."""
    first = BitMap([3, 5, 8, 13, 21, 34, 55, 89])
    second = BitMap(range(1_000_000, 1_070_006))
    second.run_optimize()
    data = bm.serialize(first) + bm.serialize(second)
    assert len(BitMap.deserialize(data)) == 8  # pyroaring alone silently drops the second bitmap
    with pytest.raises(InvalidBitmap) as refused:
        bm.deserialize(data)
    print(f"refused: {refused.value}")
    assert f"follow the end of the bitmap at byte {len(bm.serialize(first))}" in str(refused.value)


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"", "too short for the 4-byte cookie"),
        (b"\x3a\x30", "too short for the 4-byte cookie"),
        (b"\x3a\x30\x00\x00", "container count is cut off"),
        (b"\x00\x01garbage", "unknown cookie"),
        (struct.pack("<II", 12346, 70_000), "claims 70000 containers"),
        (struct.pack("<II", 12346, 2) + b"\x00" * 8, "headers of 2 containers need 24 bytes"),
    ],
    ids=["empty", "2 bytes", "no count", "bad cookie", "too many containers", "short header"],
)
def test_unreadable_headers_are_named(data: bytes, problem: str) -> None:
    with pytest.raises(InvalidBitmap) as refused:
        bm.deserialize(data)
    assert problem in str(refused.value)


@pytest.mark.parametrize("containers", [5, 40], ids=["loop", "numpy"])
def test_an_offset_header_that_disagrees_with_the_containers_is_refused(containers: int) -> None:
    bitmap = BitMap(range(0, containers << 16, 1 << 15))
    data = bytearray(bm.serialize(bitmap))
    assert struct.unpack_from("<I", data)[0] == 12346
    offsets_at = 8 + 4 * containers
    last = offsets_at + 4 * (containers - 1)
    (offset,) = struct.unpack_from("<I", data, last)
    struct.pack_into("<I", data, last, offset + 2)
    with pytest.raises(InvalidBitmap) as refused:
        bm.deserialize(bytes(data))
    assert f"puts container {containers - 1} at byte {offset + 2}, it starts at {offset}" in str(refused.value)


def test_an_empty_bitmap_is_its_8_byte_header() -> None:
    data = bm.serialize(BitMap())
    assert len(data) == 8 and bm.serialized_length(data) == 8
    assert bm.deserialize(data) == BitMap()
    with pytest.raises(InvalidBitmap):
        bm.deserialize(data + b"\x00")


@given(st.binary(max_size=600))
def test_arbitrary_bytes_are_a_bitmap_or_refused(data: bytes) -> None:
    try:
        length = bm.serialized_length(data)
    except ValueError:
        length = None
    try:
        decoded = bm.deserialize(data)
    except InvalidBitmap:
        return
    assert length == len(data)
    assert bm.deserialize(bm.serialize(decoded)) == decoded
