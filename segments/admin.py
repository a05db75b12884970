"""Operator tools: verify (and repair) segments, collect garbage, snapshot/restore, stats.

Everything here works through the ``Store`` interface, so it runs the same on
SQLite and on an Aerospike cluster.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

from pyroaring import BitMap

from . import bitmap as bm
from .catalog import Meta, decode_map, now_ms, shard_key
from .client import Segments
from .errors import Conflict, CorruptSegment, InvalidInput, SegmentNotFound, SegmentsError
from .names import check_name
from .records import STREAM_BATCH
from .storage.base import Record
from .writer import Change

#: Records not referenced by any segment are only collected when older than this,
#: so a writer between "write shards" and "commit meta" is never disturbed.
GC_GRACE_MS = 10 * 60 * 1000
SNAPSHOT_FORMAT = "segments-snapshot/1"

Progress = Callable[[str], None]


@dataclass
class SegmentReport:
    name: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    fixed: bool = False
    #: why the segment was not checked (it kept changing, or was deleted meanwhile)
    note: str = ""


#: how often a segment that changes while it is checked is checked again
VERIFY_ATTEMPTS = 5


def verify(segs: Segments, *, fix: bool = False, progress: Progress | None = None) -> list[SegmentReport]:
    """Check every segment's records against its metadata; with ``fix``, repair the damaged ones.

    Safe on a live store: each segment is checked at one version, and the
    check only counts when the segment's meta is unchanged afterwards (a
    writer publishes by swapping the meta before it deletes anything, so
    records missing under an unchanged meta are real damage). A segment that
    changes meanwhile is checked again, or reported with a note. A repair
    rewrites the segment from its readable shards, conditional on that same
    version: a write that lands first makes the repair check again.
    """
    reports: list[SegmentReport] = []
    names = segs.names()
    for i, name in enumerate(names, 1):
        if progress:
            progress(f"[{i}/{len(names)}] {name}")
        report = _verify_one(segs, name, fix)
        if report is not None:
            reports.append(report)
    return reports


def _verify_one(segs: Segments, name: str, fix: bool) -> SegmentReport | None:
    for _ in range(VERIFY_ATTEMPTS):
        try:
            meta = segs.reader.meta(name)
        except CorruptSegment as exc:
            return SegmentReport(name, False, [str(exc)])
        if meta is None:
            return None  # deleted meanwhile
        problems, members = _check(segs, meta)
        if not segs.reader.unchanged(meta):
            continue  # a writer published meanwhile: what was read may be torn
        report = SegmentReport(name, not problems, problems)
        if not problems or not fix:
            return report
        try:
            segs.writer.apply(name, Change(replace=members, expect_version=meta.version))
        except Conflict:
            continue  # written meanwhile: check the new version
        report.fixed = True
        return report
    return SegmentReport(name, True, note=f"changed during each of {VERIFY_ATTEMPTS} checks; not checked")


def _check(segs: Segments, meta: Meta) -> tuple[list[str], BitMap]:
    """Problems of one version of a segment, and the members its readable shards hold."""
    name = meta.name
    members = BitMap()
    if not meta.map_key:
        return ([f"metadata says {meta.cardinality} members but there is no shard map"]
                if meta.cardinality else []), members
    map_rec = segs.store.get_many(segs.sets.map, [meta.map_key])[0]
    if map_rec is None:
        return [f"shard map {meta.map_key} is missing"], members
    try:
        shard_map = decode_map(name, meta.map_key, map_rec)
    except CorruptSegment as exc:
        return [str(exc)], members
    problems: list[str] = []
    total = 0
    entries = shard_map.triples()
    for start in range(0, len(entries), STREAM_BATCH):
        chunk = entries[start : start + STREAM_BATCH]
        records = segs.store.get_many(segs.sets.shard, [shard_key(name, s, r) for s, _, r in chunk])
        for (shard, card, _), record in zip(chunk, records):
            if record is None:
                problems.append(f"shard {shard} record is missing")
                continue
            raw = record.bins.get("bm")
            try:
                part = bm.deserialize(raw if isinstance(raw, bytes) else b"", untrusted=False)
            except CorruptSegment as exc:
                problems.append(f"shard {shard}: {exc}")
                continue
            if len(part) != card:
                problems.append(f"shard {shard}: map says {card} members, record has {len(part)}")
            if part and (part.min() >> 16 != shard or part.max() >> 16 != shard):
                problems.append(f"shard {shard}: holds IDs outside its range")
                part &= BitMap(range(shard << 16, (shard + 1) << 16))
            total += len(part)
            members |= part
    if total != meta.cardinality:
        problems.append(f"cardinality is {meta.cardinality} in metadata, {total} in shards")
    return problems, members


def collect_garbage(segs: Segments, *, grace_ms: int = GC_GRACE_MS, dry_run: bool = False) -> dict[str, int]:
    """Delete shard and map records that no committed segment reaches (older than ``grace_ms``).

    Safe on a live store. Candidates are found first (records older than the
    grace period); only then is every segment's current version read (through
    the reader, which follows a writer that moves a version meanwhile), so a
    candidate that any version published before or during the scan reaches
    is kept. Records of a damaged segment are kept for ``verify --fix``.
    """
    cutoff = now_ms() - grace_ms
    candidates = {
        set_name: [key for key, record in segs.store.scan(set_name) if _written_ms(record) < cutoff]
        for set_name in (segs.sets.map, segs.sets.shard)
    }
    live: set[str] = set()
    damaged: set[str] = set()
    metas, broken = segs.reader.all_metas()
    damaged.update(broken)
    for name in metas:
        try:
            snap = segs.engine.snapshot([name])
        except SegmentNotFound:
            continue  # deleted meanwhile: its records are garbage
        except CorruptSegment:
            damaged.add(name)
            continue
        meta, shard_map = snap.metas[name], snap.maps[name]
        if meta.map_key:
            live.add(meta.map_key)
        live.update(shard_key(name, s, r) for s, _, r in shard_map.triples())
    counts = {}
    for set_name, keys in candidates.items():
        dead = [k for k in keys if k not in live and k.split("/", 1)[0] not in damaged]
        if dead and not dry_run:
            segs.store.delete_many(set_name, dead)
        counts[set_name] = len(dead)
    return counts


def _written_ms(record: Record) -> int:
    value = record.bins.get("at", 0)
    return value if isinstance(value, int) else 0


def write_snapshot(segs: Segments, out: IO[str], *, progress: Progress | None = None) -> int:
    """Write every segment to a portable JSON-lines file; returns the number of segments.

    Line 1 is a header; each further line is one segment with its members as
    base64 of the Roaring portable serialization.
    """
    names = segs.names()
    out.write(json.dumps({"format": SNAPSHOT_FORMAT, "segments": len(names), "taken_at_ms": now_ms()}) + "\n")
    for i, name in enumerate(names, 1):
        try:
            members, versions = segs.evaluate_detailed(name)
        except SegmentsError as exc:
            if progress:
                progress(f"skipped {name}: {exc}")
            continue
        line = {
            "segment": name,
            "version": versions[name],
            "cardinality": len(members),
            "roaring": base64.b64encode(bm.serialize(members)).decode(),
        }
        out.write(json.dumps(line) + "\n")
        if progress:
            progress(f"[{i}/{len(names)}] {name}: {len(members)} members")
    return len(names)


def read_snapshot(source: IO[str]) -> Iterator[tuple[str, BitMap]]:
    """Validate and yield ``(name, members)`` from a snapshot file."""
    header_line = source.readline()
    try:
        header = json.loads(header_line)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"not a segments snapshot: bad header ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != SNAPSHOT_FORMAT:
        raise InvalidInput(f"not a segments snapshot (expected format {SNAPSHOT_FORMAT!r})")
    for lineno, line in enumerate(source, 2):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            name = check_name(item["segment"])
            members = bm.deserialize(base64.b64decode(item["roaring"], validate=True))
            expected = int(item["cardinality"])
        except InvalidInput as exc:
            raise InvalidInput(f"snapshot line {lineno}: {exc}") from exc
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(f"snapshot line {lineno} is damaged: {exc}") from exc
        if len(members) != expected:
            raise InvalidInput(f"snapshot line {lineno} ({name}): {len(members)} members, header says {expected}")
        yield name, members


def restore_snapshot(segs: Segments, source: IO[str], *, progress: Progress | None = None) -> int:
    """Replace every segment in the snapshot (others are left alone); returns the count.

    The whole file is read and validated before anything is written: a bad
    line anywhere means nothing is written. (A store failure during the
    writes can still leave the segments before it restored: run it again.)
    """
    items = list(read_snapshot(source))
    for i, (name, members) in enumerate(items, 1):
        segs.replace(name, members)
        if progress:
            progress(f"[{i}/{len(items)}] {name}: {len(members)} members")
    return len(items)


def stats(segs: Segments) -> dict[str, object]:
    """Counts for capacity planning."""
    infos = segs.infos()
    shard_records = 0
    shard_bytes = 0
    for _, record in segs.store.scan(segs.sets.shard):
        shard_records += 1
        raw = record.bins.get("bm")
        shard_bytes += len(raw) if isinstance(raw, bytes) else 0
    return {
        "segments": len(infos),
        "total_memberships": sum(i.cardinality for i in infos),
        "largest": max((i.cardinality for i in infos), default=0),
        "shard_records": shard_records,
        "bitmap_bytes": shard_bytes,
        "map_records": sum(1 for _ in segs.store.scan(segs.sets.map)),
    }
