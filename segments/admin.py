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
from .catalog import decode_map, decode_meta, now_ms, shard_key
from .client import Segments
from .errors import CorruptSegment, InvalidInput, SegmentsError

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


def verify(segs: Segments, *, fix: bool = False, progress: Progress | None = None) -> list[SegmentReport]:
    """Recompute every segment's cardinality from its shards and compare with its metadata.

    With ``fix``, drift is repaired by rewriting the segment from the shards
    that are readable (a new version).
    """
    reports: list[SegmentReport] = []
    names = segs.names()
    for i, name in enumerate(names, 1):
        if progress:
            progress(f"[{i}/{len(names)}] {name}")
        report = SegmentReport(name, True)
        meta_rec = segs.store.get_many(segs.sets.meta, [name])[0]
        if meta_rec is None:
            continue  # deleted meanwhile
        try:
            meta = decode_meta(name, meta_rec)
        except CorruptSegment as exc:
            reports.append(SegmentReport(name, False, [str(exc)]))
            continue
        members = BitMap()
        if meta.map_key:
            map_rec = segs.store.get_many(segs.sets.map, [meta.map_key])[0]
            if map_rec is None:
                report.problems.append(f"shard map {meta.map_key} is missing")
            else:
                shard_map = decode_map(meta.map_key, map_rec)
                entries = list(
                    zip(
                        shard_map.entries["shard"].tolist(),
                        shard_map.entries["card"].tolist(),
                        shard_map.entries["rid"].tolist(),
                    )
                )
                keys = [shard_key(name, s, r) for s, _, r in entries]
                records = segs.store.get_many(segs.sets.shard, keys) if keys else []
                total = 0
                for (shard, card, _), record in zip(entries, records):
                    if record is None:
                        report.problems.append(f"shard {shard} record is missing")
                        continue
                    raw = record.bins.get("bm")
                    try:
                        part = bm.deserialize(raw if isinstance(raw, bytes) else b"", untrusted=False)
                    except CorruptSegment as exc:
                        report.problems.append(f"shard {shard}: {exc}")
                        continue
                    if len(part) != card:
                        report.problems.append(f"shard {shard}: map says {card} members, record has {len(part)}")
                    if part and (part.min() >> 16 != shard or part.max() >> 16 != shard):
                        report.problems.append(f"shard {shard}: holds IDs outside its range")
                    total += len(part)
                    members |= part
                if total != meta.cardinality:
                    report.problems.append(f"cardinality is {meta.cardinality} in metadata, {total} in shards")
        elif meta.cardinality:
            report.problems.append(f"metadata says {meta.cardinality} members but there is no shard map")
        report.ok = not report.problems
        if fix and not report.ok:
            segs.replace(name, members)
            report.fixed = True
        reports.append(report)
    return reports


def collect_garbage(segs: Segments, *, grace_ms: int = GC_GRACE_MS, dry_run: bool = False) -> dict[str, int]:
    """Delete shard and map records no committed segment refers to (older than ``grace_ms``)."""
    live_maps: set[str] = set()
    live_shards: set[str] = set()
    for name, record in segs.store.scan(segs.sets.meta):
        meta = decode_meta(name, record)
        if not meta.map_key:
            continue
        live_maps.add(meta.map_key)
        map_rec = segs.store.get_many(segs.sets.map, [meta.map_key])[0]
        if map_rec is not None:
            shard_map = decode_map(meta.map_key, map_rec)
            live_shards.update(
                shard_key(name, s, r)
                for s, r in zip(shard_map.entries["shard"].tolist(), shard_map.entries["rid"].tolist())
            )
    cutoff = now_ms() - grace_ms
    counts = {}
    for set_name, live in ((segs.sets.map, live_maps), (segs.sets.shard, live_shards)):
        dead = [
            key
            for key, record in segs.store.scan(set_name)
            if key not in live and int(record.bins.get("at", 0) or 0) < cutoff
        ]
        if dead and not dry_run:
            segs.store.delete_many(set_name, dead)
        counts[set_name] = len(dead)
    return counts


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
            name = item["segment"]
            members = bm.deserialize(base64.b64decode(item["roaring"], validate=True))
            expected = int(item["cardinality"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"snapshot line {lineno} is damaged: {exc}") from exc
        if len(members) != expected:
            raise InvalidInput(f"snapshot line {lineno} ({name}): {len(members)} members, header says {expected}")
        yield name, members


def restore_snapshot(segs: Segments, source: IO[str], *, progress: Progress | None = None) -> int:
    """Replace every segment in the snapshot (others are left alone); returns the count.

    The whole file is validated before anything is written.
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
