"""Ingest throughput and freshness through a real broker into the store.

A tansu Kafka broker (``tests/support/kafka_broker.start_kafka_broker``, the
project's broker fixture), the public producer class
(``ingest.producer.SegmentProducer``) and the public consumer command
(``python -m segments ingest``) writing into a SQLite store.

Throughput: the topic is filled first (``add`` updates of unique random IDs
spread over four segments, about 200 updates, as binary roaring or as JSON
messages), then the consumer starts. The rate is the IDs applied divided by
the time from the consumer's partition assignment (the ``assigned`` line of
its info log, seen by polling the log file) to the moment the store's meta
records show every ID, so process start-up and the group join are not
counted while fetching, decoding, merging, writing and committing are.
``SEGMENTS_BATCH_MAX_IDS`` caps a batch at ~1/12 of the IDs, so the run takes
several batches.

Keys: :func:`keys_vs_ids` sends the same JSON ``add`` messages (100 users each) twice, once
with the users' integer IDs and once with their string user keys, into fresh topics and stores,
and measures both the same way; the keys run twice, once never seen (the consumer creates
every key) and once known (created in the store beforehand; the consumer's cache starts cold).
The issue's goal: keys at least half the IDs/s of the integer IDs.

Freshness: with the consumer idle and caught up, one new ID is produced
(``add``, waiting for the broker's acknowledgement) and ``Segments.reach``
is polled every millisecond until it reflects the ID.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import segments

from .datasets import bitmap_from_array
from .processes import ROOT, Log, stop
from .timing import Timing

if TYPE_CHECKING:
    from .__main__ import Config

#: ``consume(n, timeout)`` returns after ``n`` messages or ``timeout`` (the batch's max wait, 0.5 s by
#: default), so with fewer messages waiting every poll lasts the whole max wait; and tansu holds a fetch
#: for librdkafka's ``fetch.wait.max.ms`` (500 ms). Both are shortened for the throughput runs and for
#: the second freshness run.
SHORT_WAITS = {"SEGMENTS_BATCH_MAX_WAIT": "0.05", "SEGMENTS_KAFKA_OPTIONS": '{"fetch.wait.max.ms": "10"}'}
FAST_GROUP = {
    "session.timeout.ms": "2000",
    "heartbeat.interval.ms": "500",
    "broker.address.family": "v4",
}


class Consumer:
    """``python -m segments ingest`` as a subprocess."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        store: str,
        env: dict[str, str] | None = None,
        level: str = "warning",
    ) -> None:
        self.log = Path(tempfile.mkstemp(prefix="bench-ingest-", suffix=".log")[1])
        args = [
            sys.executable, "-m", "segments", "ingest", "--bootstrap-servers", bootstrap,
            "--topic", topic, "--dlq-topic", f"{topic}.dlq", "--group", f"bench-{uuid.uuid4().hex[:8]}",
            "--store", store, "--log-level", level, "--log-format", "text",
        ]  # fmt: skip
        for key, value in FAST_GROUP.items():
            args += ["-X", f"{key}={value}"]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")}
        environment.update(env or {})
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                args, cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT
            )

    def assigned(self) -> bool:
        """Whether the consumer logged its partition assignment (``--log-level info``)."""
        return " assigned " in self.log.read_text(errors="replace")

    def check(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"segments ingest exited:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        stop(self.process, 30)
        self.log.unlink(missing_ok=True)


def _cards(client: segments.Segments, names: list[str]) -> dict[str, int]:
    found = {info.name: info.cardinality for info in client.infos()}
    return {n: found.get(n, 0) for n in names}


def throughput(
    broker: Any, users: int, ids: int, encoding: str, seed: int, workdir: Path, log: Log
) -> dict[str, Any]:
    from ingest.producer import SegmentProducer

    topic = f"bench-{encoding}-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, 1)
    broker.create_topic(f"{topic}.dlq", 1)
    store = f"sqlite:///{workdir / f'{topic}.db'}"
    rng = np.random.default_rng([seed, 99, ids])
    members = rng.permutation(users)[:ids]
    segments_n = 4
    chunk = max(1000, ids // 200)  # ~200 updates: a stream of deltas, many batches
    names = [f"ingest_{i}" for i in range(segments_n)]
    started = time.perf_counter()
    messages = 0
    with SegmentProducer(broker.bootstrap_servers, topic=topic, encoding=encoding) as producer:  # type: ignore[arg-type]
        per = np.array_split(members, segments_n)
        for name, part in zip(names, per, strict=True):
            for start in range(0, len(part), chunk):
                sent = producer.send(
                    "add", name, bitmap_from_array(np.sort(part[start : start + chunk])), wait=False
                )
                messages += sent.messages
        producer.flush()
    produce_s = time.perf_counter() - started
    expect = {n: len(p) for n, p in zip(names, per, strict=True)}
    out = _consume(broker, topic, store, names, expect, max(100_000, ids // 12))
    log(
        f"  {encoding}: {ids:,} IDs in {messages} messages, {out['ids_per_s'] / 1e6:.2f}M IDs/s "
        f"(produced in {produce_s:.1f} s)"
    )
    return {"ids": ids, "messages": messages, "produce_seconds": produce_s, **out}


def _consume(
    broker: Any, topic: str, store: str, names: list[str], expect: dict[str, int], batch_ids: int,
    split: int | None = None, max_messages: int | None = None, cache_bytes: int | None = None,
) -> dict[str, Any]:
    """Run the consumer over a filled topic until the store holds ``expect``; the rate and its timeline.

    ``split``: also the rates before and after the store first holds that many IDs.
    """
    env = {"SEGMENTS_BATCH_MAX_IDS": str(batch_ids), **SHORT_WAITS}
    if max_messages is not None:  # small messages: a batch is every message of one poll (up to 10,000)
        env["SEGMENTS_BATCH_MAX_MESSAGES"] = str(max_messages)
    if cache_bytes is not None:
        env["SEGMENTS_CACHE_BYTES"] = str(cache_bytes)
    consumer = Consumer(broker.bootstrap_servers, topic, store, env, level="info")
    samples: list[tuple[float, int]] = []
    assigned_at: float | None = None
    try:
        client = segments.connect(store)
        deadline = time.monotonic() + 600
        while True:
            consumer.check()
            if assigned_at is None and consumer.assigned():
                assigned_at = time.perf_counter()
            try:
                seen = _cards(client, names)
            except segments.StorageError:
                seen = {}
            now = time.perf_counter()
            if seen:
                samples.append((now, sum(seen.values())))
                if all(seen.get(n) == c for n, c in expect.items()):
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"ingest did not finish: {seen} of {expect}")
            time.sleep(0.002)
        client.close()
    finally:
        consumer.stop()
    moving = [(t, n) for t, n in samples if n > 0]
    t1, n1 = moving[-1]
    if assigned_at is not None and assigned_at < moving[0][0]:
        t0, n0, since = assigned_at, 0, "partition assignment"
    else:  # no assignment line seen: count from the first visible write (overestimates)
        (t0, n0), since = moving[0], "first visible write"
    rate = (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")
    halves: dict[str, float] = {}
    if split is not None:
        ts, ns = next((t, n) for t, n in moving if n >= split)
        halves = {
            "first_ids_per_s": (ns - n0) / (ts - t0) if ts > t0 else float("nan"),
            "second_ids_per_s": (n1 - ns) / (t1 - ts) if t1 > ts else float("nan"),
        }
    return {
        **halves,
        "seconds": t1 - t0,
        "ids_per_s": rate,
        "counted_ids": n1 - n0,
        "counted_from": since,
        "batch_max_ids": batch_ids,
        "polls": len(samples),
        "progress": [(round(t - t0, 4), n) for t, n in moving][:400],
    }


def keys_vs_ids(
    broker: Any, users: int, seed: int, workdir: Path, log: Log, per_message: int = 100, rounds: int = 4
) -> dict[str, Any]:
    """The same JSON ``add`` messages with integer IDs and with user keys: IDs/s of each.

    Each topic holds ``rounds`` rounds of the same users, each round to its own segments. With
    keys, the first round's keys are new (the consumer creates them) and the later rounds' are
    known and in the consumer's translation cache (warm: the consumer runs with a 2 GiB cache
    budget, a quarter of it for translations); a third run has every key created in the store
    beforehand, so its first round reads them (cold cache). The rates of the first round and of
    the later ones are measured from the consumer's progress (the sum of the segments' sizes).
    """
    from ingest.producer import SegmentProducer

    rng = random.Random(seed)
    keys = list(dict.fromkeys(
        f"cust_{rng.getrandbits(48):012x}" if i % 2 else str(uuid.UUID(int=rng.getrandbits(128)))
        for i in range(users)
    ))
    chunks = [keys[i : i + per_message] for i in range(0, len(keys), per_message)]
    rows = [[f"keyed_{r}_{i}" for i in range(4)] for r in range(rounds)]
    names = [n for row in rows for n in row]
    expect = dict.fromkeys(names, 0)
    for row in rows:
        for number, chunk in enumerate(chunks):
            expect[row[number % len(row)]] += len(chunk)
    out: dict[str, Any] = {"users": len(keys), "per_message": per_message, "rounds": rounds,
                           "messages": rounds * len(chunks)}
    for run in ("ids", "keys", "keys created beforehand"):
        topic = f"bench-keys-{uuid.uuid4().hex[:8]}"
        broker.create_topic(topic, 1)
        broker.create_topic(f"{topic}.dlq", 1)
        store = f"sqlite:///{workdir / f'{topic}.db'}"
        if run == "keys created beforehand":
            with segments.connect(store) as client:
                client.keys.create(keys)
        with SegmentProducer(broker.bootstrap_servers, topic=topic, encoding="json") as producer:
            for row in rows:
                start = 0  # IDs dense from 0, like the translator's
                for number, chunk in enumerate(chunks):
                    name = row[number % len(row)]
                    if run == "ids":
                        producer.send("add", name, range(start, start + len(chunk)), wait=False)
                    else:
                        producer.send_keys("add", name, chunk, wait=False)
                    start += len(chunk)
            producer.flush()
        result = _consume(broker, topic, store, names, expect, len(keys), split=len(keys),
                          max_messages=max(20, len(chunks) // 10), cache_bytes=2 << 30)
        if run != "ids":
            with segments.connect(store) as client:  # every member is one of the keys, once per round
                assert client.keys.check().ok
                for row in rows:
                    got = sorted(k or "" for n in row for k in client.keys.reverse(list(client.evaluate(n))))
                    assert got == sorted(keys), "the keys ingested are not the keys sent"
        out[run] = result
        log(f"  json {run}: {len(keys):,} users x {rounds} rounds in {rounds * len(chunks)} messages: round 1 "
            f"{result['first_ids_per_s'] / 1e6:.3f}M IDs/s, rounds 2-{rounds} "
            f"{result['second_ids_per_s'] / 1e6:.3f}M IDs/s")
    ids = out["ids"]
    out["ratios"] = {
        "new keys / ids": out["keys"]["first_ids_per_s"] / ids["first_ids_per_s"],
        "known keys, warm cache / ids": out["keys"]["second_ids_per_s"] / ids["second_ids_per_s"],
        "known keys, cold cache / ids": out["keys created beforehand"]["first_ids_per_s"] / ids["first_ids_per_s"],
    }
    log("  keys / ids: " + ", ".join(f"{k.split(' / ')[0]} {v:.2f}" for k, v in out["ratios"].items())
        + " (goal: >= 0.5)")
    return out


def freshness(
    broker: Any, samples: int, workdir: Path, log: Log, env: dict[str, str] | None = None
) -> dict[str, Any]:
    from ingest.producer import SegmentProducer

    topic = f"bench-fresh-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, 1)
    broker.create_topic(f"{topic}.dlq", 1)
    store = f"sqlite:///{workdir / f'{topic}.db'}"
    consumer = Consumer(broker.bootstrap_servers, topic, store, env)
    client = segments.connect(store)
    delays: list[float] = []
    try:
        with SegmentProducer(broker.bootstrap_servers, topic=topic) as producer:
            producer.add("fresh", [0])
            deadline = time.monotonic() + 120
            while True:  # the consumer has joined and caught up
                consumer.check()
                try:
                    if client.reach("fresh") == 1:
                        break
                except segments.SegmentNotFound:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("the consumer did not apply the first update")
                time.sleep(0.01)
            jitter = random.Random(1)
            for i in range(1, samples + 1):
                time.sleep(jitter.uniform(0.0, 0.05))
                t0 = time.perf_counter()
                producer.add("fresh", [i])
                limit = time.monotonic() + 30
                while client.reach("fresh") != i + 1:
                    if time.monotonic() > limit:
                        consumer.check()
                        raise TimeoutError(f"update {i} not visible after 30 s")
                    time.sleep(0.001)
                delays.append(time.perf_counter() - t0)
    finally:
        client.close()
        consumer.stop()
    t = Timing(delays)
    log(f"  freshness {env or 'default settings'}: p50 {t.median * 1e3:.0f} ms, p99 {t.p99 * 1e3:.0f} ms")
    out = t.as_dict()
    out["settings"] = dict(env or {})
    out["max_s"] = max(delays)
    out["samples_ms"] = [round(d * 1e3, 2) for d in delays]
    return out


def run(cfg: Config, log: Log) -> dict[str, Any]:
    try:
        import ingest.producer  # noqa: F401
        from tests.support.kafka_broker import start_kafka_broker
    except ImportError as exc:
        return {"skipped": f"the ingest package or the test broker fixture is missing ({exc})"}
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    out: dict[str, Any] = {}
    try:
        with start_kafka_broker() as broker:
            out["binary"] = throughput(
                broker, cfg.users, min(cfg.ingest_ids, cfg.users), "roaring", cfg.seed, workdir, log
            )
            out["json"] = throughput(
                broker, cfg.users, min(cfg.ingest_json_ids, cfg.users), "json", cfg.seed, workdir, log
            )
            out["json_keys"] = keys_vs_ids(broker, min(cfg.ingest_json_ids, cfg.users), cfg.seed, workdir, log)
            out["freshness"] = freshness(broker, cfg.freshness_samples, workdir, log)
            out["freshness_fast"] = freshness(broker, cfg.freshness_samples, workdir, log, SHORT_WAITS)
    finally:
        for path in workdir.iterdir():
            path.unlink(missing_ok=True)
        workdir.rmdir()
    return out
