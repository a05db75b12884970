"""A Spark job as a batch system runs it: ``python -m tests.spark.job '<json arguments>'``.

Starts Spark on ``local[1]`` (one task at a time, so the send stage's tasks
run one after another), waits for the file ``go`` to appear, then replaces
``segment`` with :func:`sparse_ids` through :func:`ingest.spark.push_dataframe`,
one send task per part. It prints ``SENT <summary as JSON>`` when done. The
kill test SIGKILLs it half-way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ingest.codec import shards_per_message

#: the job's segment spans this many parts, a few IDs in each
PARTS = 60
PER_PART = 40
#: the distance between two IDs: PER_PART of them per part
STEP = (shards_per_message() << 16) // PER_PART


def sparse_ids(spark: Any) -> Any:
    """``PER_PART`` IDs in each of the first ``PARTS`` shard ranges, as a ``user_id`` column."""
    from pyspark.sql import functions as F

    return spark.range(PARTS * PER_PART).select((F.col("id") * STEP + 11).alias("user_id"))


def main(arguments: dict[str, Any]) -> None:
    from ingest.spark import push_dataframe
    from tests.spark.support import start_spark

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    spark = start_spark("local[1]")
    go = Path(arguments["go"])
    deadline = time.monotonic() + 300
    while not go.exists():  # the test prepares the segment while the JVM starts, then says go
        if time.monotonic() > deadline:
            raise SystemExit(f"{go} did not appear")
        time.sleep(0.02)
    try:
        summary = push_dataframe(sparse_ids(spark), arguments["segment"], batch=arguments["batch"],
                                 bootstrap_servers=arguments["bootstrap_servers"], topic=arguments["topic"],
                                 send_tasks=PARTS, progress_seconds=1)
    finally:
        spark.stop()
    print("SENT " + json.dumps(dataclasses.asdict(summary)), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
