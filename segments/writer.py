"""The write path: copy-on-write shard records committed by a conditional meta update.

Every change writes new immutable shard records (only for the shards it
touches) and a new shard map, then swaps the segment's meta record with a
generation check. A concurrent writer that committed first makes the swap
fail; this writer then deletes what it wrote and starts over from the new
state, so no update is ever lost. After a successful swap the superseded
records are deleted (a crash here leaves garbage that ``admin verify``
removes, never a wrong answer).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace

from pyroaring import BitMap, FrozenBitMap

from . import bitmap as bm
from .cache import SegmentCache
from .catalog import EMPTY_MAP, Meta, Sets, check_free, encode_map, map_key, new_rid, now_ms, shard_key
from .errors import Conflict, CorruptSegment, SegmentNotFound
from .history import History, Point
from .records import RecordReader
from .storage.base import Store
from .types import BinValue
from .windows import BUCKET_SEP

_MAX_ATTEMPTS = 64

AnyBitMap = BitMap | FrozenBitMap


@dataclass(frozen=True)
class Change:
    """What to do to a segment: replace it, or remove then add (applied in that order)."""

    add: AnyBitMap | None = None
    remove: AnyBitMap | None = None
    replace: AnyBitMap | None = None
    #: create the segment if it does not exist (``remove`` on a missing segment is an error)
    create: bool = True
    #: ingest position: the change is skipped when ``position <= watermarks[source]``
    source: str | None = None
    position: int | None = None
    #: apply only to this version of the segment (``Conflict`` otherwise, not retried)
    expect_version: int | None = None


@dataclass(frozen=True)
class WriteResult:
    meta: Meta
    applied: bool


def _op(change: Change) -> str:
    if change.replace is not None:
        return "replace"
    if change.add and change.remove:
        return "apply"
    return "remove" if change.remove else "add"


def _recorded(meta: Meta, change: Change) -> bool:
    """The segment already recorded this change's ingest position (a replay)."""
    return (
        change.source is not None
        and change.position is not None
        and change.position <= meta.watermarks.get(change.source, -1)
    )


@dataclass(frozen=True)
class _Base:
    """What a change is applied to: one consistent version of the segment."""

    meta: Meta | None
    entries: dict[int, tuple[int, int]]  # shard -> (cardinality, rid)
    parts: dict[int, BitMap | None]  # the new content of every shard the change rewrites
    added: int | None = 0
    removed: int | None = 0
    #: the old version's shard map is gone (a replace repairs the segment)
    lost_map: bool = False


class Writer:
    def __init__(self, store: Store, sets: Sets, reader: RecordReader, cache: SegmentCache) -> None:
        self.store = store
        self.sets = sets
        self.reader = reader
        self.cache = cache
        self.history = History(store, sets)

    def apply(self, name: str, change: Change) -> WriteResult:
        for attempt in range(_MAX_ATTEMPTS):
            try:
                return self._attempt(name, change)
            except Conflict:
                if change.expect_version is not None:
                    raise
                time.sleep(random.uniform(0, min(0.2, 0.002 * 2**attempt)))
        raise Conflict(f"segment {name!r} is changing too fast: gave up after {_MAX_ATTEMPTS} attempts")

    def _read(self, name: str, change: Change) -> _Base:
        meta = self.reader.meta(name)
        if meta is None:
            return _Base(None, {}, *self._new_parts(name, change, None, {}))
        if _recorded(meta, change) or (
            change.expect_version is not None and meta.version != change.expect_version
        ):
            return _Base(meta, {}, {})  # nothing will be written: read nothing more
        try:
            old_map = self.reader.maps([meta])[name]
        except CorruptSegment:
            if change.replace is None:
                raise  # a delta would build on records that are gone
            # A replace needs nothing of the old version (its map only names the records to
            # delete afterwards): it repairs the segment; what the lost map named is left to GC.
            return replace(_Base(meta, {}, *self._new_parts(name, change, meta, {})), lost_map=True)
        entries = {s: (c, r) for s, c, r in old_map.triples()}
        return _Base(meta, entries, *self._new_parts(name, change, meta, entries))

    def _attempt(self, name: str, change: Change) -> WriteResult:
        base = self.reader.consistent(lambda: self._read(name, change))
        meta = base.meta
        if change.expect_version is not None and (meta is None or meta.version != change.expect_version):
            found = "deleted" if meta is None else f"at version {meta.version}"
            raise Conflict(f"segment {name!r} is {found}, not at version {change.expect_version}")
        if meta is None and not change.create:
            raise SegmentNotFound([name])
        if meta is None and BUCKET_SEP not in name:
            check_free(self.store, self.sets, name, kind="segment")
        if meta is not None and _recorded(meta, change):
            return WriteResult(meta, False)
        old_entries = base.entries
        new_parts = base.parts
        entries = dict(old_entries) if change.replace is None else {}
        new_records: list[tuple[str, dict[str, BinValue]]] = []
        for shard, part in new_parts.items():
            if part is None or not part:
                entries.pop(shard, None)
                continue
            rid = new_rid()
            card = len(part)
            entries[shard] = (card, rid)
            new_records.append(
                (shard_key(name, shard, rid), {"bm": bm.serialize(part), "card": card, "at": now_ms()})
            )
        changed = (
            change.replace is not None
            or bool(new_records)
            or entries.keys() != old_entries.keys()
            or meta is None
        )
        if not changed and change.source is None:
            return WriteResult(meta, False)  # type: ignore[arg-type]
        now = now_ms()
        watermarks = dict(meta.watermarks) if meta is not None else {}
        if change.source is not None and change.position is not None:
            watermarks[change.source] = change.position
        new_map_key = ""
        if entries:
            new_map_key = map_key(name, new_rid())
        new_meta = Meta(
            name=name,
            cardinality=sum(c for c, _ in entries.values()),
            version=(meta.version if meta is not None else 0) + 1,
            created_ms=meta.created_ms if meta is not None else now,
            updated_ms=now,
            map_key=new_map_key,
            watermarks=watermarks,
        )
        unchanged_map = meta is not None and not base.lost_map and entries == old_entries
        if unchanged_map:
            new_meta = replace(new_meta, map_key=meta.map_key)  # type: ignore[union-attr]
        self.store.put_many(self.sets.shard, new_records)
        if new_meta.map_key and not unchanged_map:
            self.store.put(self.sets.map, new_map_key, {"shards": encode_map(entries), "at": now_ms()})
        try:
            generation = self.store.put(
                self.sets.meta, name, new_meta.bins(), generation=meta.generation if meta else 0
            )
        except Conflict:
            # Definitely not committed: what this attempt wrote is unreachable.
            # (On any other error the write may have landed, so nothing is deleted.)
            self._discard(
                [k for k, _ in new_records],
                [new_map_key] if new_map_key and not unchanged_map else [],
            )
            raise
        # Committed: the superseded records are garbage now.
        stale_shards = [
            shard_key(name, s, r) for s, (_, r) in old_entries.items() if entries.get(s, (0, -1))[1] != r
        ]
        stale_maps = [meta.map_key] if meta is not None and meta.map_key and not unchanged_map else []
        self._discard(stale_shards, stale_maps)
        self.history.record(name, Point(
            new_meta.version, new_meta.updated_ms, new_meta.cardinality, _op(change), base.added, base.removed,
        ))
        return WriteResult(replace(new_meta, generation=generation), True)

    def _new_parts(
        self,
        name: str,
        change: Change,
        meta: Meta | None,
        old_entries: dict[int, tuple[int, int]],
    ) -> tuple[dict[int, BitMap | None], int | None, int | None]:
        """The new content of every shard the change rewrites, and how many IDs it adds and removes
        (``None`` for a replace, which does not read the shards it overwrites)."""
        if change.replace is not None:
            return dict(bm.split_by_shard(change.replace)), None, None
        add = change.add if change.add is not None else BitMap()
        remove = change.remove if change.remove is not None else BitMap()
        touched = set(bm.shards_of(add)) | (set(bm.shards_of(remove)) & set(old_entries))
        if not touched:
            return {}, 0, 0
        old_parts: dict[int, BitMap] = {}
        existing = sorted(touched & set(old_entries))
        if existing and meta is not None:
            wanted = [(name, s, old_entries[s][1]) for s in existing]
            old_parts = dict(zip(existing, self.reader.shards({name: meta}, wanted)))
        out: dict[int, BitMap | None] = {}
        added = removed = 0
        for shard in sorted(touched):
            old = old_parts.get(shard, BitMap())
            new = old - bm.shard_part(remove, shard) if remove else old.copy()
            new |= bm.shard_part(add, shard)
            if new != old:
                out[shard] = new
                added += new.difference_cardinality(old)
                removed += old.difference_cardinality(new)
        return out, added, removed

    def _discard(self, shard_keys: list[str], map_keys: list[str]) -> None:
        for set_name, keys in ((self.sets.shard, shard_keys), (self.sets.map, map_keys)):
            if keys:
                try:
                    self.store.delete_many(set_name, keys)
                except Exception:  # noqa: BLE001 - garbage collection is best effort
                    pass

    def delete(self, name: str) -> None:
        """Delete a segment, also a damaged one (whose unreadable records are left to GC)."""
        for attempt in range(_MAX_ATTEMPTS):
            try:
                snap = self.reader.consistent(lambda: self.reader.snapshot([name]))
                meta, old_map = snap.metas[name], snap.maps[name]
            except CorruptSegment:
                try:
                    found = self.reader.meta(name)
                except CorruptSegment:  # the meta itself is unreadable: remove it as it is
                    self.store.delete(self.sets.meta, name)
                    self.cache.drop(name)
                    return
                if found is None:
                    raise SegmentNotFound([name]) from None
                meta, old_map = found, EMPTY_MAP
            try:
                self.store.delete(self.sets.meta, name, generation=meta.generation)
            except Conflict:
                time.sleep(random.uniform(0, min(0.2, 0.002 * 2**attempt)))
                continue
            self._discard(
                [shard_key(name, s, r) for s, _, r in old_map.triples()],
                [meta.map_key] if meta.map_key else [],
            )
            self.cache.drop(name)
            self.history.delete(name)
            return
        raise Conflict(f"segment {name!r} is changing too fast to delete")
