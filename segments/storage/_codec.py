"""A compact, self-describing encoding of a record's bins for the SQLite store.

Layout: ``u16 count`` then per bin ``u8 name_len, name, u8 type, u32 len, value``
with type 0 = bytes, 1 = int (signed 64-bit), 2 = str (UTF-8).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from ..errors import CorruptSegment
from ..types import BinValue

_HEAD = struct.Struct("<H")
_BIN = struct.Struct("<BI")
_INT = struct.Struct("<q")


def encode_bins(bins: Mapping[str, BinValue]) -> bytes:
    parts = [_HEAD.pack(len(bins))]
    for name, value in bins.items():
        raw_name = name.encode()
        if isinstance(value, bool) or not isinstance(value, (bytes, bytearray, int, str)):
            raise TypeError(f"bin {name!r}: unsupported value type {type(value).__name__}")
        if isinstance(value, int):
            kind, raw = 1, _INT.pack(value)
        elif isinstance(value, str):
            kind, raw = 2, value.encode()
        else:
            kind, raw = 0, bytes(value)
        parts += [bytes([len(raw_name)]), raw_name, _BIN.pack(kind, len(raw)), raw]
    return b"".join(parts)


def decode_bins(data: bytes) -> dict[str, BinValue]:
    try:
        (count,) = _HEAD.unpack_from(data, 0)
        pos = _HEAD.size
        out: dict[str, BinValue] = {}
        for _ in range(count):
            name_len = data[pos]
            name = data[pos + 1 : pos + 1 + name_len].decode()
            pos += 1 + name_len
            kind, size = _BIN.unpack_from(data, pos)
            pos += _BIN.size
            raw = data[pos : pos + size]
            if len(raw) != size:
                raise ValueError("truncated bin")
            pos += size
            if kind == 0:
                out[name] = bytes(raw)
            elif kind == 1:
                out[name] = _INT.unpack(raw)[0]
            elif kind == 2:
                out[name] = raw.decode()
            else:
                raise ValueError(f"unknown bin type {kind}")
        return out
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise CorruptSegment(f"stored record failed to decode: {exc}") from exc
