"""kill -9 of processes while they allocate IDs for new user keys, then the key table's check.

* the consumer (``segments ingest``), killed three times while a stream of messages full of new keys
  flows in, then run to the end: every produced message is applied (the store equals a model by key),
  the table is consistent (``KeyTable.check``: no ID with two keys, every key reversible) and its gaps
  are bounded by what the crashed processes held;
* the API (``segments serve``), killed while four clients add new keys, then restarted: every write
  it acknowledged is there, keys written after the restart got IDs no other key has.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

import segments
from segments.keys import MAX_BLOCK
from tests.ingest.harness import (
    IngestProcess,
    Raw,
    committed,
    new_topics,
    produce,
    wait_caught_up,
    wait_until,
)
from tests.support.api_server import start_api_server
from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.timeout(300)

SEGMENTS = 6
MESSAGES = 420
PER_MESSAGE = 150
BATCH = 20


def j(doc: object) -> bytes:
    return json.dumps(doc).encode()


def keys_of(segs: segments.Segments, name: str) -> set[str]:
    found = segs.keys.reverse(list(segs.evaluate(name)))
    assert None not in found, f"{name} has a member that is no key's ID"
    return {k for k in found if k is not None}


def test_consumer_killed_while_allocating_loses_nothing(broker: KafkaBroker, tmp_path: Path) -> None:
    topics = new_topics(broker, partitions=2)
    messages: list[Raw] = []
    model: dict[str, set[str]] = {}
    for number in range(MESSAGES):
        name = f"kk_{number % SEGMENTS}"
        if number % 7 == 6:  # now and then remove some keys of an earlier message of the segment (and unknown ones)
            gone = [f"user_{number - SEGMENTS}_{i}" for i in range(0, PER_MESSAGE, 3)] + [f"nobody_{number}"]
            messages.append((name.encode(), j({"op": "remove", "segment": name, "keys": gone}), []))
            model.setdefault(name, set()).difference_update(gone)
        else:
            new = [f"user_{number}_{i}" for i in range(PER_MESSAGE)]
            messages.append((name.encode(), j({"op": "add", "segment": name, "keys": new}), []))
            model.setdefault(name, set()).update(new)
    delivered = produce(broker, topics.updates, messages)  # acknowledged by the broker: none may be lost
    store = f"sqlite:///{tmp_path}/segments.db"
    extra = ["--batch-max-messages", str(BATCH)]
    runs = 0
    seen: list[int] = []
    for kill in range(3):
        runs += 1
        process = IngestProcess(broker, topics, store, tmp_path / f"run{kill}.log", extra=extra)
        wait_until(lambda p=process: p.log().count("applied segment=") >= 2, 120, "writes", process)  # type: ignore[misc]
        time.sleep(0.3 * kill)  # somewhere inside the next batches' allocations
        process.kill()
        seen.append(sum(max(0, o) for o in committed(broker, topics.group, topics.updates, 2).values()))
    runs += 1
    last = IngestProcess(broker, topics, store, tmp_path / "last.log", extra=extra)
    try:
        wait_caught_up(broker, topics, delivered.ends(), last, timeout=240)
    finally:
        assert last.stop() == 0
    print(f"\ncommitted offsets when killed: {seen} of {len(messages)}")
    assert seen[-1] < len(messages), "the kills came too late to interrupt anything"

    with segments.connect(store) as segs:
        for name, expected in model.items():
            assert keys_of(segs, name) == expected, name
        report = segs.keys.check()
        added = {k for ks in model.values() for k in ks} | {
            f"user_{n}_{i}" for n in range(MESSAGES) if n % 7 != 6 for i in range(PER_MESSAGE)
        }
        print(f"key table: {report.keys} keys, next ID {report.next_id}, {report.gaps} gaps, "
              f"{report.stale_claims} stale claims, {report.unconfirmed} unconfirmed")
        assert report.ok, report
        assert report.keys == len(added)  # removes of unknown keys allocated nothing
        assert segs.keys.translate([f"nobody_{n}" for n in range(6, MESSAGES, 7)]) == [None] * (MESSAGES // 7)
        # gaps: at most what each process had reserved and not used, plus the batches in flight when killed
        assert report.gaps <= runs * (MAX_BLOCK + BATCH * PER_MESSAGE), report.gaps


def test_api_killed_while_allocating_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/segments.db"
    acknowledged: dict[str, set[str]] = {}
    lock = threading.Lock()

    def writer(server_url: str, worker: int, stop: threading.Event, round_: int) -> None:
        name = f"api_k{worker}"
        with httpx.Client(base_url=server_url, timeout=10) as client:
            number = 0
            while not stop.is_set():
                batch = [f"r{round_}_w{worker}_{number}_{i}" for i in range(200)]
                number += 1
                try:
                    response = client.post(f"/v1/segments/{name}/add", json={"keys": batch})
                except httpx.HTTPError:
                    return  # the server is gone: this write was not acknowledged
                if response.status_code == 200:
                    with lock:
                        acknowledged.setdefault(name, set()).update(batch)

    for round_ in range(2):  # the second round runs after the restart, on the IDs left by the first
        with start_api_server(url) as server:
            stop = threading.Event()
            threads = [threading.Thread(target=writer, args=(server.base_url, w, stop, round_)) for w in range(4)]
            for thread in threads:
                thread.start()
            time.sleep(2.0)
            if round_ == 0:
                server.process.kill()  # kill -9, with writes in flight
                server.process.wait(10)
            stop.set()
            for thread in threads:
                thread.join(30)
    with segments.connect(url) as segs:
        total = 0
        for name, keys in acknowledged.items():
            members = keys_of(segs, name)
            assert keys <= members, f"{len(keys - members)} acknowledged keys of {name} are missing"
            total += len(keys)
        report = segs.keys.check()
        print(f"\n{total} acknowledged keys over a kill -9; key table: {report.keys} keys, {report.gaps} gaps, "
              f"{report.stale_claims} stale claims, {report.unconfirmed} unconfirmed")
        assert report.ok and not report.shared_ids and not report.unreversible, report
        assert {k for keys in acknowledged.values() for k in keys if k.startswith("r1_")}, "no write after restart"
