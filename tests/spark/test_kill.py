"""A push killed half-way (SIGKILL of the Spark driver and everything it started) and run again with the
same batch id converges to the same result, and the half-sent replace is never visible."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pyroaring import BitMap

from ingest.producer import SegmentProducer
from ingest.spark import push_dataframe
from tests.ingest.harness import REPO, unique
from tests.spark.job import PARTS, PER_PART, STEP, sparse_ids
from tests.spark.support import IngestRun, messages_in, produced, report, spark_environment

pytestmark = pytest.mark.timeout(600)


def test_a_killed_push_run_again_with_its_batch_id_converges(spark: Any, ingest: IngestRun, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    began = time.monotonic()
    name = unique("killed").replace("-", "_")
    batch = unique("run7")
    bootstrap, topic = ingest.broker.bootstrap_servers, ingest.topics.updates
    log_path, go = tmp_path / "job.log", tmp_path / "go"
    arguments = {"segment": name, "batch": batch, "bootstrap_servers": bootstrap, "topic": topic, "go": str(go)}
    with log_path.open("wb") as log:
        job = subprocess.Popen([sys.executable, "-m", "tests.spark.job", json.dumps(arguments)], cwd=REPO,
                               env={**os.environ, **spark_environment()}, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            # while the job's Spark starts: the segment's current members, from the plain producer
            old = BitMap(range(100, 200))
            with SegmentProducer(bootstrap, topic=topic) as producer:
                producer.replace(name, old)
            ingest.wait_for(name, len(old))
            version = ingest.version(name)
            count_before = len(messages_in(ingest.broker, topic))
            before = produced(ingest.broker, topic)
            go.touch()
            deadline = time.monotonic() + 240
            while produced(ingest.broker, topic) == before:
                assert job.poll() is None, "the job ended before sending:\n" + log_path.read_text()[-4000:]
                assert time.monotonic() < deadline, "the job sent nothing in time:\n" + log_path.read_text()[-4000:]
                time.sleep(0.01)
        finally:
            os.killpg(job.pid, signal.SIGKILL)  # the driver, its JVM and the Python workers: one session
            job.wait(30)
    sent_before_kill = len(messages_in(ingest.broker, topic)) - count_before
    killed_at = time.monotonic() - began
    assert 0 < sent_before_kill < PARTS, log_path.read_text()[-4000:]
    assert "SENT " not in log_path.read_text()

    ingest.caught_up()
    assert ingest.members(name) == old and ingest.version(name) == version  # the half-sent replace is not visible

    summary = push_dataframe(sparse_ids(spark), name, batch=batch, bootstrap_servers=bootstrap, topic=topic)
    expected = BitMap(i * STEP + 11 for i in range(PARTS * PER_PART))
    assert summary.batch == batch and summary.messages == PARTS and summary.users == len(expected)
    ingest.wait_for(name, len(expected))
    ingest.caught_up()
    assert ingest.members(name) == expected
    report(capsys, f"\nkilled the job after {sent_before_kill} of {PARTS} parts ({killed_at:.1f} s in); run "
                   f"again with its batch id, converged {time.monotonic() - began:.1f} s in")
    assert ingest.version(name) == version + 1  # one replace, applied once: the duplicate parts were ignored
