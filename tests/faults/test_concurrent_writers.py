"""Concurrent writers on the same segments, through the API and through Kafka at once.

Three processes add to and remove from the same three segments through
``segments serve`` (httpx), while a Kafka producer streams adds and removes
for the same segments into ``segments ingest``; both processes write to the
same store (Aerospike: the test server, or the real cluster named by
``SEGMENTS_TEST_AEROSPIKE``). Every writer owns a disjoint ID range and
removes only IDs it added itself, so the final membership is determined
whatever the interleaving. A thread polls ``GET /v1/segments`` throughout.

Asserted:

* the final members equal the union of every writer's model;
* no update was lost or applied twice: every write changes membership, so a
  segment's final version equals the number of writes applied to it, and the
  versions handed out (the API's responses plus the consumer's applied
  writes) are exactly 1..final, each once;
* each writer saw its own versions strictly increase, and the poller never saw
  a version go down nor membership change without a new version.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import segments
from tests.faults import workers
from tests.faults.conftest import HEAVY, VersionWatch
from tests.ingest.harness import (
    IngestProcess,
    Raw,
    applied_writes,
    new_topics,
    produce,
    store_contents,
    wait_caught_up,
)
from tests.support.api_server import start_api_server
from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.timeout(240)

API_WRITERS = 3
KAFKA_WRITER = API_WRITERS  # its writer number: its own ID range
STEPS = 400 if HEAVY else 120
SEED = 20240620


def test_api_and_kafka_writers_on_the_same_segments(
    broker: KafkaBroker,  # noqa: F811
    aerospike_target: object,
    tmp_path: Path,
) -> None:
    from tests.support.aerospike_fixture import AerospikeTarget, aerospike_url

    assert isinstance(aerospike_target, AerospikeTarget)
    store = aerospike_url(aerospike_target)
    topics = new_topics(broker)
    kafka_ops = workers.plan(KAFKA_WRITER, STEPS, SEED)
    messages: list[Raw] = [
        (name.encode(), json.dumps({"op": op, "segment": name, "ids": ids}).encode(), [])
        for op, name, ids in kafka_ops
    ]
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()  # its Event can be handed to pool workers
    start = manager.Event()
    sent: list[int] = []
    produce_errors: list[BaseException] = []

    def kafka_writer() -> None:
        try:
            start.wait(60)
            for i in range(0, len(messages), 5):  # small chunks, so the writes interleave with the API's
                produce(broker, topics.updates, messages[i : i + 5])
                sent.append(i)
                time.sleep(0.02)
        except BaseException as exc:
            produce_errors.append(exc)

    with start_api_server(store) as api:
        consumer = IngestProcess(
            broker, topics, store, tmp_path / "ingest.log", extra=["--batch-max-wait", "0.05"]
        )
        watch = VersionWatch(api.base_url).start()
        try:
            with context.Pool(API_WRITERS) as pool:
                pending = [
                    pool.apply_async(workers.api_writer, (api.base_url, w, STEPS, SEED, start))
                    for w in range(API_WRITERS)
                ]
                producer = threading.Thread(target=kafka_writer, name="kafka-writer")
                producer.start()
                time.sleep(0.5)  # let the pool's workers import and reach the start line
                start.set()
                results = [p.get(timeout=180) for p in pending]
                producer.join(120)
            assert not produce_errors, produce_errors
            ends = {0: len(messages)}
            wait_caught_up(broker, topics, ends, consumer, timeout=120)
        finally:
            watch.stop()
            manager.shutdown()
            code = consumer.stop()
        assert code == 0
        log = consumer.log()

    # final state == the union of every writer's model
    model: dict[str, set[int]] = {name: set() for name in workers.SEGMENTS}
    for part in [workers.expected(r["ops"]) for r in results] + [workers.expected(kafka_ops)]:
        for name, ids in part.items():
            model[name] |= ids
    assert store_contents(store) == model

    # versions: every write got its own version; none lost, none repeated
    consumer_versions: dict[str, list[int]] = {name: [] for name in workers.SEGMENTS}
    for w in applied_writes(log):
        consumer_versions[w["segment"]].append(int(w["version"]))
    with segments.connect(store) as segs:
        infos = {info.name: info for info in segs.infos()}
    for name in workers.SEGMENTS:
        api_versions = [v for r in results for v in r["versions"][name]]
        handed_out = Counter(api_versions + consumer_versions[name])
        assert max(handed_out.values()) == 1, f"{name}: a version was handed out twice"
        assert sorted(handed_out) == list(range(1, infos[name].version + 1)), f"{name}: versions have a gap"
        assert infos[name].cardinality == len(model[name])
        for r in results:
            own = r["versions"][name]
            assert own == sorted(own) and len(set(own)) == len(own), (
                f"writer {r['writer']} saw {name} go back"
            )

    # the poller: versions never went down, membership never changed without a new version
    assert watch.errors == [], watch.errors[:5]
    assert watch.polls > 10
    for name in workers.SEGMENTS:
        seen = [v for v, _ in watch.seen.get(name, [])]
        assert seen == sorted(seen) and len(seen) > 1, name

    retries = Counter[str]()
    for r in results:
        retries.update(r["retries"])
    writes = sum(len(v) for r in results for v in r["versions"].values())
    print(
        f"\n[concurrent writers] {API_WRITERS} API processes ({writes} writes, retried after 409: "
        f"{retries['409']}, after 503: {retries['503']}) + Kafka ({len(messages)} messages, "
        f"{sum(len(v) for v in consumer_versions.values())} consumer writes) on "
        f"{len(workers.SEGMENTS)} segments; final versions "
        f"{ {n: infos[n].version for n in workers.SEGMENTS} } = writes applied, each version once; "
        f"{watch.polls} polls saw versions only go up; store == model"
    )
