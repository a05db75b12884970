"""Bad input is refused on the driver with a precise error, before anything is sent.

Every case checks the topic's high watermarks: they do not move.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ingest.spark import push_dataframe, push_memberships
from segments.errors import InvalidSegmentName, InvalidUserId
from tests.ingest.harness import new_topics
from tests.spark.support import high_watermarks, messages_in
from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def topic(broker: KafkaBroker) -> Iterator[str]:
    """The module's topic; at the end it must hold no message at all."""
    name = new_topics(broker, partitions=2).updates
    yield name
    assert messages_in(broker, name) == []


def refused(broker: KafkaBroker, topic: str, push: Any, error: type[Exception]) -> str:
    """Run ``push``; it must raise ``error`` and leave the topic as it was. Returns the message."""
    before = high_watermarks(broker, topic)
    with pytest.raises(error) as caught:
        push(bootstrap_servers=broker.bootstrap_servers, topic=topic)
    assert high_watermarks(broker, topic) == before
    return str(caught.value)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, None, 2, None], "2 of 4 rows are not user IDs (unsigned 32-bit integers, 0 to 4294967295): 2 null"),
        ([5, -1, -7, 3], "2 of 4 rows are not user IDs (unsigned 32-bit integers, 0 to 4294967295): "
                         "2 negative (e.g. -7)"),
        ([2**40, 1, 2**32], "2 of 3 rows are not user IDs (unsigned 32-bit integers, 0 to 4294967295): "
                            "2 >= 2**32 (e.g. 4294967296)"),
        ([None, -3, 2**32, 9], "3 of 4 rows are not user IDs (unsigned 32-bit integers, 0 to 4294967295): "
                               "1 null, 1 negative (e.g. -3), 1 >= 2**32 (e.g. 4294967296)"),
    ],
    ids=["null", "negative", "too-large", "mixed"],
)
def test_bad_ids_are_counted_and_refused(spark: Any, broker: KafkaBroker, topic: str, values: list[int | None],
                                         expected: str) -> None:
    df = spark.createDataFrame([(v,) for v in values], "uid bigint")
    message = refused(broker, topic, lambda **kw: push_dataframe(df, "seg", column="uid", **kw), InvalidUserId)
    assert message == f"column 'uid': {expected}; nothing was sent"


def test_bad_ids_among_ten_million_are_found(spark: Any, broker: KafkaBroker, topic: str) -> None:
    """One bad row in a large DataFrame of several segments is enough to refuse it all."""
    from pyspark.sql import functions as F

    i = F.col("id")
    user = F.when(i == 6_543_210, F.lit(-42)).otherwise(i)
    df = spark.range(10_000_000).select(user.alias("user_id"), F.concat(F.lit("s"), (i % 3).cast("string"))
                                        .alias("segment"))
    message = refused(broker, topic, lambda **kw: push_memberships(df, **kw), InvalidUserId)
    assert "1 of 10000000 rows are not user IDs" in message and "1 negative (e.g. -42)" in message


def test_bad_segment_names_and_null_segments_are_refused(spark: Any, broker: KafkaBroker, topic: str) -> None:
    df = spark.createDataFrame([(1, "ok"), (2, "bad-name"), (3, None), (4, "x" * 129), (5, None)],
                               "user_id long, segment string")
    message = refused(broker, topic, lambda **kw: push_memberships(df, **kw), InvalidSegmentName)
    assert message.startswith("column 'segment': 2 row(s) have a null segment; 2 segment name(s) are invalid "
                              "(e.g. 'bad-name', 'xxxx")
    assert message.endswith("nothing was sent")
    with pytest.raises(InvalidSegmentName):
        push_dataframe(df, "no-dashes", bootstrap_servers=broker.bootstrap_servers, topic=topic)


def test_wrong_column_types_and_arguments_are_refused(spark: Any, broker: KafkaBroker, topic: str) -> None:
    df = spark.createDataFrame([(1.5, "k1", 1, "s")], "f double, key string, user_id long, segment string")
    assert "column 'f' is double; user IDs must be a Spark integer type" in refused(
        broker, topic, lambda **kw: push_dataframe(df, "seg", column="f", **kw), TypeError)
    assert "pass store=" in refused(broker, topic, lambda **kw: push_dataframe(df, "seg", column="key", **kw),
                                    ValueError)
    assert "no column 'missing'" in refused(
        broker, topic, lambda **kw: push_dataframe(df, "seg", column="missing", **kw), ValueError)
    assert "column 'user_id' is bigint; segment names must be a string column" in refused(
        broker, topic, lambda **kw: push_memberships(df, segment_column="user_id", **kw), TypeError)
    assert "op must be" in refused(broker, topic, lambda **kw: push_dataframe(df, "seg", op="upsert", **kw),
                                   ValueError)
    assert "batch must be" in refused(broker, topic, lambda **kw: push_dataframe(df, "seg", batch="a b", **kw),
                                      ValueError)
    assert "only replace takes a batch id" in refused(
        broker, topic, lambda **kw: push_dataframe(df, "seg", op="add", batch="b1", **kw), ValueError)


def test_a_missing_topic_is_refused_before_any_work(spark: Any, broker: KafkaBroker) -> None:
    from confluent_kafka import KafkaException

    df = spark.createDataFrame([(1,)], "user_id long")
    with pytest.raises(KafkaException, match="no-such-topic"):
        push_dataframe(df, "seg", bootstrap_servers=broker.bootstrap_servers, topic="no-such-topic")
