"""How a segment is laid out in the store.

A segment named ``n`` is three kinds of record:

* ``meta`` set, key ``n``: small and mutable, the commit point of every change.
  Bins: ``card``, ``ver``, ``created``/``updated`` (ms since the epoch), ``map``
  (key of the current shard map, ``""`` when the segment is empty) and ``src``
  (JSON watermarks of ingest sources).
* ``map`` set, key ``n/<rid>``: immutable. Bin ``shards``: a packed array of
  ``(shard u16, cardinality u32, rid u64)`` sorted by shard, one entry per
  non-empty shard.
* ``shard`` set, key ``n/<shard>/<rid>``: immutable. Bins ``bm`` (portable
  roaring bytes of the shard's members) and ``card``.

Writers create new immutable records under fresh random ids (``rid``), then
swap the meta record with a generation check; readers follow meta -> map ->
shards and so always see one committed version. Superseded records are
deleted after the swap.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from .errors import CorruptSegment, NameTaken
from .storage.base import Record, Store
from .types import BinValue

SHARD_ENTRY = np.dtype([("shard", "<u2"), ("card", "<u4"), ("rid", "<u8")])


@dataclass(frozen=True)
class Sets:
    """The three set names, optionally prefixed (several deployments in one namespace)."""

    meta: str = "segmeta"
    map: str = "segmap"
    shard: str = "segshard"
    prefix: str = ""

    @classmethod
    def with_prefix(cls, prefix: str) -> Sets:
        return cls(f"{prefix}segmeta", f"{prefix}segmap", f"{prefix}segshard", prefix)

    def named(self, base: str) -> str:
        """A further set of this deployment (e.g. ingest staging), with the same prefix."""
        return f"{self.prefix}{base}"

    @property
    def audience(self) -> str:
        return self.named("audience")

    @property
    def window(self) -> str:
        return self.named("segwin")

    @property
    def history(self) -> str:
        return self.named("seghist")


#: the kinds of named thing, and the set that holds each; a name is at most one of them
KINDS = {"segment": "meta", "audience": "audience", "windowed segment": "window"}


def holder(store: Store, sets: Sets, name: str, *, besides: str) -> str | None:
    """Which kind other than ``besides`` already holds ``name`` (one read per other kind)."""
    for kind, attribute in KINDS.items():
        if kind != besides and store.get_many(getattr(sets, attribute), [name])[0] is not None:
            return kind
    return None


def check_free(store: Store, sets: Sets, name: str, *, kind: str) -> None:
    """``NameTaken`` unless no other kind of thing holds ``name``: a name means one thing."""
    other = holder(store, sets, name, besides=kind)
    if other is not None:
        raise NameTaken(f"{name!r} is {_article(other)} {other}; {_article(kind)} {kind} needs a name of its own")


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


@dataclass(frozen=True)
class SegmentInfo:
    """What callers see of a segment."""

    name: str
    cardinality: int
    version: int
    updated_at: datetime
    created_at: datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "cardinality": self.cardinality,
            "version": self.version,
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class Meta:
    """The decoded meta record of one segment."""

    name: str
    cardinality: int
    version: int
    created_ms: int
    updated_ms: int
    map_key: str
    watermarks: dict[str, int] = field(default_factory=dict)
    generation: int = 0

    def info(self) -> SegmentInfo:
        return SegmentInfo(
            self.name,
            self.cardinality,
            self.version,
            _to_datetime(self.updated_ms),
            _to_datetime(self.created_ms),
        )

    def bins(self) -> dict[str, BinValue]:
        return {
            "name": self.name,
            "card": self.cardinality,
            "ver": self.version,
            "created": self.created_ms,
            "updated": self.updated_ms,
            "map": self.map_key,
            "src": json.dumps(self.watermarks, separators=(",", ":")) if self.watermarks else "",
        }


def _to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_rid() -> int:
    """A fresh random 63-bit record id."""
    return secrets.randbits(63) or 1


def decode_meta(name: str, record: Record) -> Meta:
    bins = record.bins
    try:
        src = bins.get("src") or ""
        watermarks = json.loads(src) if isinstance(src, (str, bytes)) and src else {}
        return Meta(
            name=name,
            cardinality=int(bins["card"]),
            version=int(bins["ver"]),
            created_ms=int(bins["created"]),
            updated_ms=int(bins["updated"]),
            map_key=str(bins.get("map") or ""),
            watermarks={str(k): int(v) for k, v in watermarks.items()},
            generation=record.generation,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptSegment(f"metadata of segment {name!r} is damaged: {exc}", segment=name) from exc


@dataclass(frozen=True)
class ShardMap:
    """The immutable list of a version's shards: ids, cardinalities and record ids."""

    key: str
    entries: np.ndarray  # dtype SHARD_ENTRY, sorted by shard

    @property
    def mask(self) -> int:
        """The shards as an int bitmask (bit ``s`` for shard ``s``), memoised: ~1 bit per shard id."""
        cached: int | None = getattr(self, "_mask", None)
        if cached is None:
            cached = mask_of(self.entries["shard"])
            object.__setattr__(self, "_mask", cached)
        return cached

    @property
    def nbytes(self) -> int:
        """What the map costs in memory (for the cache's byte budget)."""
        return int(self.entries.nbytes) + len(self.key) + 200

    def has(self, shard: int) -> bool:
        return bool((self.mask >> shard) & 1)

    def rids(self) -> dict[int, int]:
        """shard -> record id (built on each call: for slow paths)."""
        return dict(zip(self.entries["shard"].tolist(), self.entries["rid"].tolist()))

    def triples(self) -> list[tuple[int, int, int]]:
        """``(shard, cardinality, rid)`` of every shard, in shard order."""
        e = self.entries
        return list(zip(e["shard"].tolist(), e["card"].tolist(), e["rid"].tolist()))


def mask_of(shards: Iterable[int] | np.ndarray) -> int:
    """An int bitmask with bit ``s`` set for every shard ``s``."""
    arr = shards if isinstance(shards, np.ndarray) else np.fromiter(shards, dtype=np.int64)
    if not len(arr):
        return 0
    bits = np.zeros(int(arr.max()) + 1, dtype=np.uint8)
    bits[arr] = 1
    return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")


def _bits(mask: int) -> np.ndarray:
    raw = np.frombuffer(mask.to_bytes((mask.bit_length() + 7) // 8, "little"), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")


def shards_in(mask: int) -> list[int]:
    """The shards of a bitmask, ascending."""
    return np.flatnonzero(_bits(mask)).tolist() if mask else []


def runs_in(mask: int) -> list[tuple[int, int]]:
    """``[start, stop)`` shard ranges of the set bits of ``mask``."""
    if not mask:
        return []
    edges = np.flatnonzero(np.diff(np.concatenate(([0], _bits(mask).astype(np.int8), [0]))))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


EMPTY_MAP = ShardMap("", np.zeros(0, dtype=SHARD_ENTRY))


def encode_map(entries: dict[int, tuple[int, int]]) -> bytes:
    """``{shard: (card, rid)}`` → packed bytes sorted by shard."""
    arr = np.zeros(len(entries), dtype=SHARD_ENTRY)
    for i, shard in enumerate(sorted(entries)):
        card, rid = entries[shard]
        arr[i] = (shard, card, rid)
    return arr.tobytes()


def decode_map(name: str, key: str, record: Record) -> ShardMap:
    raw = record.bins.get("shards")
    if not isinstance(raw, bytes) or len(raw) % SHARD_ENTRY.itemsize:
        raise CorruptSegment(f"segment {name!r}: its shard map {key!r} is damaged", segment=name)
    arr = np.frombuffer(raw, dtype=SHARD_ENTRY)
    if len(arr) > 1 and not bool(np.all(arr["shard"][1:] > arr["shard"][:-1])):
        raise CorruptSegment(f"segment {name!r}: its shard map {key!r} is not sorted by shard", segment=name)
    return ShardMap(key, arr)


def map_key(name: str, rid: int) -> str:
    return f"{name}/{rid:x}"


def shard_key(name: str, shard: int, rid: int) -> str:
    return f"{name}/{shard}/{rid:x}"
