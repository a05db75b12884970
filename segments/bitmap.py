"""The one module that owns pyroaring: encoding, validation and shard splitting.

User IDs are unsigned 32-bit integers, so ``BitMap`` (32-bit roaring) is the
bitmap type. The at-rest and on-the-wire encoding is the Roaring portable
serialization, readable by the Java, Go and C Roaring libraries.
"""

from __future__ import annotations

import array
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
    """Decode portable roaring bytes, validating them.

    Raises ``InvalidBitmap`` for caller-supplied bytes (``untrusted=True``) and
    ``CorruptSegment`` for bytes read back from the store.
    """
    try:
        return BitMap.deserialize(bytes(data))
    except Exception as exc:  # pyroaring raises ValueError, IndexError, ... on bad input
        if untrusted:
            raise InvalidBitmap(
                f"not a valid portable roaring bitmap ({len(data)} bytes): {exc}"
            ) from exc
        raise CorruptSegment(f"stored bitmap failed validation: {exc}") from exc


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
