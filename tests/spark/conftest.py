"""Fixtures of the Spark tests (``make test-spark``): one local[2] SparkSession, one broker per module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.ingest.harness import broker  # noqa: F401 - fixture
from tests.spark.support import IngestRun, require_spark, running_consumer, spark_environment, start_spark
from tests.support.kafka_broker import KafkaBroker


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A ``local[2]`` SparkSession on the pyspark wheel (Java 17)."""
    require_spark()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in spark_environment().items():
            patch.setenv(key, value)
        session = start_spark()
        try:
            yield session
        finally:
            session.stop()


@pytest.fixture(scope="module")
def ingest(broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngestRun]:  # noqa: F811
    """A ``segments ingest`` subprocess with its own topic (2 partitions) and SQLite store."""
    with running_consumer(broker, tmp_path_factory.mktemp("spark-ingest")) as run:
        yield run

