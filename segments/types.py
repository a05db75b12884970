"""Type aliases shared across the library."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

from pyroaring import BitMap, FrozenBitMap

#: A segment name: 1-128 characters of ``[A-Za-z0-9_.:]``.
SegmentId = str
#: An unsigned 32-bit user ID.
UserId = int
#: Anything accepted where a set of user IDs is expected.
UserSet: TypeAlias = Iterable[int] | BitMap | FrozenBitMap | bytes | bytearray | memoryview
#: A value stored in a record bin.
BinValue: TypeAlias = bytes | int | str
