"""``Segments``: the public face of the library."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from pyroaring import BitMap

from . import bitmap as bm
from .audiences import Audience, Audiences
from .cache import SegmentCache
from .catalog import Meta, SegmentInfo, Sets, now_ms
from .engine import Engine, Insights, ReachResult
from .errors import BadTime, CorruptSegment, InvalidInput, NameTaken, SegmentNotFound, UniverseNotFound
from .expressions import Expr, Not, Ref, refs, uses_complement
from .expressions import to_expr as _parse_any
from .expressions.ast import Window
from .history import Point
from .keys import KeyTable
from .names import check_name
from .records import RecordReader, Snapshot
from .storage import Store, open_store
from .types import UserSet
from .windows import BUCKET_SEP, WindowConfig, Windows, has_windows, parse_time, substitute
from .writer import Change, Writer, WriteResult

log = logging.getLogger("segments")
_T = TypeVar("_T")

DEFAULT_UNIVERSE = "all"


@dataclass(frozen=True)
class Lookup:
    """The segments a user is in, and how old (seconds) the metadata behind the answer was."""

    segments: list[str]
    staleness: float


@dataclass(frozen=True)
class Overlap:
    """Sizes of segments and the sizes of every pairwise intersection."""

    names: list[str]
    sizes: list[int]
    matrix: list[list[int]]
    versions: dict[str, int]


class Segments:
    """Segments in a store, with a cache of hot bitmaps. Thread-safe.

    Use ``connect(url)`` to create one.
    """

    def __init__(
        self,
        store: Store,
        *,
        universe: str = DEFAULT_UNIVERSE,
        set_prefix: str = "",
        cache_bytes: int = 4 << 30,
        lookup_staleness: float = 0.25,
        query_staleness: float = 0.0,
    ) -> None:
        self.store = store
        self.universe = check_name(universe)
        self.sets = Sets.with_prefix(set_prefix) if set_prefix else Sets()
        self.cache = SegmentCache(cache_bytes)
        self.reader = RecordReader(store, self.sets, self.cache)
        self.engine = Engine(self.reader, self.cache, self.universe)
        self.writer = Writer(store, self.sets, self.reader, self.cache)
        #: string user keys <-> IDs (:mod:`.keys`); its cache is charged to ``cache_bytes``
        self.keys = KeyTable(store, self.sets, self.cache)
        self.audiences = Audiences(store, self.sets, self.reader, self.universe)
        self.windows = Windows(store, self.sets, self.reader)
        self.lookup_staleness = lookup_staleness
        self.query_staleness = query_staleness
        self._lookup: tuple[float, Snapshot] | None = None
        #: metadata scans made to keep lookups fresh (the cost every process pays for them)
        self.lookup_refreshes = 0
        self.reader.on_moved.append(self._forget_snapshot)
        if query_staleness > 0:
            self.engine.metadata = self._query_metadata
        self._audience_list: tuple[float, list[Audience]] | None = None

    # -- writes -----------------------------------------------------------

    def replace(self, name: str, ids: UserSet, *, at: object | None = None) -> SegmentInfo:
        """Set a segment's members to exactly ``ids`` (creating it if needed).

        On a windowed segment this replaces one bucket: the one of ``at`` (default now).
        """
        check_name(name)
        return self._apply(name, Change(replace=bm.to_bitmap(ids)), at).meta.info()

    def add(self, name: str, ids: UserSet, *, at: object | None = None) -> SegmentInfo:
        """Add members, creating the segment if it does not exist (windowed: to the bucket of ``at``)."""
        check_name(name)
        return self._apply(name, Change(add=bm.to_bitmap(ids)), at).meta.info()

    def remove(self, name: str, ids: UserSet, *, at: object | None = None) -> SegmentInfo:
        """Remove members; ``SegmentNotFound`` if the segment does not exist (windowed: from one bucket)."""
        check_name(name)
        return self._apply(name, Change(remove=bm.to_bitmap(ids), create=False), at).meta.info()

    def apply(
        self,
        name: str,
        *,
        add: UserSet | None = None,
        remove: UserSet | None = None,
        source: str | None = None,
        position: int | None = None,
        create: bool = True,
        at: object | None = None,
    ) -> WriteResult:
        """Remove then add in one atomic change.

        With ``source`` and ``position`` the change is idempotent: it is skipped
        when the segment already recorded ``position`` (or later) for ``source``.
        ``at`` picks the bucket of a windowed segment (``BadTime`` on a plain one).
        """
        check_name(name)
        change = Change(
            add=None if add is None else bm.to_bitmap(add),
            remove=None if remove is None else bm.to_bitmap(remove),
            create=create,
            source=source,
            position=position,
        )
        return self._apply(name, change, at)

    def replace_from(
        self, name: str, ids: UserSet, *, source: str | None = None, position: int | None = None,
        at: object | None = None,
    ) -> WriteResult:
        """``replace`` with an idempotency watermark (see ``apply``)."""
        check_name(name)
        return self._apply(name, Change(replace=bm.to_bitmap(ids), source=source, position=position), at)

    # -- writes by string user key (see :mod:`.keys`) -------------------------
    #
    # The ID methods above stay as they are; these translate first. Keys written here get IDs
    # (once, for ever); a key never written is in no segment.

    def replace_keys(self, name: str, keys: Iterable[str]) -> SegmentInfo:
        """``replace`` with string user keys; keys seen for the first time get new IDs."""
        check_name(name)
        return self.replace(name, self.keys.create(keys))

    def add_keys(self, name: str, keys: Iterable[str]) -> SegmentInfo:
        """``add`` with string user keys; keys seen for the first time get new IDs."""
        check_name(name)
        return self.add(name, self.keys.create(keys))

    def remove_keys(self, name: str, keys: Iterable[str]) -> SegmentInfo:
        """``remove`` with string user keys; a key that has no ID is in no segment and is skipped
        (nothing is allocated). ``SegmentNotFound`` if the segment does not exist."""
        check_name(name)
        return self.remove(name, [uid for uid in self.keys.translate(keys) if uid is not None])

    def _apply(self, name: str, change: Change, at: object | None = None) -> WriteResult:
        if BUCKET_SEP in name:
            raise InvalidInput(f"invalid segment name {name!r}: '::' is reserved for time buckets")
        if at is None:
            try:
                result = self.writer.apply(name, change)
            except (NameTaken, SegmentNotFound):  # a windowed name: not a segment of its own
                config = self.windows.config(name, fresh=True)
                if config is None:
                    raise
                result = self._apply_windowed(config, change, None)
        else:
            config = self.windows.config(name)
            if config is None:
                if self.reader.meta(name) is None:
                    config = self.windows.config(name, fresh=True)  # created meanwhile elsewhere?
                if config is None:
                    raise BadTime(f"segment {name!r} is not windowed: a write to it cannot say when (at)")
            result = self._apply_windowed(config, change, at)
        self._lookup = None
        return result

    def _apply_windowed(self, config: WindowConfig, change: Change, at: object | None) -> WriteResult:
        """Write one bucket: create it (empty) if new, register it, write it; then expire old buckets."""
        bucket = self.windows.bucket_for(config, at)
        segment = config.segment(bucket)
        if bucket not in config.buckets:
            if self.reader.meta(segment) is None:
                if not change.create:
                    self.windows.expire_now(config, self._drop_bucket)
                    return WriteResult(self._empty_meta(segment), False)
                self.writer.apply(segment, Change(replace=bm.BitMap()))
            config = self.windows.register(config, bucket)
        result = self.writer.apply(segment, change)
        self.windows.expire_now(config, self._drop_bucket)
        return result

    def _drop_bucket(self, segment: str) -> None:
        try:
            self.writer.delete(segment)
        except SegmentNotFound:
            pass

    @staticmethod
    def _empty_meta(name: str) -> Meta:
        now = now_ms()
        return Meta(name, 0, 0, now, now, "")

    # -- windowed segments --------------------------------------------------

    def create_windowed(self, name: str, *, granularity: str = "day", retention: int = 400) -> WindowConfig:
        """A segment whose members are kept per UTC ``granularity`` bucket for ``retention`` buckets.

        Query it over a window (``name[7d]``, ``name[2026-11-01..2026-11-30]``) or whole
        (every retained bucket). See :mod:`.windows`.
        """
        config = self.windows.create(name, granularity=granularity, retention=retention)
        if self.reader.meta(config.empty_segment) is None:
            self.writer.apply(config.empty_segment, Change(replace=bm.BitMap()))
        return config

    def windowed(self) -> list[WindowConfig]:
        """Every windowed segment's config."""
        return self.windows.all()

    def expire(self, *, now: datetime | None = None) -> dict[str, list[str]]:
        """Delete every bucket past its segment's retention (idempotent, safe on a live store).

        Also deletes bucket segments that are not registered and past the
        retention (left by a writer that raced an earlier expiry).
        """
        done: dict[str, list[str]] = {}
        configs = {c.name: c for c in self.windows.all()}
        for config in configs.values():
            dropped = self.windows.expire_now(config, self._drop_bucket, now=now)
            if dropped:
                done[config.name] = dropped
        for name in self.names(buckets=True):
            parent, sep, bucket = name.partition(BUCKET_SEP)
            owner = configs.get(parent)
            if not sep or owner is None or bucket == "empty" or bucket in owner.buckets:
                continue
            if bucket < owner.bucket_of(owner.oldest_kept(now or datetime.now(UTC))):
                self._drop_bucket(name)
                done.setdefault(parent, []).append(bucket)
        return done

    def delete_windowed(self, name: str, *, cascade: bool = False) -> list[str]:
        """Delete a windowed segment and all its buckets."""
        doomed = self.audiences.check_deletable(name, cascade)
        config = self.windows.delete(name)
        for bucket in config.buckets:
            self._drop_bucket(config.segment(bucket))
        self._drop_bucket(config.empty_segment)
        for audience in doomed:
            self.audiences.store.delete(self.audiences.set, audience)
        return [name, *doomed]

    def _resolve_windows(self, expr: Expr, as_of: datetime | None) -> Expr:
        names = sorted(set(refs(expr)))
        configs = self.windows.configs(names)
        when = as_of or datetime.now(UTC)
        replace_map: dict[Ref, Expr] = {}
        for ref in _refs(expr):
            config = configs.get(ref.name)
            if config is None:
                if ref.window is not None:
                    if self.reader.meta(ref.name) is None:
                        raise SegmentNotFound([ref.name])
                    raise BadTime(f"segment {ref.name!r} is not windowed: [{ref.window}] cannot apply to it")
                continue
            replace_map[ref] = self.windows.resolve(config, ref.window, when)
        return substitute(expr, replace_map) if replace_map else expr

    def delete(self, name: str, *, cascade: bool = False) -> list[str]:
        """Delete a segment; ``SegmentNotFound`` if it does not exist.

        ``InUse`` if audiences use it, unless ``cascade``, which deletes them
        too. Returns the names deleted (the segment first).
        """
        check_name(name)
        if self.reader.meta(name) is None:
            if self.windows.config(name, fresh=True) is not None:
                return self.delete_windowed(name, cascade=cascade)
            raise SegmentNotFound([name])
        doomed = self.audiences.check_deletable(name, cascade)
        self.writer.delete(name)
        for audience in doomed:
            self.audiences.store.delete(self.audiences.set, audience)
        self._lookup = None
        return [name, *doomed]

    # -- audiences ----------------------------------------------------------

    def define_audience(self, name: str, expr: str | dict[str, object] | Expr, description: str = "") -> Audience:
        """Store a live named expression (a new definition version when it exists). See :mod:`.audiences`."""
        audience = self.audiences.define(name, expr, description)
        self._audience_list = None
        return audience

    def audience(self, name: str) -> Audience:
        return self.audiences.get(name)

    def list_audiences(self) -> list[Audience]:
        return self.audiences.all()

    def delete_audience(self, name: str, *, cascade: bool = False) -> list[str]:
        """Delete an audience; ``InUse`` if other audiences use it, unless ``cascade``."""
        deleted = self.audiences.delete(name, cascade=cascade)
        self._audience_list = None
        return deleted

    def _resolve(
        self, expr: str | dict[str, object] | Expr, as_of: datetime | None = None
    ) -> tuple[Expr, dict[str, int]]:
        """The expression over stored segments only: audiences expanded, windows turned into buckets."""
        expanded, used = self.audiences.expand(to_expr(expr))
        return self._resolve_windows(expanded, as_of), used

    def _with_audiences(
        self, expr: str | dict[str, object] | Expr, run: Callable[[Expr], _T], as_of: datetime | None = None
    ) -> tuple[_T, dict[str, int]]:
        """``run(tree)`` on the expression resolved to stored segments.

        A plain segment expression pays nothing for resolution: audiences and
        windowed segments are looked up only when the expression has a window,
        an ``as_of``, or names something the segment read does not know.
        """
        tree = to_expr(expr)
        if as_of is None and not has_windows(tree):
            try:
                return run(tree), {}
            except UniverseNotFound:
                raise
            except SegmentNotFound:
                pass
        for attempt in range(2):
            resolved, used = self._resolve(tree, as_of)
            try:
                return run(resolved), used
            except UniverseNotFound:
                raise
            except SegmentNotFound as exc:
                # a bucket expired under a config held for a moment: resolve once more from fresh configs
                if attempt or not any(BUCKET_SEP in n for n in exc.names):
                    raise
                self.windows.configs([n.partition(BUCKET_SEP)[0] for n in exc.names], fresh=True)
        raise AssertionError("unreachable")

    # -- metadata ---------------------------------------------------------

    def info(self, name: str) -> SegmentInfo:
        check_name(name)
        meta = self.reader.meta(name)
        if meta is None:
            raise SegmentNotFound([name])
        return meta.info()

    def names(self, *, buckets: bool = False) -> list[str]:
        """All segment names, sorted (the time buckets of windowed segments only with ``buckets``)."""
        return sorted(key for key, _ in self.store.scan(self.sets.meta) if buckets or BUCKET_SEP not in key)

    def infos(self) -> list[SegmentInfo]:
        """Every segment's info, sorted by name (a segment whose metadata is damaged is logged and left out)."""
        metas, damaged = self.reader.all_metas()
        for exc in damaged.values():
            log.error("%s", exc)
        return [metas[n].info() for n in sorted(metas) if BUCKET_SEP not in n]

    def catalog(self, max_age: float) -> dict[str, SegmentInfo]:
        """Every segment's info from a metadata snapshot at most ``max_age`` seconds old.

        One scan of the metadata when the held snapshot (shared with user
        lookups) is older; store errors propagate.
        """
        snap = self._lookup_snapshot(max_age)
        return {name: meta.info() for name, meta in sorted(snap.metas.items())}

    def history(self, name: str, *, since: datetime | None = None, until: datetime | None = None) -> list[Point]:
        """The size history of a segment: one point per published version, bounded (see :mod:`.history`)."""
        check_name(name)
        points = self.writer.history.points(
            name,
            since_ms=None if since is None else int(since.timestamp() * 1000),
            until_ms=None if until is None else int(until.timestamp() * 1000),
        )
        if not points and self.reader.meta(name) is None:
            raise SegmentNotFound([name])
        return points

    def watermarks(self, names: Sequence[str], source: str) -> dict[str, int]:
        """The last ingest position recorded per segment for ``source`` (-1: none)."""
        metas = self.reader.metas(list(names))
        return {n: (m.watermarks.get(source, -1) if m else -1) for n, m in metas.items()}

    # -- membership -------------------------------------------------------

    def contains(self, name: str, user_id: int) -> bool:
        check_name(name)
        uid = bm.check_user_id(user_id)
        shard = bm.shard_of(uid)

        def body() -> bool:
            snap = self.reader.snapshot([name])
            if not snap.maps[name].has(shard):
                return False
            return uid in self.engine.load(snap, {name: 1 << shard})[name][0]

        try:
            return self.reader.consistent(body)
        except SegmentNotFound:
            pass
        return self.matches(uid, name)  # an audience or a windowed segment (unknown: SegmentNotFound)

    def segments_of(self, user_id: int, *, max_staleness: float | None = None) -> list[str]:
        """Names of the segments that contain ``user_id``, sorted.

        The metadata of every segment comes from one snapshot, re-read (one
        scan) when older than ``max_staleness`` seconds (``None``: the
        ``lookup_staleness`` given to ``connect``, 0.25 s by default; 0: read
        it for this call). A change by another process becomes visible at most
        that much later; this process's own writes at once.

        A damaged segment is left out of the answer (logged, and counted in
        ``reader.stats.damaged``) rather than failing every lookup.
        """
        return self.segments_of_detailed(user_id, max_staleness=max_staleness).segments

    def segments_of_detailed(self, user_id: int, *, max_staleness: float | None = None) -> Lookup:
        """``segments_of`` and the age of the metadata snapshot it used (its freshness bound)."""
        uid = bm.check_user_id(user_id)
        staleness = self.lookup_staleness if max_staleness is None else max_staleness

        def body() -> Lookup:
            names = self._segments_of(uid, staleness)
            held = self._lookup
            return Lookup(names, 0.0 if held is None else max(0.0, time.monotonic() - held[0]))

        return self.reader.consistent(body)

    def segments_of_cached(self, user_id: int, *, max_staleness: float | None = None) -> list[str] | None:
        """``segments_of`` answered from memory only, or ``None`` when that needs store I/O.

        Never blocks on the store: an event loop may call it and fall back to
        ``segments_of`` on a worker thread when it returns ``None`` (the
        metadata snapshot is older than ``max_staleness``, or a shard the
        answer needs is not cached).
        """
        uid = bm.check_user_id(user_id)
        staleness = self.lookup_staleness if max_staleness is None else max_staleness
        held = self._lookup
        if held is None or staleness <= 0 or time.monotonic() - held[0] > staleness:
            return None
        shard = bm.shard_of(uid)
        found: list[str] = []
        for name, shard_map in held[1].maps.items():
            if not shard_map.has(shard):
                continue
            entry = self.cache.peek(name)
            if entry is None or entry.map_key != shard_map.key or not entry.holds(shard):
                return None
            if uid in entry.bitmap:
                found.append(name)
        return sorted(found)

    def _lookup_snapshot(self, max_staleness: float) -> Snapshot:
        held = self._lookup
        if held is not None and max_staleness > 0 and time.monotonic() - held[0] <= max_staleness:
            return held[1]
        return self.refresh_lookups()

    def _forget_snapshot(self) -> None:
        self._lookup = None

    def _query_metadata(self, names: Sequence[str], universe: str | None) -> tuple[Snapshot, float]:
        """Metadata for a query from the shared snapshot when it is at most ``query_staleness`` old."""
        snap = self._lookup_snapshot(self.query_staleness)
        held = self._lookup
        wanted = [*names, *([universe] if universe else [])]
        if held is not None and held[1] is snap and all(n in snap.metas for n in wanted):
            return snap.only(dict.fromkeys(wanted)), time.monotonic() - held[0]
        return self.reader.snapshot(names, universe=universe), 0.0  # a segment newer than the snapshot

    def refresh_lookups(self) -> Snapshot:
        """Read every segment's metadata (one scan) for ``segments_of`` and ``catalog`` to reuse."""
        now = time.monotonic()

        def body() -> Snapshot:
            metas, damaged = self.reader.all_metas()
            for exc in damaged.values():
                log.error("lookups leave out a segment: %s", exc)
            while True:
                try:
                    return Snapshot(metas, self.reader.maps(metas.values()))
                except CorruptSegment as exc:
                    if exc.segment not in metas:
                        raise
                    log.error("lookups leave out a segment: %s", exc)
                    metas = {n: m for n, m in metas.items() if n != exc.segment}

        snap = self.reader.consistent(body)
        self._lookup = (now, snap)
        self.lookup_refreshes += 1
        return snap

    def _segments_of(self, uid: int, max_staleness: float) -> list[str]:
        snap = self._lookup_snapshot(max_staleness)
        shard = bm.shard_of(uid)
        found: list[str] = []
        slow: list[str] = []
        for name, shard_map in snap.maps.items():
            if not shard_map.has(shard):
                continue
            entry = self.cache.peek(name)
            if entry is not None and entry.map_key == shard_map.key and entry.holds(shard):
                if uid in entry.bitmap:
                    found.append(name)
            else:
                slow.append(name)
        while slow:
            try:
                loaded = self.engine.load(snap.only(slow), {n: 1 << shard for n in slow})
            except CorruptSegment as exc:
                if exc.segment not in slow:
                    raise
                log.error("user lookup leaves out a segment: %s", exc)
                slow.remove(exc.segment)
                continue
            except BaseException:
                self._lookup = None  # moved records: the retry reads fresh metadata
                raise
            found.extend(n for n in slow if uid in loaded[n][0])
            break
        return sorted(found)

    def warm(self, names: Sequence[str] | None = None, *, progress: Callable[[str], None] | None = None) -> int:
        """Load segments completely into the cache (all of them by default); returns the count."""
        todo = list(names) if names is not None else self.names()
        for start in range(0, len(todo), 8):
            chunk = todo[start : start + 8]
            try:
                self.engine.whole(chunk)
            except SegmentNotFound as exc:
                rest = [n for n in chunk if n not in exc.names]
                if rest:
                    self.engine.whole(rest)
            if progress:
                progress(f"cached {min(start + 8, len(todo))}/{len(todo)} segments")
        return len(todo)

    # -- queries ----------------------------------------------------------

    def parse(self, expr: str | dict[str, object] | Expr) -> Expr:
        return to_expr(expr)

    def reach(self, expr: str | dict[str, object] | Expr, *, as_of: object | None = None) -> int:
        """Exact number of users the expression selects.

        ``as_of`` evaluates the windows of windowed segments as of that moment.
        """
        return self.reach_detailed(expr, as_of=as_of).reach

    def reach_detailed(self, expr: str | dict[str, object] | Expr, *, as_of: object | None = None) -> ReachResult:
        """``reach`` plus the version of every segment (and audience definition) it read."""
        when = None if as_of is None else parse_time(as_of, "as_of")
        result, used = self._with_audiences(expr, self.engine.reach, when)
        return replace(result, audiences=used) if used else result

    def reach_history(
        self, expr: str | dict[str, object] | Expr, *, start: object, end: object, step: str = "1d"
    ) -> list[tuple[datetime, int]]:
        """The reach as of each step from ``start`` to ``end`` (inclusive), e.g. 90 daily points.

        ``step``: ``1d``, ``6h``, ... (at most 1,000 points).
        """
        first, last = parse_time(start, "from"), parse_time(end, "to")
        window = Window.parse(step)
        if window.last is None:
            raise InvalidInput(f"step must look like 1d or 6h, got {step!r}")
        delta = timedelta(days=window.last) if window.unit == "d" else timedelta(hours=window.last)
        if last < first:
            raise BadTime("the history ends (to) before it starts (from)")
        count = int((last - first) / delta) + 1
        if count > 1000:
            raise InvalidInput(f"{count} points asked for; at most 1000 (use a larger step)")
        tree = to_expr(expr)
        return [(first + delta * i, self.reach(tree, as_of=first + delta * i)) for i in range(count)]

    def evaluate(self, expr: str | dict[str, object] | Expr, *, as_of: object | None = None) -> BitMap:
        """The users the expression selects, as a new bitmap the caller owns."""
        result, _ = self.evaluate_detailed(expr, as_of=as_of)
        return result

    def evaluate_detailed(
        self, expr: str | dict[str, object] | Expr, *, as_of: object | None = None
    ) -> tuple[BitMap, dict[str, int]]:
        """The users and the version of every segment read (audiences are listed under their names)."""
        when = None if as_of is None else parse_time(as_of, "as_of")
        (result, versions), used = self._with_audiences(expr, self.engine.evaluate, when)
        return result, {**versions, **used}

    # -- per-user checks and insights ---------------------------------------

    def matches(self, user_id: int, expr: str | dict[str, object] | Expr) -> bool:
        """Whether one user is selected by ``expr``, reading only that user's shard."""
        return self.match_many([user_id], expr)[0]

    def match_many(self, user_ids: Sequence[int], expr: str | dict[str, object] | Expr) -> list[bool]:
        """Whether each user is selected by ``expr`` (audiences expanded); only the users' shards are read.

        Uses the lookup metadata snapshot (fresh within ``lookup_staleness``), like ``segments_of``.
        """
        uids = [bm.check_user_id(u) for u in user_ids]
        tree, _ = self._resolve(expr)
        names = set(refs(tree))
        universe = self.universe if uses_complement(tree) else None

        def body() -> list[bool]:
            snap = self._lookup_snapshot(self.lookup_staleness)
            missing = [n for n in names if n not in snap.metas]
            if universe is not None and universe not in snap.metas:
                raise UniverseNotFound(universe)
            if missing:
                snap = self.refresh_lookups()  # created since the snapshot?
                missing = [n for n in names if n not in snap.metas]
                if missing:
                    raise SegmentNotFound(missing)
            wanted = names | ({universe} if universe else set())
            try:
                return self.engine.matches(snap.only(wanted), tree, uids)
            except BaseException:
                self._lookup = None
                raise

        return self.reader.consistent(body)

    def insights(self, expr: str | dict[str, object] | Expr, segments: Sequence[str] | None = None) -> Insights:
        """Which segments over- and under-index in the audience ``expr`` (all segments by default)."""
        tree, used = self._resolve(expr)
        names = [check_name(n) for n in dict.fromkeys(segments)] if segments is not None else [
            n for n in self.names() if n != self.universe
        ]
        stored = self.reader.metas(names)
        plain = [n for n in names if stored[n] is not None]
        derived = {n: self._resolve(n)[0] for n in names if stored[n] is None}  # audiences, windowed
        result = self.engine.insights(tree, plain, derived)
        return replace(result, audiences=used) if used else result

    def audiences_of(self, user_id: int) -> list[str]:
        """Names of the audiences ``user_id`` is in, sorted."""
        uid = bm.check_user_id(user_id)
        found = []
        for audience in self._audiences_held():
            try:
                if self.matches(uid, audience.expr):
                    found.append(audience.name)
            except SegmentNotFound as exc:  # an audience over a segment deleted meanwhile
                log.warning("audience %r cannot be evaluated: %s", audience.name, exc)
        return found

    def _audiences_held(self) -> list[Audience]:
        held = self._audience_list
        now = time.monotonic()
        if held is None or self.lookup_staleness <= 0 or now - held[0] > self.lookup_staleness:
            held = (now, self.audiences.all())
            self._audience_list = held
        return held[1]

    def overlap(self, names: Sequence[str]) -> Overlap:
        """Pairwise intersection sizes of the named segments (or audiences)."""
        ordered = [check_name(n) for n in dict.fromkeys(names)]
        try:
            bitmaps, snap = self.engine.whole(ordered)
            versions = {n: snap.metas[n].version for n in ordered}
        except UniverseNotFound:
            raise
        except SegmentNotFound as exc:
            # audiences and windowed segments: evaluated as expressions (an unknown name raises)
            derived = list(exc.names)
            plain = [n for n in ordered if n not in derived]
            bitmaps, versions = {}, {}
            if plain:
                bitmaps, snap = self.engine.whole(plain)
                versions = {n: snap.metas[n].version for n in plain}
            for name in derived:
                bitmaps[name], used = self.evaluate_detailed(name)
                versions[name] = used.get(name, 0)
        sizes = [len(bitmaps[n]) for n in ordered]
        matrix = [[0] * len(ordered) for _ in ordered]
        for i, a in enumerate(ordered):
            matrix[i][i] = sizes[i]
            for j in range(i + 1, len(ordered)):
                both = bitmaps[a].intersection_cardinality(bitmaps[ordered[j]])
                matrix[i][j] = matrix[j][i] = both
        return Overlap(ordered, sizes, matrix, versions)

    def iter_shards(self, name: str) -> Iterator[tuple[int, BitMap]]:
        """A segment's members shard by shard, in ID order, reading one batch of shards at a time.

        Memory stays bounded by the batch size, whatever the segment's size.
        The shards come from one committed version of the segment (``Conflict``
        if a writer replaces it before the last shard was read).
        """
        check_name(name)
        if self.reader.meta(name) is None:  # an audience or a windowed segment: evaluated now, then streamed
            return bm.split_by_shard(self.evaluate(name))
        return self.reader.stream(name)

    # -- lifecycle --------------------------------------------------------

    def ping(self) -> None:
        self.store.ping()

    def close(self) -> None:
        self.keys.close()
        self.store.close()

    def __enter__(self) -> Segments:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.lru_cache(maxsize=4096)
def _parse_text(text: str) -> Expr:
    return _parse_any(text)


def to_expr(expr: object) -> Expr:
    """``expressions.to_expr`` with a cache of parsed texts (trees are immutable: sharing is safe)."""
    if isinstance(expr, str) and len(expr) <= 4096:
        return _parse_text(expr)
    return _parse_any(expr)


def _refs(expr: Expr) -> list[Ref]:
    """Every reference node (with its window), in order."""
    if isinstance(expr, Ref):
        return [expr]
    if isinstance(expr, Not):
        return _refs(expr.operand)
    return [r for op in expr.operands for r in _refs(op)]


def connect(
    url: str,
    *,
    universe: str = DEFAULT_UNIVERSE,
    set_prefix: str = "",
    cache_bytes: int = 4 << 30,
    lookup_staleness: float = 0.25,
    query_staleness: float = 0.0,
) -> Segments:
    """Open the store at ``url`` (``memory://``, ``sqlite:///path``, ``aerospike://...``).

    ``lookup_staleness`` (seconds) lets ``segments_of`` and the per-user checks
    reuse one metadata snapshot of every segment that long (so a lookup never
    scans the store per call; this process's own writes are seen at once).
    ``query_staleness`` lets reaches and evaluations reuse it too (0: every
    query reads the metadata of the segments it names); every reach states
    the age of what it used (``ReachResult.staleness``). One answer never mixes
    two versions of a segment either way.
    """
    return Segments(
        open_store(url),
        universe=universe,
        set_prefix=set_prefix,
        cache_bytes=cache_bytes,
        lookup_staleness=lookup_staleness,
        query_staleness=query_staleness,
    )


__all__ = ["DEFAULT_UNIVERSE", "Lookup", "Meta", "Overlap", "Segments", "connect"]
