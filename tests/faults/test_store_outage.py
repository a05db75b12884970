"""Store outage while the API serves and the consumer ingests: 503 + Retry-After, no commit, self-recovery.

Set-up: a private Aerospike server (the test stops it): the test server, or
under ``make test-aerospike`` a real node from the server kit, stopped and
started with the kit's scripts; ``segments serve`` and ``segments ingest`` both
on it, a tansu broker, a producer thread streaming adds and removes of known
IDs, and a reader thread sending every kind of read to the API in a loop.
Mid-stream the Aerospike server is stopped for a few seconds, then started
again; nobody touches the API or the consumer. The expectations are the same on
both servers; a real node takes about 3 s to start, so its outage is longer.

Observed and asserted:

* during the outage every store-backed request (reach, info, list, membership,
  user lookup, a write, ``/readyz``) answers 503 with ``Retry-After``; none
  answers 500, none answers 200 from a cache (the API has no labelled stale
  answers, so a 200 would be an unlabelled stale one); ``/healthz`` stays 200;
* the 503s are logged as JSON lines carrying the request's ``X-Request-ID``;
* the consumer reports the store down, keeps running and commits no offset
  while the store is down;
* after the restart both recover on their own: ``/readyz`` is 200 again and
  the consumer catches up to the end of the topic;
* the write refused during the outage left no trace, and the store equals the
  set model of everything produced (members and cardinalities, through the
  library and through the API).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

import segments
from tests.faults.conftest import HEAVY, api_snapshot, retry_after_ok, wait_for
from tests.ingest.harness import (
    Delivered,
    IngestProcess,
    Raw,
    SetModel,
    broker,  # noqa: F401 - fixture
    committed,
    free_port,
    new_topics,
    produce,
    store_contents,
    wait_caught_up,
    wait_until,
)
from tests.support.api_server import start_api_server
from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.timeout(240)

SEGMENTS = 4
OUTAGE_SECONDS = 8.0 if HEAVY else 4.0
#: the read kinds the reader thread cycles through: (kind, method, path, body)
READS: list[tuple[str, str, str, object]] = [
    ("reach", "POST", "/v1/reach", {"expr": "(s0 | s1) & ~s2"}),
    ("info", "GET", "/v1/segments/s0", None),
    ("list", "GET", "/v1/segments", None),
    ("member", "GET", "/v1/segments/s1/members/7", None),
    ("user", "GET", "/v1/users/7/segments", None),
    ("readyz", "GET", "/readyz", None),
    ("healthz", "GET", "/healthz", None),
]


def message(i: int) -> Raw:
    """Message ``i``: adds three fresh IDs to ``s{i % 4}``; every 5th removes those of message i-8."""
    name = f"s{i % SEGMENTS}"
    if i % 5 == 4 and i >= 8:
        body = {"op": "remove", "segment": name, "ids": [3 * (i - 8), 3 * (i - 8) + 1]}
    else:
        body = {"op": "add", "segment": name, "ids": [3 * i, 3 * i + 1, 3 * i + 2, 7]}
    return name.encode(), json.dumps(body).encode(), []


@dataclass
class Stream:
    """Produces small batches of :func:`message` in a thread until stopped."""

    broker: KafkaBroker
    topic: str
    sent: list[Raw] = field(default_factory=list)
    delivered: Delivered = field(default_factory=Delivered)
    stop_event: threading.Event = field(default_factory=threading.Event)
    failure: list[BaseException] = field(default_factory=list)

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                batch = [message(len(self.sent) + k) for k in range(10)]
                self.delivered.offsets += produce(self.broker, self.topic, batch).offsets
                self.sent += batch
                self.stop_event.wait(0.05)
        except BaseException as exc:  # reported by the test
            self.failure.append(exc)


@dataclass
class Reads:
    """Cycles through :data:`READS`; each answer is recorded with when it started and ended."""

    base_url: str
    results: list[tuple[float, float, str, int, bool, str]] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    transport_errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self.stop_event.is_set():
                for kind, method, path, body in READS:
                    started = time.monotonic()
                    try:
                        response = client.request(method, path, json=body)
                    except httpx.HTTPError as exc:
                        self.transport_errors.append(f"{kind}: {exc!r}")
                        continue
                    self.results.append(
                        (started, time.monotonic(), kind, response.status_code, retry_after_ok(response),
                         response.headers.get("x-request-id", ""))
                    )  # fmt: skip
                self.stop_event.wait(0.02)


def test_store_outage_api_503_consumer_pauses_both_recover(
    broker: KafkaBroker,  # noqa: F811
    aerospike_server: object,
    tmp_path: Path,
) -> None:
    from tests.support.aerospike_fixture import AerospikeTarget, aerospike_url

    assert isinstance(aerospike_server, AerospikeTarget)
    server = aerospike_server.require_server()
    store = aerospike_url(
        aerospike_server,
        None,
        timeout_ms=300,
        write_timeout_ms=500,
        batch_timeout_ms=800,
        connect_timeout_s=1,
    )
    with segments.connect(store) as segs:
        segs.replace("all", range(0, 1_000_000))
    topics = new_topics(broker)
    metrics_port = free_port()
    stream = Stream(broker, topics.updates)
    producer = threading.Thread(target=stream.run, name="producer", daemon=True)

    with start_api_server(store, args=["--lookup-staleness", "0", "--log-level", "info"]) as api:
        consumer = IngestProcess(
            broker, topics, store, tmp_path / "ingest.log", metrics_port=metrics_port,
            extra=["--batch-max-wait", "0.2"],
        )  # fmt: skip
        reads = Reads(api.base_url)
        reader = threading.Thread(target=reads.run, name="reader", daemon=True)
        try:
            producer.start()
            reader.start()
            wait_until(lambda: len(stream.sent) >= 100, 60, "the first 100 messages")
            wait_until(
                lambda: committed(broker, topics.group, topics.updates, 1)[0] > 0,
                60,
                "a first commit",
                consumer,
            )

            # --- the outage ---------------------------------------------------------------
            server.stop()
            down_at = time.monotonic()
            wait_until(
                lambda: consumer.metrics().get("segments_ingest_store_up") == 0.0,
                30, "the consumer to notice the outage", consumer,
            )  # fmt: skip
            before = committed(broker, topics.group, topics.updates, 1)[0]
            with httpx.Client(base_url=api.base_url, timeout=30) as client:
                refused_write = client.post("/v1/segments/api_probe/add", json={"ids": [424242]})
            time.sleep(OUTAGE_SECONDS)
            during = committed(broker, topics.group, topics.updates, 1)[0]
            produced_during = len(stream.sent)
            assert consumer.alive, consumer.log()[-3000:]
            up_at = time.monotonic()
            server.start()

            # --- recovery: nobody touches the API or the consumer ---------------------------
            wait_for(lambda: httpx.get(f"{api.base_url}/readyz", timeout=10).status_code == 200, 60,
                     "the API to report ready again")  # fmt: skip
            api_recovered = time.monotonic() - up_at
            wait_until(lambda: len(stream.sent) >= produced_during + 100, 60, "100 messages after the outage")
        finally:
            stream.stop_event.set()
            reads.stop_event.set()
            producer.join(60)
            reader.join(60)
        assert not stream.failure, stream.failure
        try:
            wait_caught_up(broker, topics, stream.delivered.ends(), consumer, timeout=90)
            consumer_recovered = time.monotonic() - up_at
            assert consumer.metrics()["segments_ingest_store_up"] == 1.0
            store_errors = sum(  # the failed attempts (the metric's name changed once: accept both)
                v
                for k, v in consumer.metrics().items()
                if k.startswith(("segments_ingest_batch_retries_total", "segments_ingest_store_errors_total"))
            )
        finally:
            assert consumer.stop() == 0
        consumer_log = consumer.log()

        # the API during the outage: 503 + Retry-After for everything store-backed, never 500
        assert reads.transport_errors == []
        assert all(status != 500 for *_, status, _, _ in reads.results), "a 500 was answered"
        outage = [r for r in reads.results if r[0] >= down_at and r[1] <= up_at]
        for kind, *_ in READS:
            answers = [(status, retry) for _, _, k, status, retry, _ in outage if k == kind]
            assert answers, f"no {kind} request fell inside the outage"
            if kind == "healthz":
                assert {s for s, _ in answers} == {200}
            else:
                assert {s for s, _ in answers} == {503}, f"{kind} during the outage: {answers[:5]}"
                assert all(retry for _, retry in answers), f"{kind}: a 503 without Retry-After"
        assert refused_write.status_code == 503 and retry_after_ok(refused_write)
        assert refused_write.json()["error"]["code"] == "storage_unavailable"
        # recovered: from some point on, every kind of request answers 200 again
        failing_after = [r[1] for r in reads.results if r[0] > up_at and r[3] != 200]
        settled = max(failing_after, default=up_at)
        after = [r for r in reads.results if r[0] > settled]
        assert {r[2] for r in after} == {kind for kind, *_ in READS}, "too few answers after the recovery"
        assert all(r[3] == 200 for r in after)
        ready_gap = settled - (up_at + api_recovered)

        # 503s are logged as JSON lines with the request's ID
        log_lines = [json.loads(line) for line in api.output().splitlines() if line.startswith("{")]
        failed_ids = {rid for *_, status, _, rid in outage if status == 503}
        logged = {e.get("request_id") for e in log_lines if e.get("level") == "error"}
        assert failed_ids & logged, "no 503 request ID found on an error log line"
        assert "Traceback" not in api.output()

        # the consumer paused without committing, then caught up by itself
        assert during == before, f"committed {before} -> {during} while the store was down"
        assert store_errors >= 1
        assert "retrying in" in consumer_log and "Traceback" not in consumer_log

        # the store equals the set model; the refused write left nothing
        model = SetModel()
        model.apply_all(stream.sent, stream.delivered)
        contents = store_contents(store)
        assert "api_probe" not in contents
        assert {k: v for k, v in contents.items() if k != "all"} == model.members
        with httpx.Client(base_url=api.base_url, timeout=30) as client:
            snapshot = api_snapshot(client)
        for name, members in model.members.items():
            assert snapshot[name][0] == len(members)
            assert set(snapshot[name][2]) == members

    print(
        f"\n[store outage] {len(stream.sent)} messages ({produced_during} before the restart), "
        f"outage {up_at - down_at:.1f}s: {len(outage)} API answers during it, all 503 + Retry-After "
        f"(healthz 200); consumer committed nothing ({before} -> {during}), {store_errors:.0f} failed "
        f"attempts; after the store came back: /readyz 200 after {api_recovered:.2f}s, "
        + (
            f"the last 503 ended {settled - up_at:.2f}s after the restart "
            f"({max(0.0, ready_gap):.2f}s after /readyz said ready), "
            if failing_after
            else "no 503 after the restart, "
        )
        + f"consumer caught up after {consumer_recovered:.1f}s; store == model"
    )


def test_store_killed_under_api_and_ingest_writes_keeps_what_was_flushed(
    broker: KafkaBroker,  # noqa: F811
    aerospike_server: object,
    tmp_path: Path,
) -> None:
    """SIGKILL the store while the API and the consumer write; start it again on the same data.

    Acknowledged writes (a 200 from the API; a message whose offset the consumer committed) are in
    the store once its write buffer reached the device, within ``flush-max-ms``; a crash of the
    single node may lose those of the last flush interval (a real node with the default
    ``commit-to-device false`` and the test server alike; replication factor 2 keeps them on a
    second node). So: every API write acknowledged more than that before the kill is there; every
    message committed more than that before the kill is there; every message not committed
    before the kill is there too (it is consumed again); nothing is partial; no 500.
    """
    from tests.support.aerospike_fixture import AerospikeTarget, aerospike_url

    assert isinstance(aerospike_server, AerospikeTarget)
    server = aerospike_server.require_server()
    flush_s = aerospike_server.flush_max_ms / 1000 + 0.3  # and a margin for the flush itself
    store = aerospike_url(aerospike_server, None, timeout_ms=300, write_timeout_ms=500,
                          batch_timeout_ms=800, connect_timeout_s=1)  # fmt: skip
    topics = new_topics(broker)
    sent: list[Raw] = []
    delivered = Delivered()
    stop = threading.Event()
    commits: list[tuple[float, int]] = []  # (when, committed offset)
    api_answers: list[tuple[float, int, int, bool]] = []  # (returned at, id, status, Retry-After ok)

    def add_message(i: int) -> Raw:  # message i adds the fresh ID 10_000 + i: each one's effect is visible
        name = f"s{i % SEGMENTS}"
        return name.encode(), json.dumps({"op": "add", "segment": name, "ids": [10_000 + i]}).encode(), []

    def produce_stream() -> None:
        while not stop.is_set():
            batch = [add_message(len(sent) + k) for k in range(10)]
            delivered.offsets += produce(broker, topics.updates, batch).offsets
            sent.extend(batch)
            stop.wait(0.05)

    def watch_commits() -> None:
        while not stop.is_set():
            commits.append((time.monotonic(), committed(broker, topics.group, topics.updates, 1)[0]))
            stop.wait(0.05)

    with start_api_server(store, args=["--lookup-staleness", "0"]) as api:
        def api_writes() -> None:
            with httpx.Client(base_url=api.base_url, timeout=30) as client:
                n = 0
                while not stop.is_set():
                    answer = client.post("/v1/segments/api/add", json={"ids": [n]})
                    api_answers.append((time.monotonic(), n, answer.status_code, retry_after_ok(answer)))
                    n += 1
                    stop.wait(0.01)

        consumer = IngestProcess(broker, topics, store, tmp_path / "ingest.log", extra=["--batch-max-wait", "0.1"])
        threads = [threading.Thread(target=t, daemon=True) for t in (produce_stream, watch_commits, api_writes)]
        try:
            for thread in threads:
                thread.start()
            wait_until(lambda: committed(broker, topics.group, topics.updates, 1)[0] >= 100, 60,
                       "100 committed messages", consumer)  # fmt: skip
            time.sleep(0.7)  # writes acknowledged from here on may still be in the write buffer
            killed_at = time.monotonic()
            server.kill()
            time.sleep(1.0)  # the consumer and the API see the store gone
            committed_before_start = committed(broker, topics.group, topics.updates, 1)[0]
            server.start()  # the same data: what reached the device comes back
            started_at = time.monotonic()
            wait_for(lambda: httpx.get(f"{api.base_url}/readyz", timeout=10).status_code == 200, 60,
                     "the API to report ready again")  # fmt: skip
            produced = len(sent)
            wait_until(lambda: len(sent) >= produced + 100, 60, "100 messages after the restart")
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        wait_caught_up(broker, topics, delivered.ends(), consumer, timeout=90)
        assert consumer.stop() == 0
        log = consumer.log()
        contents = store_contents(store)  # every segment readable: none partial

    assert "Traceback" not in log
    assert all(status in (200, 503) for _, _, status, _ in api_answers), "an API write answered neither 200 nor 503"
    assert all(retry for _, _, status, retry in api_answers if status == 503), "a 503 without Retry-After"
    api_ids = contents.get("api", set())
    sure = [n for at, n, status, _ in api_answers if status == 200 and (at < killed_at - flush_s or at > started_at)]
    missing_api = [n for n in sure if n not in api_ids]
    assert missing_api == [], f"API writes acknowledged outside the last flush interval are gone: {missing_api[:10]}"
    window_api = [n for at, n, status, _ in api_answers if status == 200 and killed_at - flush_s <= at <= started_at]
    lost_api = sum(1 for n in window_api if n not in api_ids)

    durable_offset = max((offset for at, offset in commits if at < killed_at - flush_s), default=0)
    ingested = set().union(*(ids for name, ids in contents.items() if name != "api"))
    present = [10_000 + i in ingested for i in range(len(sent))]
    lost_messages = [i for i, here in enumerate(present) if not here]
    assert all(durable_offset <= i < committed_before_start for i in lost_messages), (
        f"messages lost outside [{durable_offset}, {committed_before_start}): committed more than a flush "
        f"interval before the kill, or never committed before it: {lost_messages[:10]}"
    )
    print(
        f"\n[store killed] {aerospike_server.description}: {len(sent)} messages, {len(api_answers)} API writes "
        f"({sum(1 for a in api_answers if a[2] == 503)} answered 503); lost by the kill, all within the last "
        f"flush interval: {lost_api} of {len(window_api)} API writes acknowledged in it, "
        f"{len(lost_messages)} of {committed_before_start - durable_offset} messages committed in it"
    )
