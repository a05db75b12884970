"""String user keys pushed from Spark: the executors translate them through the store's key table.

The store is the consumer's SQLite file, which the executors open too (the way
a job would open the service's Aerospike). Expected members are the keys
computed in Python, translated by the test through the same table (reads
only: a read never allocates).
"""

from __future__ import annotations

from typing import Any

import pytest
from pyroaring import BitMap

import segments
from ingest.spark import push_dataframe, push_memberships
from segments.errors import InvalidUserKey
from tests.ingest.harness import unique
from tests.spark.support import IngestRun, high_watermarks, report

pytestmark = pytest.mark.timeout(600)

ROWS = 150_000
CUSTOMERS = 60_000  # so most customers appear two or three times


def translated(store: str, keys: list[str]) -> BitMap:
    """The IDs the key table holds for ``keys``; every one must be there."""
    with segments.connect(store) as segs:
        ids = segs.keys.translate(keys)
    assert None not in ids, f"{ids.count(None)} keys have no ID"
    return BitMap([i for i in ids if i is not None])


def test_keys_of_several_segments_are_translated_once_and_arrive_exactly(
        spark: Any, ingest: IngestRun, capsys: pytest.CaptureFixture[str]) -> None:
    from pyspark.sql import functions as F

    prefix = unique("keyed").replace("-", "_")
    i = F.col("id")
    df = spark.range(ROWS).select(
        F.concat(F.lit(f"{prefix}-cust-"), (i * 7919 % CUSTOMERS).cast("string")).alias("customer"),
        F.concat(F.lit(f"{prefix}_s"), (i % 3).cast("string")).alias("segment"))
    summary = push_memberships(df, user_column="customer", store=ingest.store,
                               bootstrap_servers=ingest.broker.bootstrap_servers, topic=ingest.topics.updates)
    expected_keys = {f"{prefix}_s{s}": sorted({f"{prefix}-cust-{r * 7919 % CUSTOMERS}" for r in range(s, ROWS, 3)})
                     for s in range(3)}
    for name, keys in expected_keys.items():
        ingest.wait_for(name, len(keys))
    for name, keys in expected_keys.items():
        assert ingest.members(name) == translated(ingest.store, keys), name
        assert summary.segments[name].users == len(keys)
    everyone = sorted({k for keys in expected_keys.values() for k in keys})
    assert len(everyone) == CUSTOMERS and len(translated(ingest.store, everyone)) == CUSTOMERS  # one ID per key
    report(capsys, f"\n{ROWS:,} rows of {CUSTOMERS:,} keys in 3 segments: pushed in {summary.seconds:.1f} s")

    # remove by key: known keys leave the segment, keys never seen are skipped and get no ID
    name = f"{prefix}_s0"
    gone = expected_keys[name][:1000]
    never = [f"{prefix}-never-{n}" for n in range(50)]
    rows = spark.createDataFrame([(k,) for k in gone + never], "customer string")
    push_dataframe(rows, name, column="customer", op="remove", store=ingest.store,
                   bootstrap_servers=ingest.broker.bootstrap_servers, topic=ingest.topics.updates)
    left = expected_keys[name][1000:]
    ingest.wait_for(name, len(left))
    assert ingest.members(name) == translated(ingest.store, left)
    with segments.connect(ingest.store) as segs:
        assert segs.keys.translate(never) == [None] * len(never)


def test_bad_keys_are_refused_before_anything_is_sent_or_allocated(spark: Any, ingest: IngestRun) -> None:
    prefix = unique("badkeys")
    good = [f"{prefix}-{n}" for n in range(5)]
    rows = [(k,) for k in good] + [(None,), ("",), ("x" * 257,), ("tab\there",), ("é" * 129,)]
    df = spark.createDataFrame(rows, "customer string")
    before = high_watermarks(ingest.broker, ingest.topics.updates)
    with pytest.raises(InvalidUserKey) as caught:
        push_dataframe(df, "keyed", column="customer", store=ingest.store,
                       bootstrap_servers=ingest.broker.bootstrap_servers, topic=ingest.topics.updates)
    assert str(caught.value) == (
        "column 'customer': 5 of 10 rows are not user keys (1-256 bytes of UTF-8 without control characters): "
        "1 null, 1 empty, 2 longer than 256 bytes (e.g. 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'...), "
        "1 with a control character (e.g. 'tab\\there'); nothing was sent")
    assert high_watermarks(ingest.broker, ingest.topics.updates) == before
    with segments.connect(ingest.store) as segs:
        assert segs.keys.translate(good) == [None] * len(good)  # nothing was allocated either
