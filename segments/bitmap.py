"""The one module that owns pyroaring: encoding, validation and shard splitting.

User IDs are unsigned 32-bit integers, so ``BitMap`` (32-bit roaring) is the
bitmap type. The at-rest and on-the-wire encoding is the Roaring portable
serialization, readable by the Java, Go and C Roaring libraries.
"""

from __future__ import annotations

import array
import struct
from collections.abc import Iterable, Iterator

import numpy as np
from pyroaring import BitMap, FrozenBitMap

from .errors import CorruptSegment, InvalidBitmap, InvalidUserId

#: Number of low bits of a user ID inside one shard; ``shard = user_id >> SHARD_BITS``.
SHARD_BITS = 16
SHARD_WIDTH = 1 << SHARD_BITS
MAX_USER_ID = (1 << 32) - 1

__all__ = [
    "MAX_USER_ID",
    "SHARD_BITS",
    "SHARD_WIDTH",
    "BitMap",
    "FrozenBitMap",
    "deserialize",
    "from_ids",
    "serialize",
    "serialized_length",
    "check_user_id",
    "shard_of",
    "shard_part",
    "shards_of",
    "shard_range",
    "split_by_shard",
    "to_bitmap",
]


def serialize(bitmap: BitMap | FrozenBitMap) -> bytes:
    """Encode in the Roaring portable format."""
    return bytes(bitmap.serialize())


def deserialize(data: bytes | bytearray | memoryview, *, untrusted: bool = True) -> BitMap:
    """Decode portable roaring bytes that must hold exactly one bitmap, validating them.

    The input must end where the bitmap ends (see :func:`serialized_length`):
    two bitmaps concatenated, or anything appended, are refused, not cut off.
    Raises ``InvalidBitmap`` for caller-supplied bytes (``untrusted=True``) and
    ``CorruptSegment`` for bytes read back from the store.
    """
    raw = bytes(data)
    try:
        length = serialized_length(raw)
    except ValueError as exc:
        problem = str(exc)
    else:
        if length == len(raw):
            try:
                return BitMap.deserialize(raw)
            except Exception as exc:  # pyroaring raises ValueError, IndexError, ... on bad input
                problem = str(exc)
        else:
            problem = (f"{len(raw) - length} bytes follow the end of the bitmap at byte {length} "
                       "(two bitmaps concatenated, or data appended?)")
    if untrusted:
        raise InvalidBitmap(f"not a valid portable roaring bitmap ({len(raw)} bytes): {problem}")
    raise CorruptSegment(f"stored bitmap failed validation: {problem}")


# The portable format (https://github.com/RoaringBitmap/RoaringFormatSpec), little endian:
# a cookie, then for a "run" cookie a bitset of which containers are run containers; a
# descriptive header (key, cardinality - 1) per container; an offset header (the byte
# position of each container) unless the cookie is "run" and there are fewer than
# _NO_OFFSET_THRESHOLD containers; then the containers: an array (2 bytes per value),
# a bitset (8 KiB) or runs (a 2-byte count, then 4 bytes per run).
_COOKIE_NO_RUN = 12346
_COOKIE_RUN = 12347
_NO_OFFSET_THRESHOLD = 4
_MAX_CONTAINERS = 1 << 16
_ARRAY_MAX_CARDINALITY = 4096
_BITSET_BYTES = 8192
#: Up to this many containers a Python loop is faster than numpy's setup cost.
_LOOP_MAX_CONTAINERS = 16
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


def serialized_length(data: bytes) -> int:
    """The exact number of bytes of the portable roaring bitmap that ``data`` starts with.

    Read from the headers (cookie, run-container flags, descriptive and offset
    headers) and, for run containers, their run counts, the way the Java, Go
    and C readers consume the stream; the offset header must agree with the
    containers' sizes. Raises ``ValueError`` if the headers are unreadable,
    inconsistent or cut short. The containers' contents are not checked.
    """
    size = len(data)
    if size < 4:
        raise ValueError(f"{size} bytes is too short for the 4-byte cookie")
    (cookie,) = _U32.unpack_from(data, 0)
    if cookie == _COOKIE_NO_RUN:
        if size < 8:
            raise ValueError("the container count is cut off")
        (count,) = _U32.unpack_from(data, 4)
        if count > _MAX_CONTAINERS:
            raise ValueError(f"the header claims {count} containers (at most {_MAX_CONTAINERS})")
        flags, position, has_offsets = b"", 8, True
    elif cookie & 0xFFFF == _COOKIE_RUN:
        count = (cookie >> 16) + 1
        flags = data[4 : 4 + (count + 7) // 8]
        position, has_offsets = 4 + (count + 7) // 8, count >= _NO_OFFSET_THRESHOLD
    else:
        raise ValueError(f"unknown cookie {cookie & 0xFFFF} (expected {_COOKIE_NO_RUN} or {_COOKIE_RUN})")
    offsets_at = position + 4 * count
    end = offsets_at + (4 * count if has_offsets else 0)
    if end > size:
        raise ValueError(f"the headers of {count} containers need {end} bytes")
    if not has_offsets:
        return _containers_end_loop(data, count, flags, position, None, end)
    if count <= _LOOP_MAX_CONTAINERS:
        return _containers_end_loop(data, count, flags, position, offsets_at, end)
    return _containers_end_numpy(data, count, flags, position, offsets_at, end)


def _containers_end_loop(
    data: bytes, count: int, flags: bytes, described_at: int, offsets_at: int | None, position: int
) -> int:
    """Walk the containers one by one (few containers, or no offset header)."""
    for i in range(count):
        if offsets_at is not None:
            (offset,) = _U32.unpack_from(data, offsets_at + 4 * i)
            if offset != position:
                raise ValueError(f"the offset header puts container {i} at byte {offset}, it starts at {position}")
        if flags and flags[i >> 3] >> (i & 7) & 1:
            if position + 2 > len(data):
                raise ValueError(f"run container {i} is cut off")
            (runs,) = _U16.unpack_from(data, position)
            position += 2 + 4 * runs
        else:
            (cardinality_less_one,) = _U16.unpack_from(data, described_at + 4 * i + 2)
            cardinality = cardinality_less_one + 1
            position += _BITSET_BYTES if cardinality > _ARRAY_MAX_CARDINALITY else 2 * cardinality
    return position


def _containers_end_numpy(
    data: bytes, count: int, flags: bytes, described_at: int, offsets_at: int, position: int
) -> int:
    """The same as the loop, vectorized over the offset header (present from 4 containers on)."""
    cardinality_less_one = np.frombuffer(data, dtype="<u2", count=2 * count, offset=described_at)[1::2]
    sizes = 2 * cardinality_less_one.astype(np.int64) + 2
    sizes[cardinality_less_one >= _ARRAY_MAX_CARDINALITY] = _BITSET_BYTES
    offsets = np.frombuffer(data, dtype="<u4", count=count, offset=offsets_at).astype(np.int64)
    if flags:
        is_run = np.unpackbits(np.frombuffer(flags, dtype=np.uint8), count=count, bitorder="little").view(bool)
        run_at = offsets[is_run]
        if run_at.size:
            if int(run_at.max()) + 2 > len(data):
                raise ValueError("a run container is cut off, or the offset header points past the end")
            octets = np.frombuffer(data, dtype=np.uint8)
            sizes[is_run] = 2 + 4 * (octets[run_at] | (octets[run_at + 1].astype(np.int64) << 8))
    ends = offsets + sizes
    if offsets[0] != position or (ends[:-1] != offsets[1:]).any():
        starts = np.concatenate(([position], ends[:-1]))
        i = int(np.flatnonzero(starts != offsets)[0])
        raise ValueError(f"the offset header puts container {i} at byte {offsets[i]}, it starts at {starts[i]}")
    return int(ends[-1])


def from_ids(values: Iterable[object]) -> BitMap:
    """Build a bitmap from integers, rejecting anything that is not a uint32."""
    if isinstance(values, np.ndarray):
        return _from_array(values)
    if not isinstance(values, (list, tuple)):
        values = list(values)
    if not values:
        return BitMap()
    if len(values) <= 256:
        # Short lists (the common JSON delta): a Python check beats numpy's setup cost.
        for v in values:
            if type(v) is not int:
                break
            if not 0 <= v <= MAX_USER_ID:
                raise InvalidUserId(_range_message(v))
        else:
            return BitMap(values)  # type: ignore[arg-type]  # every value was checked to be an int
    for v in values:
        if type(v) is not int:  # bool, float, str, numpy scalars and None are refused
            if isinstance(v, np.integer):
                continue
            raise InvalidUserId(f"user IDs must be integers, got {v!r}")
    try:
        arr = np.asarray(values, dtype=np.int64)
    except OverflowError as exc:
        bad = next(v for v in values if not (0 <= int(v) <= MAX_USER_ID))  # type: ignore[arg-type]
        raise InvalidUserId(_range_message(bad)) from exc
    return _from_array(arr)


def _range_message(value: object) -> str:
    return f"user ID {value!r} is out of range: IDs are unsigned 32-bit integers (0 to {MAX_USER_ID})"


def _from_array(arr: np.ndarray) -> BitMap:
    if arr.size == 0:
        return BitMap()
    if arr.dtype.kind not in "iu":
        raise InvalidUserId(f"user IDs must be integers, got an array of {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise InvalidUserId(_range_message(lo))
    if hi > MAX_USER_ID:
        raise InvalidUserId(_range_message(hi))
    packed = array.array("I", np.ascontiguousarray(arr, dtype=np.uint32).tobytes())
    return BitMap(packed)


def to_bitmap(ids: object) -> BitMap | FrozenBitMap:
    """Accept any supported form of a user-ID set and return a bitmap.

    Forms: ``BitMap``/``FrozenBitMap`` (returned as is), portable roaring
    ``bytes``, a numpy integer array, or any iterable of ints.
    """
    if isinstance(ids, (BitMap, FrozenBitMap)):
        return ids
    if isinstance(ids, (bytes, bytearray, memoryview)):
        return deserialize(ids)
    if isinstance(ids, (str, dict)) or ids is None:
        raise InvalidUserId(f"expected a collection of user IDs, got {type(ids).__name__}")
    if isinstance(ids, int):
        raise InvalidUserId("expected a collection of user IDs, got a single integer")
    try:
        iterator = iter(ids)  # type: ignore[call-overload, unused-ignore]
    except TypeError as exc:
        raise InvalidUserId(f"expected a collection of user IDs, got {type(ids).__name__}") from exc
    if isinstance(ids, np.ndarray):
        return _from_array(ids)
    return from_ids(iterator)


def check_user_id(user_id: object) -> int:
    """Validate one user ID."""
    if not isinstance(user_id, (int, np.integer)) or isinstance(user_id, bool):
        raise InvalidUserId(f"user IDs must be integers, got {user_id!r}")
    value = int(user_id)
    if not 0 <= value <= MAX_USER_ID:
        raise InvalidUserId(_range_message(value))
    return value


def shard_of(user_id: int) -> int:
    """The shard holding a user ID."""
    return user_id >> SHARD_BITS


def shard_range(shard: int) -> tuple[int, int]:
    """``[start, stop)`` of the user IDs in a shard."""
    start = shard << SHARD_BITS
    return start, start + SHARD_WIDTH


def shards_of(bitmap: BitMap | FrozenBitMap) -> list[int]:
    """The sorted non-empty shards of a bitmap."""
    if not bitmap:
        return []
    shards: list[int] = []
    start = bitmap.min()
    last = bitmap.max()
    while True:
        shard = start >> SHARD_BITS
        shards.append(shard)
        nxt = (shard + 1) << SHARD_BITS
        if nxt > last:
            return shards
        try:
            start = bitmap.next_set_bit(nxt)
        except (ValueError, OverflowError):
            return shards


def split_by_shard(bitmap: BitMap | FrozenBitMap) -> Iterator[tuple[int, BitMap]]:
    """Yield ``(shard, part)`` for every non-empty shard, in order."""
    for shard in shards_of(bitmap):
        start, stop = shard_range(shard)
        part = BitMap()
        part.add_range(start, stop)
        part &= bitmap
        yield shard, part


def shard_part(bitmap: BitMap | FrozenBitMap, shard: int) -> BitMap:
    """The members of ``bitmap`` that fall in ``shard``."""
    start, stop = shard_range(shard)
    if not bitmap.range_cardinality(start, stop):
        return BitMap()
    part = BitMap()
    part.add_range(start, stop)
    part &= bitmap
    return part
