"""Push a Spark DataFrame's users into segments, from the executors (``pip install 'segments[spark]'``).

>>> from ingest.spark import push_dataframe, push_memberships              # doctest: +SKIP
>>> push_dataframe(df, "premium", column="user_id", op="replace",         # doctest: +SKIP
...                bootstrap_servers="kafka:9092", topic="segment-updates")
>>> push_memberships(df, user_column="user_id", segment_column="segment",  # doctest: +SKIP
...                  bootstrap_servers="kafka:9092")

Both publish the binary messages of :mod:`ingest.codec` that ``segments
ingest`` consumes. A job is two passes over the DataFrame (``cache()`` it if
it is expensive to compute) and no user ID ever reaches the driver:

1. **Validate** (one aggregate, grouped by segment for ``push_memberships``):
   rows, null / negative / >= 2**32 IDs with an example of each, the largest
   ID per segment. Any bad row, a bad segment name or a wrong column type is
   refused with a precise error before anything is sent.
2. **Build and send**: every task ORs its IDs into one bitmap per segment and
   cuts it into *parts*, fixed shard ranges: part ``k`` holds shards
   ``[k*R, (k+1)*R)`` with ``R`` = :func:`ingest.codec.shards_per_message` (109 shards,
   7.1M IDs, for the default 900 KB), so a part always fits one message, and
   the number of parts of a segment (``max ID // (R * 65536) + 1``) is known
   from pass 1 without the tasks talking to each other. The pieces are
   repartitioned by ``(segment, part)``: one task owns each part, unions its
   pieces and produces it with :class:`ingest.producer.SegmentProducer` (the
   Java-compatible ``murmur2_random`` partitioner, idempotent), then flushes.
   A delivery error fails the task, and Spark runs it again.

``replace`` sends every part of a segment under one batch id, including the
empty parts (the driver adds a placeholder for each ``(segment, part)``, so
the task that owns a part sends it even if no ID falls in it): the consumer
applies the replace atomically when the last part arrives. A task retried by
Spark, or the whole job run again with the same ``batch``, sends parts the
consumer already has, which it ignores; so a job killed half-way and run
again with the same batch id converges to the same result. ``add`` and
``remove`` send only non-empty parts; each message is applied on its own.

String key columns (customer numbers, UUIDs) are translated by the executors
through the key table of ``store`` (:mod:`segments.keys`, the service's store
URL), in an extra pass between the two: ``add`` and ``replace`` give keys never
seen new IDs, ``remove`` skips them; the validation pass refuses null, empty,
too long (over 256 bytes of UTF-8) and control-character keys first.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial, reduce
from typing import Any, Final, cast

try:
    import pyarrow as pa
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "ingest.spark needs PySpark and pyarrow: pip install 'segments[spark]' "
        "(on Databricks both come with the runtime: install segments alone)"
    ) from exc

import numpy as np
from pyroaring import BitMap

import segments
from segments import bitmap as bm
from segments.errors import InvalidSegmentName, InvalidUserId, InvalidUserKey
from segments.keys import MAX_KEY_BYTES
from segments.names import check_name

from .codec import (
    BATCH_PATTERN,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TOPIC,
    Op,
    roaring_message,
    shards_per_message,
)
from .producer import SegmentProducer, new_batch_id

log = logging.getLogger("ingest.spark")

#: Spark column types accepted as user IDs (all of Spark's integer types).
INTEGER_TYPES: Final[tuple[type[T.DataType], ...]] = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
#: What pass 2 hands from the building tasks to the sending tasks.
_PIECES: Final[str] = "segment string, part int, ids binary"
#: What each translating task reports back to the driver: per segment, its largest ID and unknown keys.
_TRANSLATED: Final[str] = "segment string, hi long, unknown long"
#: The translation cache of an executor's store connection (each task opens one).
_KEY_CACHE_BYTES: Final[int] = 256 << 20
#: What each sending task reports back to the driver: one row per part it owned.
_SENT: Final[str] = "segment string, part int, users long, bytes long, messages int"
#: A building task yields its pieces in Arrow batches of at most this many value bytes.
_BATCH_BYTES: Final[int] = 64 << 20


@dataclass(frozen=True)
class SegmentPush:
    """What one job sent for one segment."""

    segment: str
    #: rows of the DataFrame for this segment (duplicates included)
    rows: int
    #: distinct user IDs sent (the segment's cardinality after a replace)
    users: int
    messages: int
    bytes: int
    #: replace: the number of parts of the batch (empty ones included)
    parts: int


@dataclass(frozen=True)
class PushSummary:
    """What a push sent: totals, and one :class:`SegmentPush` per segment."""

    op: str
    #: the replace's batch id (``None`` for add and remove); run the job again with it to resume
    batch: str | None
    topic: str
    rows: int
    users: int
    messages: int
    bytes: int
    seconds: float
    segments: dict[str, SegmentPush] = field(default_factory=dict)


@dataclass(frozen=True)
class _Plan:
    """Everything the executors need, decided on the driver (shipped to them by pickling)."""

    op: Op
    batch: str | None
    #: shards per part
    span: int
    #: segment -> number of parts
    parts: dict[str, int]
    #: push_dataframe's segment (the DataFrame has no segment column); None for push_memberships
    segment: str | None
    bootstrap_servers: str
    topic: str
    max_message_bytes: int
    config: dict[str, str | int | float | bool]
    delivery_timeout: float
    #: string user keys: the store whose key table translates them (None: integer IDs)
    store: str | None = None

    def producer(self) -> SegmentProducer:
        return SegmentProducer(self.bootstrap_servers, topic=self.topic, max_message_bytes=self.max_message_bytes,
                               config=self.config, delivery_timeout=self.delivery_timeout)


# --------------------------------------------------------------------------- public API


def push_dataframe(
    df: DataFrame,
    segment: str,
    column: str = "user_id",
    op: Op = "replace",
    *,
    bootstrap_servers: str,
    topic: str = DEFAULT_TOPIC,
    batch: str | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    send_tasks: int | None = None,
    delivery_timeout: float = 120.0,
    progress_seconds: float = 30.0,
    store: str | None = None,
    **producer_options: str | int | float | bool,
) -> PushSummary:
    """Replace ``segment`` with (or add, or remove) the distinct IDs of ``df[column]``.

    ``column`` is of any Spark integer type, every value a user ID (0 to
    2**32 - 1); or a string column of user keys, translated to IDs by the
    executors through the key table of ``store`` (the service's store URL):
    ``add`` and ``replace`` give keys never seen new IDs, ``remove`` skips
    them. ``batch`` (replace only) defaults to a new id; pass the
    one of a failed run to resume it. ``send_tasks`` is how many Spark tasks
    produce (default: the cluster's parallelism, at most one per part).
    ``producer_options`` are librdkafka settings with ``_`` for ``.``
    (``security_protocol="SASL_SSL"``, ``sasl_mechanism="PLAIN"``, ...).
    Returns a :class:`PushSummary` once Kafka has acknowledged every message;
    raises ``InvalidUserId`` / ``InvalidUserKey`` / ``InvalidSegmentName`` /
    ``TypeError`` / ``ValueError`` before sending anything when the input is bad.
    """
    check_name(segment)
    return _push(df, column, None, segment, op, bootstrap_servers=bootstrap_servers, topic=topic, batch=batch,
                 max_message_bytes=max_message_bytes, send_tasks=send_tasks, delivery_timeout=delivery_timeout,
                 progress_seconds=progress_seconds, store=store, producer_options=producer_options)


def push_memberships(
    df: DataFrame,
    user_column: str = "user_id",
    segment_column: str = "segment",
    op: Op = "replace",
    *,
    bootstrap_servers: str,
    topic: str = DEFAULT_TOPIC,
    batch: str | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    send_tasks: int | None = None,
    delivery_timeout: float = 120.0,
    progress_seconds: float = 30.0,
    store: str | None = None,
    **producer_options: str | int | float | bool,
) -> PushSummary:
    """Like :func:`push_dataframe` for every segment named in ``df[segment_column]`` at once.

    ``df`` holds ``(user ID, segment name)`` rows. Each segment named gets the
    operation with its own IDs; with ``replace``, all of them share one batch
    id (each is replaced atomically on its own). A segment that has no row is
    not touched: to empty one, replace it with an empty DataFrame through
    :func:`push_dataframe`.
    """
    return _push(df, user_column, segment_column, None, op, bootstrap_servers=bootstrap_servers, topic=topic,
                 batch=batch, max_message_bytes=max_message_bytes, send_tasks=send_tasks,
                 delivery_timeout=delivery_timeout, progress_seconds=progress_seconds, store=store,
                 producer_options=producer_options)


# --------------------------------------------------------------------------- driver


def _push(
    df: DataFrame,
    user_column: str,
    segment_column: str | None,
    segment: str | None,
    op: Op,
    *,
    bootstrap_servers: str,
    topic: str,
    batch: str | None,
    max_message_bytes: int,
    send_tasks: int | None,
    delivery_timeout: float,
    progress_seconds: float,
    store: str | None,
    producer_options: Mapping[str, str | int | float | bool],
) -> PushSummary:
    started = time.monotonic()
    if op not in ("add", "remove", "replace"):
        raise ValueError(f"op must be 'add', 'remove' or 'replace', got {op!r}")
    if op == "replace":
        batch = batch if batch is not None else new_batch_id()
        if not BATCH_PATTERN.fullmatch(batch):
            raise ValueError(f"batch must be 1-64 characters of [A-Za-z0-9_.:-], got {batch!r}")
    elif batch is not None:
        raise ValueError("only replace takes a batch id")
    if send_tasks is not None and send_tasks < 1:
        raise ValueError(f"send_tasks must be at least 1, got {send_tasks}")
    span = shards_per_message(max_message_bytes)
    keys = _check_columns(df, user_column, segment_column)
    if keys and store is None:
        raise ValueError(f"column {user_column!r} holds string user keys: pass store=<the service's store URL> "
                         "so that the executors translate them through its key table")
    config = {name.replace("_", "."): value for name, value in producer_options.items()}
    plan = _Plan(op, batch, span, {}, segment, bootstrap_servers, topic, max_message_bytes, config,
                 delivery_timeout, store if keys else None)
    partitions = _partitions(plan)
    spark = df.sparkSession
    columns = [F.col(user_column) if keys else F.col(user_column).cast("long").alias("user_id")]
    if segment_column is not None:
        columns.append(F.col(segment_column).alias("segment"))
    selected = df.select(*columns)

    with _described(spark, f"segments {op}: validate {user_column!r}"):
        stats = _validate(df, user_column, segment_column, segment, keys)
    if keys:
        with _described(spark, f"segments {op}: translate the keys of {user_column!r}"):
            stats = _translate_all(replace(plan, parts=dict.fromkeys(stats, 0)), selected, stats)
    rows = {name: s.rows for name, s in stats.items()}
    width = span << bm.SHARD_BITS
    parts = {name: (s.max_id // width + 1 if s.max_id is not None else 1) for name, s in stats.items()}
    plan = replace(plan, parts=parts)
    total_rows = sum(rows.values())
    log.info("segments %s: validated %d rows of %d segment(s) in %.1f s; %d part(s) to send to %s "
             "(%d partitions)%s", op, total_rows, len(stats), time.monotonic() - started, sum(parts.values()),
             topic, partitions, f", batch {batch}" if batch else "")

    pieces = selected.mapInArrow(partial(_build, plan), _PIECES)
    if op == "replace":
        placeholders = [(name, part, None) for name, count in sorted(parts.items()) for part in range(count)]
        pieces = pieces.unionByName(spark.createDataFrame(placeholders, _PIECES))
    tasks = max(1, min(send_tasks or _parallelism(spark), sum(parts.values())))
    sending = (pieces.repartition(tasks, "segment", "part")
               .sortWithinPartitions("segment", "part")
               .mapInArrow(partial(_send, plan), _SENT))
    with _described(spark, f"segments {op}: build and send {len(stats)} segment(s)"), \
            _progress(spark, f"segments {op}", progress_seconds):
        sent = sending.collect()

    summary = _summarize(plan, rows, [(str(r["segment"]), int(r["part"]), int(r["users"]), int(r["bytes"]),
                                       int(r["messages"])) for r in sent], time.monotonic() - started)
    log.info("segments %s: sent %d message(s), %d bytes, %d user(s) of %d segment(s) in %.1f s%s", op,
             summary.messages, summary.bytes, summary.users, len(summary.segments), summary.seconds,
             f", batch {batch}" if batch else "")
    return summary


@dataclass(frozen=True)
class _Stats:
    rows: int
    max_id: int | None


def _check_columns(df: DataFrame, user_column: str, segment_column: str | None) -> bool:
    """Check the column types; True when the user column holds string keys."""
    fields = {f.name: f.dataType for f in df.schema.fields}
    for name in (user_column, segment_column):
        if name is not None and name not in fields:
            raise ValueError(f"the DataFrame has no column {name!r}; its columns: {sorted(fields)}")
    kind = fields[user_column]
    if segment_column is not None and not isinstance(fields[segment_column], T.StringType):
        raise TypeError(f"column {segment_column!r} is {fields[segment_column].simpleString()}; segment names "
                        "must be a string column")
    if isinstance(kind, T.StringType):
        return True
    if not isinstance(kind, INTEGER_TYPES):
        raise TypeError(f"column {user_column!r} is {kind.simpleString()}; user IDs must be a Spark integer "
                        "type (tinyint, smallint, int or bigint) holding values from 0 to 4294967295, or "
                        "user keys a string column")
    return False


@dataclass(frozen=True)
class _Check:
    """One kind of bad row: its name in the error, its condition, and whether to show an example."""

    name: str
    bad: Column
    example: bool = True


def _checks(user: Column, keys: bool) -> list[_Check]:
    if not keys:
        return [_Check("null", user.isNull(), example=False), _Check("negative", user < 0),
                _Check(">= 2**32", user > bm.MAX_USER_ID)]
    size = F.octet_length(user)
    return [_Check("null", user.isNull(), example=False), _Check("empty", size == 0, example=False),
            _Check(f"longer than {MAX_KEY_BYTES} bytes", size > MAX_KEY_BYTES),
            _Check("with a control character", user.rlike("\\p{Cc}"))]


def _validate(df: DataFrame, user_column: str, segment_column: str | None, segment: str | None,
              keys: bool) -> dict[str, _Stats]:
    """One aggregate pass: per segment, the rows, the bad IDs or keys (counts and examples), the largest ID."""
    user = F.col(user_column)
    checks = _checks(user, keys)
    aggregates = [F.count(F.lit(1)).alias("rows"),
                  F.count(F.when(reduce(operator.or_, [c.bad for c in checks]), 1)).alias("bad"),
                  F.max(user).alias("hi")]
    for number, check in enumerate(checks):
        aggregates.append(F.count(F.when(check.bad, 1)).alias(f"count{number}"))
        aggregates.append(F.min(F.when(check.bad, user)).alias(f"example{number}"))
    if segment_column is None:
        grouped = [(segment, row) for row in df.agg(*aggregates).collect()]
    else:
        grouped = [(row["segment"], row) for row in
                   df.groupBy(F.col(segment_column).alias("segment")).agg(*aggregates).collect()]
    total = bad = unnamed = 0
    counts = [0] * len(checks)
    examples: list[Any] = [None] * len(checks)
    bad_names: list[str] = []
    stats: dict[str, _Stats] = {}
    for name, row in grouped:
        count = int(row["rows"])
        total += count
        bad += int(row["bad"])
        for number in range(len(checks)):
            counts[number] += int(row[f"count{number}"])
            example = row[f"example{number}"]
            if example is not None and (examples[number] is None or example < examples[number]):
                examples[number] = example
        if name is None:
            unnamed += count
            continue
        try:
            check_name(name)
        except InvalidSegmentName:
            bad_names.append(str(name))
            continue
        stats[str(name)] = _Stats(count, None if keys or row["hi"] is None else int(row["hi"]))
    if unnamed or bad_names:
        shown = ", ".join(repr(n[:40]) for n in sorted(bad_names)[:3])
        problems = ([f"{unnamed} row(s) have a null segment"] if unnamed else []) + (
            [f"{len(bad_names)} segment name(s) are invalid (e.g. {shown}): names are 1-128 characters of "
             "[A-Za-z0-9_.:]"] if bad_names else [])
        raise InvalidSegmentName(f"column {segment_column!r}: {'; '.join(problems)}; nothing was sent")
    if bad:
        kinds = ", ".join(f"{count} {check.name}" + (f" (e.g. {_shown(example)})" if check.example else "")
                          for check, count, example in zip(checks, counts, examples) if count)
        if keys:
            raise InvalidUserKey(f"column {user_column!r}: {bad} of {total} rows are not user keys (1-"
                                 f"{MAX_KEY_BYTES} bytes of UTF-8 without control characters): {kinds}; "
                                 "nothing was sent")
        raise InvalidUserId(f"column {user_column!r}: {bad} of {total} rows are not user IDs (unsigned 32-bit "
                            f"integers, 0 to {bm.MAX_USER_ID}): {kinds}; nothing was sent")
    return stats


def _shown(value: object) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
    return str(value)


def _translate_all(plan: _Plan, selected: DataFrame, stats: dict[str, _Stats]) -> dict[str, _Stats]:
    """Keys, pass 1b: the executors translate every key (``add`` and ``replace`` create the new ones).

    Returns the stats with each segment's largest ID, which the parts follow.
    Translation is stable (a key's ID never changes), so the build pass finds
    the same IDs again without creating any.
    """
    highest: dict[str, int] = {}
    unknown = 0
    for row in selected.mapInArrow(partial(_translate_task, plan), _TRANSLATED).collect():
        name = str(row["segment"])
        unknown += int(row["unknown"])
        if row["hi"] is not None and int(row["hi"]) >= 0:
            highest[name] = max(highest.get(name, 0), int(row["hi"]))
    if unknown:
        log.info("segments %s: %d key(s) were never seen: they are in no segment, nothing to remove", plan.op,
                 unknown)
    return {name: _Stats(s.rows, highest.get(name)) for name, s in stats.items()}


def _partitions(plan: _Plan) -> int:
    """Check that the brokers answer with these settings and that the topic exists, before any work."""
    with plan.producer() as probe:
        return probe.partitions()


def _parallelism(spark: SparkSession) -> int:
    try:
        return int(spark.sparkContext.defaultParallelism)
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext
        return int(spark.conf.get("spark.sql.shuffle.partitions") or 200)


def _summarize(plan: _Plan, rows: dict[str, int], sent: list[tuple[str, int, int, int, int]],
               seconds: float) -> PushSummary:
    per: dict[str, list[tuple[int, int, int, int]]] = {}
    for name, part, users, size, messages in sent:
        per.setdefault(name, []).append((part, users, size, messages))
    if plan.op == "replace":
        expected = {(name, part) for name, count in plan.parts.items() for part in range(count)}
        got = [(name, part) for name, part, _, _, _ in sent]
        if set(got) != expected or len(got) != len(expected):
            missing = sorted(expected - set(got))[:3]
            raise RuntimeError(f"the send stage reported {len(got)} parts, expected {len(expected)} "
                               f"(missing e.g. {missing}); run the job again with batch={plan.batch!r}")
    segments = {}
    for name in sorted(rows):
        items = per.get(name, [])
        segments[name] = SegmentPush(name, rows[name], sum(u for _, u, _, _ in items),
                                     sum(m for _, _, _, m in items), sum(s for _, _, s, _ in items),
                                     plan.parts[name] if plan.op == "replace" else 0)
    return PushSummary(plan.op, plan.batch, plan.topic, sum(rows.values()), sum(s.users for s in segments.values()),
                       sum(s.messages for s in segments.values()), sum(s.bytes for s in segments.values()),
                       round(seconds, 3), segments)


@contextmanager
def _described(spark: SparkSession, text: str) -> Iterator[None]:
    """Name the Spark jobs of a phase in the Spark UI (not available under Spark Connect)."""
    try:
        context = spark.sparkContext
    except Exception:  # noqa: BLE001 - Spark Connect
        yield
        return
    context.setJobDescription(text)
    try:
        yield
    finally:
        cast(Any, context).setJobDescription(None)  # None clears it (the stubs say str)


@contextmanager
def _progress(spark: SparkSession, what: str, every: float) -> Iterator[None]:
    """Log the active stages' task counts every ``every`` seconds while the block runs."""
    try:
        tracker = spark.sparkContext.statusTracker()
    except Exception:  # noqa: BLE001 - Spark Connect
        yield
        return
    done = threading.Event()

    def report() -> None:
        while not done.wait(every):
            for stage in tracker.getActiveStageIds():
                info = tracker.getStageInfo(stage)
                if info is not None:
                    log.info("%s: stage %d (%s): %d/%d tasks done, %d running", what, stage, info.name,
                             info.numCompletedTasks, info.numTasks, info.numActiveTasks)

    thread = threading.Thread(target=report, name="segments-push-progress", daemon=True)
    if every > 0:
        thread.start()
    try:
        yield
    finally:
        done.set()


# --------------------------------------------------------------------------- executors


@contextmanager
def _key_table(plan: _Plan) -> Iterator[segments.Segments | None]:
    """The store connection whose key table translates this task's keys (None for integer IDs)."""
    if plan.store is None:
        yield None
        return
    with segments.connect(plan.store, cache_bytes=_KEY_CACHE_BYTES) as segs:
        yield segs


def _ids(plan: _Plan, table: segments.Segments | None, users: Any, create: bool) -> np.ndarray:
    """A batch's user column as int64 IDs; keys are translated (-1: a key never seen, when not creating)."""
    if users.null_count:
        raise (InvalidUserKey if table is not None else InvalidUserId)(_changed(f"{users.null_count} null users"))
    if table is None:
        return np.asarray(users.to_numpy(zero_copy_only=False), dtype=np.int64)
    encoded = users.dictionary_encode()
    distinct = [str(key) for key in encoded.dictionary.to_pylist()]
    found = table.keys.translate(distinct, create=create)
    lookup = np.array([-1 if uid is None else uid for uid in found], dtype=np.int64)
    return np.asarray(lookup[encoded.indices.to_numpy(zero_copy_only=False)], dtype=np.int64)


def _translate_task(plan: _Plan, batches: Iterable[Any]) -> Iterator[Any]:
    """One task of pass 1b: translate (and for add/replace create) its keys; per segment the largest ID."""
    highest: dict[str, int] = {}
    unknown: dict[str, int] = {}
    with _key_table(plan) as table:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            ids = _ids(plan, table, batch.column(0), create=plan.op != "remove")
            for name, values in _by_segment(plan, batch, ids):
                known = values[values >= 0]
                unknown[name] = unknown.get(name, 0) + int(values.size - known.size)
                if known.size:
                    highest[name] = max(highest.get(name, -1), int(known.max()))
    names = sorted(set(highest) | set(unknown))
    if names:
        yield pa.RecordBatch.from_arrays(
            [pa.array(names, pa.string()), pa.array([highest.get(n, -1) for n in names], pa.int64()),
             pa.array([unknown.get(n, 0) for n in names], pa.int64())], names=["segment", "hi", "unknown"])


def _build(plan: _Plan, batches: Iterable[Any]) -> Iterator[Any]:
    """One task of pass 2: its IDs as one bitmap per segment, cut into parts, as ``_PIECES`` rows."""
    members: dict[str, BitMap] = {}
    with _key_table(plan) as table:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            ids = _ids(plan, table, batch.column(0), create=False)  # pass 1b created the new keys
            _collect(plan, batch, ids, members)
    names: list[str] = []
    numbers: list[int] = []
    blobs: list[bytes] = []
    size = 0
    for name, bitmap in members.items():
        for number, piece in _cut(bitmap, plan.span):
            if number >= plan.parts[name]:
                raise InvalidUserId(_changed(f"segment {name!r} has an ID beyond part {plan.parts[name] - 1}"))
            piece.run_optimize()
            names.append(name)
            numbers.append(number)
            blobs.append(bm.serialize(piece))
            size += len(blobs[-1])
            if size >= _BATCH_BYTES:
                yield _pieces(names, numbers, blobs)
                names, numbers, blobs, size = [], [], [], 0
    if names:
        yield _pieces(names, numbers, blobs)


def _collect(plan: _Plan, batch: Any, ids: np.ndarray, members: dict[str, BitMap]) -> None:
    """OR one batch's IDs into the task's bitmap of each segment."""
    for name, values in _by_segment(plan, batch, ids):
        if plan.store is not None and values.size and values.min() < 0:
            if plan.op != "remove":
                raise InvalidUserKey(_changed(f"segment {name!r} has a key the translation pass did not create"))
            values = values[values >= 0]  # a key never seen is in no segment: nothing to remove
        try:
            piece = bm.from_ids(values)
        except InvalidUserId as exc:
            raise InvalidUserId(_changed(str(exc))) from exc
        if name in members:
            members[name] |= piece
        else:
            members[name] = piece


def _changed(what: str) -> str:
    return (f"the DataFrame changed between the validation pass and the build pass ({what}); nothing of "
            "this task was sent: make the DataFrame deterministic, or cache() it, and run the job again")


def _by_segment(plan: _Plan, batch: Any, ids: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """Split one Arrow batch's IDs by segment."""
    if plan.segment is not None:
        yield plan.segment, ids
        return
    names = batch.column(1)
    if names.null_count:
        raise InvalidSegmentName(_changed(f"{names.null_count} rows have a null segment"))
    encoded = names.dictionary_encode()
    dictionary = [str(name) for name in encoded.dictionary.to_pylist()]
    for name in dictionary:
        if name not in plan.parts:
            raise InvalidSegmentName(_changed(f"segment {name[:130]!r} was not in the validation pass"))
    if len(dictionary) == 1:
        yield dictionary[0], ids
        return
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    ends = np.cumsum(np.bincount(codes, minlength=len(dictionary)))
    grouped = ids[order]
    start = 0
    for name, end in zip(dictionary, ends.tolist()):
        if end > start:
            yield name, grouped[start:end]
        start = end


def _cut(bitmap: BitMap, span: int) -> Iterator[tuple[int, BitMap]]:
    """The non-empty parts of a bitmap: part ``k`` is shards ``[k*span, (k+1)*span)``."""
    width = span << bm.SHARD_BITS
    for number in sorted({shard // span for shard in bm.shards_of(bitmap)}):
        start = number * width
        piece = BitMap()
        piece.add_range(start, min(start + width, bm.MAX_USER_ID + 1))
        piece &= bitmap
        yield number, piece


def _pieces(names: list[str], numbers: list[int], blobs: list[bytes]) -> Any:
    return pa.RecordBatch.from_arrays(
        [pa.array(names, pa.string()), pa.array(numbers, pa.int32()), pa.array(blobs, pa.binary())],
        names=["segment", "part", "ids"])


def _send(plan: _Plan, batches: Iterable[Any]) -> Iterator[Any]:
    """One task of the send stage: union each owned part's pieces (sorted by part), produce it, flush."""
    producer: SegmentProducer | None = None
    current: tuple[str, int] | None = None
    members = BitMap()
    sent: list[tuple[str, int, int, int, int]] = []

    def flush_part() -> None:
        nonlocal producer
        if current is None:
            return
        name, number = current
        if not members and plan.op != "replace":
            return
        members.run_optimize()
        if plan.op == "replace":
            message = roaring_message("replace", name, members, batch=plan.batch, part=number,
                                      parts=plan.parts[name])
        else:
            message = roaring_message(plan.op, name, members)
        if len(message.value) > plan.max_message_bytes:  # cannot happen: shards_per_message bounds it
            raise RuntimeError(f"part {number} of {name!r} is {len(message.value)} bytes, over "
                               f"{plan.max_message_bytes}")
        if producer is None:
            producer = plan.producer()
        producer.publish([message], wait=False)
        sent.append((name, number, len(members), len(message.value), 1))

    for batch in batches:
        names = batch.column(0).to_pylist()
        numbers = batch.column(1).to_pylist()
        blobs = batch.column(2).to_pylist()
        for name, number, blob in zip(names, numbers, blobs):
            key = (str(name), int(number))
            if key != current:
                flush_part()
                current, members = key, BitMap()
            if blob is not None:
                members |= bm.deserialize(blob)
    flush_part()
    if producer is not None:
        producer.flush()  # DeliveryError fails the task; Spark runs it again
        log.info("segments %s: a task sent %d part(s) to %s", plan.op, len(sent), plan.topic)
    if sent:
        yield pa.RecordBatch.from_arrays(
            [pa.array([s[0] for s in sent], pa.string()), pa.array([s[1] for s in sent], pa.int32()),
             pa.array([s[2] for s in sent], pa.int64()), pa.array([s[3] for s in sent], pa.int64()),
             pa.array([s[4] for s in sent], pa.int32())],
            names=["segment", "part", "users", "bytes", "messages"])


__all__ = ["INTEGER_TYPES", "PushSummary", "SegmentPush", "push_dataframe", "push_memberships"]
