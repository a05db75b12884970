"""DataFrames pushed from a local Spark through the real broker and consumer: the store equals the DataFrame.

Expected bitmaps are computed with numpy from the same formulas the Spark
expressions use, never from Spark's output.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
from pyroaring import BitMap

import segments
from ingest.codec import DEFAULT_MAX_MESSAGE_BYTES, shards_per_message
from ingest.spark import push_dataframe, push_memberships
from tests.ingest.harness import unique
from tests.spark.support import IngestRun, bitmap_of, messages_in, report

pytestmark = pytest.mark.timeout(900)

ROWS = 10_000_000
#: most rows fall into 7M distinct users (so ~30% of rows are duplicates), spread by a multiplicative hash
#: over IDs 0 to 21M (every third ID): three parts per segment, each built from every task's rows
DENSE_USERS = 7_000_000
HASH = 2_654_435_761
SPREAD = 3
#: one row in SPARSE_EVERY goes to a sparse segment of high IDs: few non-empty parts, many empty ones
SPARSE_EVERY = 1000
SPARSE_BASE = 1_000_000_000
WIDTH = shards_per_message() << 16


def memberships(spark: Any, prefix: str) -> Any:
    """``ROWS`` rows of ``(user_id int, segment string)``: four segments, duplicates, one sparse segment."""
    from pyspark.sql import functions as F

    i = F.col("id")
    sparse = i % SPARSE_EVERY == 0
    user = F.when(sparse, F.lit(SPARSE_BASE) + i * 3).otherwise((i * HASH) % DENSE_USERS * SPREAD)
    segment = F.when(sparse, F.lit(f"{prefix}_sparse")).otherwise(
        F.concat(F.lit(f"{prefix}_q"), ((i * i) % 5).cast("string")))
    return spark.range(ROWS).select(user.cast("int").alias("user_id"), segment.alias("segment"))


def expected_memberships(prefix: str) -> dict[str, BitMap]:
    """The same rows in numpy, grouped by segment: the distinct IDs of each."""
    i = np.arange(ROWS, dtype=np.int64)
    sparse = i % SPARSE_EVERY == 0
    users = np.where(sparse, SPARSE_BASE + i * 3, (i * HASH) % DENSE_USERS * SPREAD)
    square = (i * i) % 5
    out = {f"{prefix}_sparse": bitmap_of(users[sparse])}
    for residue in np.unique(square[~sparse]).tolist():
        out[f"{prefix}_q{residue}"] = bitmap_of(users[~sparse & (square == residue)])
    return out


def test_ten_million_rows_of_several_segments_arrive_exactly(spark: Any, ingest: IngestRun,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    prefix = unique("big").replace("-", "_")
    df = memberships(spark, prefix)
    expected = expected_memberships(prefix)
    started = time.monotonic()
    summary = push_memberships(df, bootstrap_servers=ingest.broker.bootstrap_servers,
                               topic=ingest.topics.updates)
    pushed = time.monotonic() - started
    for name, members in expected.items():
        ingest.wait_for(name, len(members), timeout=300)
    visible = time.monotonic() - started
    report(capsys, f"\n{ROWS:,} rows -> {len(expected)} segments ({summary.users:,} users, {summary.messages} messages, "
          f"{summary.bytes / 1e6:.1f} MB): pushed in {pushed:.1f} s ({ROWS / pushed:,.0f} rows/s), "
          f"visible in the store after {visible:.1f} s ({ROWS / visible:,.0f} rows/s into visible segments)")

    for name, members in expected.items():
        assert ingest.members(name) == members, name
    assert summary.op == "replace" and summary.batch
    assert summary.rows == ROWS
    assert {n: s.users for n, s in summary.segments.items()} == {n: len(m) for n, m in expected.items()}
    # parts are the shard ranges up to each segment's largest ID, the empty ones included
    parts = {name: members.max() // WIDTH + 1 for name, members in expected.items()}
    assert {n: s.parts for n, s in summary.segments.items()} == parts
    assert summary.messages == sum(parts.values())
    sparse = summary.segments[f"{prefix}_sparse"]
    assert sparse.parts > 100 and len({i // WIDTH for i in expected[f"{prefix}_sparse"]}) < 10
    # on the topic: one message per part, each under the size limit, keyed by segment, one partition per key
    ours = [m for m in messages_in(ingest.broker, ingest.topics.updates)
            if (m.key() or b"").decode().startswith(prefix)]
    assert len(ours) == summary.messages
    assert sum(len(m.value() or b"") for m in ours) == summary.bytes
    assert max(len(m.value() or b"") for m in ours) <= DEFAULT_MAX_MESSAGE_BYTES
    partitions: dict[bytes, set[int]] = {}
    for m in ours:
        partitions.setdefault(m.key() or b"", set()).add(m.partition())
    assert all(len(p) == 1 for p in partitions.values()), partitions


def test_add_and_remove_from_every_integer_type(spark: Any, ingest: IngestRun) -> None:
    from pyspark.sql import types as T

    name = unique("typed").replace("-", "_")
    typed = {
        T.ByteType(): [0, 1, 2, 127, 1],
        T.ShortType(): [300, 32_767, 300],
        T.IntegerType(): [70_000, 2**31 - 1],
        T.LongType(): [2**32 - 1, 5_000_000_000 - 2**32],
    }
    model: set[int] = set()
    for kind, values in typed.items():
        df = spark.createDataFrame([(v,) for v in values], T.StructType([T.StructField("user_id", kind)]))
        summary = push_dataframe(df, name, op="add", bootstrap_servers=ingest.broker.bootstrap_servers,
                                 topic=ingest.topics.updates)
        model |= set(values)
        assert summary.batch is None and summary.rows == len(values) and summary.users == len(set(values))
    ingest.wait_for(name, len(model))
    assert ingest.members(name) == BitMap(model)

    gone = [1, 300, 2**32 - 1, 12_345]  # 12_345 is not a member: removing it changes nothing
    df = spark.createDataFrame([(v,) for v in gone], "user_id bigint")
    summary = push_dataframe(df, name, op="remove", bootstrap_servers=ingest.broker.bootstrap_servers,
                             topic=ingest.topics.updates)
    model -= set(gone)
    # IDs in two shard ranges (parts): two messages, sent by whichever tasks own them
    assert summary.messages == 2
    ingest.wait_for(name, len(model))
    assert ingest.members(name) == BitMap(model)

    # several segments at once, adding
    pairs = [(7, f"{name}_a"), (8, f"{name}_a"), (8, f"{name}_b"), (7, f"{name}_a")]
    summary = push_memberships(spark.createDataFrame(pairs, "user_id long, segment string"), op="add",
                               bootstrap_servers=ingest.broker.bootstrap_servers, topic=ingest.topics.updates)
    assert {n: s.users for n, s in summary.segments.items()} == {f"{name}_a": 2, f"{name}_b": 1}
    ingest.wait_for(f"{name}_b", 1)
    ingest.wait_for(f"{name}_a", 2)
    assert ingest.members(f"{name}_a") == BitMap([7, 8]) and ingest.members(f"{name}_b") == BitMap([8])


def test_an_empty_dataframe_replace_empties_the_segment(spark: Any, ingest: IngestRun) -> None:
    name = unique("emptied").replace("-", "_")
    kwargs = {"bootstrap_servers": ingest.broker.bootstrap_servers, "topic": ingest.topics.updates}
    push_dataframe(spark.range(0, 1000, 7).withColumnRenamed("id", "user_id"), name, **kwargs)
    ingest.wait_for(name, len(range(0, 1000, 7)))
    summary = push_dataframe(spark.range(0).withColumnRenamed("id", "user_id"), name, **kwargs)
    assert (summary.rows, summary.users, summary.messages, summary.segments[name].parts) == (0, 0, 1, 1)
    ingest.wait_for(name, 0)


def test_a_replace_is_never_seen_half_done(spark: Any, ingest: IngestRun, capsys: pytest.CaptureFixture[str]) -> None:
    """A reader polling the segment during a multi-part replace sees the old or the new members only."""
    name = unique("swap").replace("-", "_")
    kwargs = {"bootstrap_servers": ingest.broker.bootstrap_servers, "topic": ingest.topics.updates}
    top = 15_000_000  # 229 shards: three parts, all non-empty
    old, new = range(0, top, 5), range(7, top, 4)
    push_dataframe(spark.range(old.start, old.stop, old.step).withColumnRenamed("id", "user_id"), name,
                   **kwargs)
    ingest.wait_for(name, len(old))

    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        with segments.connect(ingest.store) as segs:
            while not stop.is_set():
                seen.append(segs.reach(name))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        summary = push_dataframe(spark.range(new.start, new.stop, new.step).withColumnRenamed("id", "user_id"),
                                 name, **kwargs)
        ingest.wait_for(name, len(new))
        time.sleep(0.2)
    finally:
        stop.set()
        reader.join(30)
    assert summary.segments[name].parts == 3 and summary.messages == 3
    assert set(seen) <= {len(old), len(new)}, sorted(set(seen) - {len(old), len(new)})[:5]
    assert seen[0] == len(old) and seen[-1] == len(new)
    report(capsys, f"\n{len(seen)} reads during the replace: {seen.count(len(old))} old, {seen.count(len(new))} new")
    assert ingest.members(name) == BitMap(new)
