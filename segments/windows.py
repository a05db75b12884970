"""Windowed segments: members kept per UTC time bucket, queried over rolling windows.

A windowed segment ``paid_bill`` with day granularity is a config record plus
one *normal* sharded segment per bucket, named ``paid_bill::20261130`` (hour
granularity: ``paid_bill::2026113014``), so records, caching and planning are
the same as for every other segment. ``paid_bill[7d]`` is the union of the
last 7 buckets up to now (or up to ``as_of``); ``paid_bill`` alone is the union
of every retained bucket. ``::`` is reserved for bucket names.

Config record: set ``segwin`` (with the deployment's prefix), key = the name,
bins ``gran`` (``day``/``hour``), ``retention`` (buckets kept), ``created``
(ms) and ``buckets`` (JSON list of the bucket ids that exist, sorted).

Writes say when (``at``, default now). A new bucket is first created (an
empty segment), then registered in the config, then written, so every
registered bucket exists and a crash leaves at most an empty, unregistered
bucket (which the next write to it registers). Expiry unregisters first and
then deletes, so a reader holding an older config finds a bucket gone, and
resolves again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from .catalog import Sets, check_free, now_ms
from .errors import BadTime, Conflict, CorruptSegment, InvalidInput, NameTaken, SegmentNotFound
from .expressions import And, Diff, Expr, Not, Or, Ref, Xor
from .expressions.ast import Window, facts
from .names import check_name
from .records import RecordReader
from .storage.base import Record, Store

BUCKET_SEP = "::"
#: how far in the future an ``at`` may be (clock skew between producers and the service)
FUTURE_TOLERANCE = timedelta(minutes=5)
_GRANULARITY = {"day": timedelta(days=1), "hour": timedelta(hours=1)}
_FORMAT = {"day": "%Y%m%d", "hour": "%Y%m%d%H"}
_ATTEMPTS = 16
#: how long a process trusts its copy of a window config (its own writes refresh it at once)
CONFIG_TTL_S = 1.0


@dataclass(frozen=True)
class WindowConfig:
    name: str
    granularity: str
    retention: int
    created_ms: int
    buckets: tuple[str, ...] = ()
    generation: int = 0

    @property
    def step(self) -> timedelta:
        return _GRANULARITY[self.granularity]

    def bucket_of(self, at: datetime) -> str:
        when = at.astimezone(UTC)
        day = f"{when.year:04d}{when.month:02d}{when.day:02d}"  # strftime's %Y does not pad years < 1000
        return day if self.granularity == "day" else f"{day}{when.hour:02d}"

    def start_of(self, bucket: str) -> datetime:
        return datetime.strptime(bucket, _FORMAT[self.granularity]).replace(tzinfo=UTC)

    def segment(self, bucket: str) -> str:
        return f"{self.name}{BUCKET_SEP}{bucket}"

    @property
    def empty_segment(self) -> str:
        """An always-empty segment, what a window with no bucket evaluates to."""
        return f"{self.name}{BUCKET_SEP}empty"

    def oldest_kept(self, now: datetime) -> datetime:
        """The start of the oldest bucket inside the retention at ``now`` (clamped at year 1)."""
        current = self.start_of(self.bucket_of(now))
        try:
            return current - self.step * (self.retention - 1)
        except OverflowError:
            return datetime.min.replace(tzinfo=UTC)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "granularity": self.granularity,
            "retention": self.retention,
            "buckets": len(self.buckets),
            "oldest": self.buckets[0] if self.buckets else None,
            "newest": self.buckets[-1] if self.buckets else None,
        }


def parse_time(value: object, what: str = "at") -> datetime:
    """An aware UTC datetime from a datetime, a date, ISO text or epoch seconds; ``BadTime`` otherwise."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise BadTime(f"{what}={value!r} is not a valid time: {exc}") from exc
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError as exc:
            raise BadTime(
                f"{what}={value!r} is not an ISO date or timestamp (e.g. 2026-11-30 or 2026-11-30T14:05:00Z)"
            ) from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise BadTime(f"{what} must be an ISO date or timestamp, got {type(value).__name__}")


def _decode(name: str, record: Record) -> WindowConfig:
    bins = record.bins
    try:
        gran = str(bins["gran"])
        if gran not in _GRANULARITY:
            raise ValueError(f"unknown granularity {gran!r}")
        return WindowConfig(
            name, gran, int(bins["retention"]), int(bins["created"]),
            tuple(sorted(str(b) for b in json.loads(str(bins["buckets"])))), record.generation,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptSegment(f"the window config of {name!r} is damaged: {exc}", segment=name) from exc


class Windows:
    """The windowed segments of one deployment."""

    def __init__(self, store: Store, sets: Sets, reader: RecordReader) -> None:
        self.store = store
        self.set = sets.window
        self.sets = sets
        self.reader = reader
        self._held: dict[str, tuple[float, WindowConfig | None]] = {}
        self._lock = threading.Lock()
        #: buckets this process expired (a metric)
        self.stats_expired = 0

    # -- configs ------------------------------------------------------------

    def configs(self, names: Sequence[str], *, fresh: bool = False) -> dict[str, WindowConfig | None]:
        """The config of each name (``None``: not windowed), trusted for ``CONFIG_TTL_S`` unless ``fresh``."""
        now = time.monotonic()
        out: dict[str, WindowConfig | None] = {}
        todo = []
        for name in dict.fromkeys(names):
            held = self._held.get(name)
            if held is not None and not fresh and now - held[0] <= CONFIG_TTL_S:
                out[name] = held[1]
            else:
                todo.append(name)
        if todo:
            for name, record in zip(todo, self.store.get_many(self.set, todo)):
                out[name] = None if record is None else _decode(name, record)
                self._remember(name, out[name])
        return out

    def config(self, name: str, *, fresh: bool = False) -> WindowConfig | None:
        return self.configs([name], fresh=fresh)[name]

    def _remember(self, name: str, config: WindowConfig | None) -> None:
        with self._lock:
            if len(self._held) > 10_000:
                self._held.clear()
            self._held[name] = (time.monotonic(), config)

    def all(self) -> list[WindowConfig]:
        return sorted((_decode(k, r) for k, r in self.store.scan(self.set)), key=lambda c: c.name)

    def create(self, name: str, *, granularity: str = "day", retention: int = 400) -> WindowConfig:
        check_name(name)
        if BUCKET_SEP in name:
            raise InvalidInput(f"invalid segment name {name!r}: '::' is reserved for time buckets")
        if granularity not in _GRANULARITY:
            raise InvalidInput(f"granularity must be 'day' or 'hour', got {granularity!r}")
        if not isinstance(retention, int) or isinstance(retention, bool) or not 1 <= retention <= 100_000:
            raise InvalidInput(f"retention must be a whole number of buckets from 1 to 100000, got {retention!r}")
        check_free(self.store, self.sets, name, kind="windowed segment")
        config = WindowConfig(name, granularity, retention, now_ms())
        try:
            gen = self.store.put(self.set, name, self._bins(config), generation=0)
        except Conflict:
            existing = self.config(name, fresh=True)
            if existing is not None and (existing.granularity, existing.retention) == (granularity, retention):
                return existing  # created already, the same way: idempotent
            raise NameTaken(f"{name!r} is already a windowed segment with other settings") from None
        config = WindowConfig(name, granularity, retention, config.created_ms, (), gen)
        self._remember(name, config)
        return config

    @staticmethod
    def _bins(config: WindowConfig) -> dict[str, str | int]:
        return {
            "gran": config.granularity,
            "retention": config.retention,
            "created": config.created_ms,
            "buckets": json.dumps(list(config.buckets)),
        }

    def _update(self, name: str, change: str, bucket: str) -> WindowConfig:
        """Register (``add``) or unregister (``drop``) a bucket in the config, generation-checked."""
        for _ in range(_ATTEMPTS):
            config = self.config(name, fresh=True)
            if config is None:
                raise SegmentNotFound([name])
            buckets = set(config.buckets)
            if (bucket in buckets) == (change == "add"):
                return config
            buckets = buckets | {bucket} if change == "add" else buckets - {bucket}
            new = WindowConfig(name, config.granularity, config.retention, config.created_ms,
                               tuple(sorted(buckets)), config.generation)
            try:
                gen = self.store.put(self.set, name, self._bins(new), generation=config.generation)
            except Conflict:
                continue
            new = WindowConfig(new.name, new.granularity, new.retention, new.created_ms, new.buckets, gen)
            self._remember(name, new)
            return new
        raise Conflict(f"the window config of {name!r} kept changing; try again")

    # -- writes -------------------------------------------------------------

    def bucket_for(self, config: WindowConfig, at: object | None, now: datetime | None = None) -> str:
        """The bucket an ``at`` goes to; ``BadTime`` outside the retention or too far in the future."""
        now = now or datetime.now(UTC)
        when = now if at is None else parse_time(at)
        if when > now + FUTURE_TOLERANCE:
            raise BadTime(f"at={when.isoformat()} is in the future (more than {FUTURE_TOLERANCE} ahead)")
        oldest = config.oldest_kept(now)
        if when < oldest:
            raise BadTime(
                f"at={when.isoformat()} is outside the retention of {config.name!r} "
                f"({config.retention} {config.granularity}s: the oldest bucket kept starts {oldest.isoformat()})"
            )
        return config.bucket_of(when)

    def register(self, config: WindowConfig, bucket: str) -> WindowConfig:
        return config if bucket in config.buckets else self._update(config.name, "add", bucket)

    def expired(self, config: WindowConfig, now: datetime | None = None) -> list[str]:
        """The registered buckets past the retention."""
        cutoff = config.bucket_of(config.oldest_kept(now or datetime.now(UTC)))
        return [b for b in config.buckets if b < cutoff]

    def unregister(self, config: WindowConfig, bucket: str) -> None:
        self._update(config.name, "drop", bucket)

    def expire_now(
        self, config: WindowConfig, drop: Callable[[str], None], *, now: datetime | None = None
    ) -> list[str]:
        """Unregister, then delete (``drop(segment)``), every bucket past the retention; returns them."""
        gone = self.expired(config, now)
        for bucket in gone:
            self.unregister(config, bucket)
            drop(config.segment(bucket))
            self.stats_expired += 1
        return gone

    def delete(self, name: str) -> WindowConfig:
        config = self.config(name, fresh=True)
        if config is None:
            raise SegmentNotFound([name])
        self.store.delete(self.set, name)
        self._remember(name, None)
        return config

    # -- reads --------------------------------------------------------------

    def resolve(self, config: WindowConfig, window: Window | None, as_of: datetime) -> Expr:
        """The buckets a window covers as of ``as_of``, as a union of bucket segments."""
        newest = config.bucket_of(as_of)
        if window is None:
            first = config.bucket_of(config.oldest_kept(as_of))
            last = newest
        elif window.last is not None:
            span = timedelta(days=window.last) if window.unit == "d" else timedelta(hours=window.last)
            if span % config.step:
                raise InvalidInput(
                    f"window [{window}] of {config.name!r} is not a whole number of its "
                    f"{config.granularity} buckets"
                )
            count = span // config.step
            try:
                first = config.bucket_of(config.start_of(newest) - config.step * (count - 1))
            except OverflowError:
                first = config.bucket_of(datetime.min.replace(tzinfo=UTC))
            last = newest
        else:
            assert window.start is not None and window.end is not None
            first = config.bucket_of(datetime(window.start.year, window.start.month, window.start.day, tzinfo=UTC))
            day_end = datetime(window.end.year, window.end.month, window.end.day, 23, 59, 59, tzinfo=UTC)
            last = min(config.bucket_of(day_end), newest)
        chosen = [Ref(config.segment(b)) for b in config.buckets if first <= b <= last]
        if not chosen:
            return Ref(config.empty_segment)
        return chosen[0] if len(chosen) == 1 else Or(tuple(chosen))


def has_windows(expr: Expr) -> bool:
    return facts(expr).windows


def substitute(expr: Expr, replace: dict[Ref, Expr]) -> Expr:
    if isinstance(expr, Ref):
        return replace.get(expr, expr)
    if isinstance(expr, Not):
        return Not(substitute(expr.operand, replace))
    cls: type[And] | type[Or] | type[Diff] | type[Xor] = type(expr)
    return cls(tuple(substitute(op, replace) for op in expr.operands))


__all__ = ["BUCKET_SEP", "WindowConfig", "Windows", "has_windows", "parse_time", "substitute"]
