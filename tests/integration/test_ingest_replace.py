"""Replace in parts across a consumer crash: out of order, duplicated, an older batch finishing late.

Readers never see a half-replaced segment: a reader polls the store while
the completing part is applied and may only observe whole states.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pyroaring import BitMap

import segments
from segments import StagingStore
from tests.ingest.harness import (
    Delivered,
    IngestProcess,
    Raw,
    SetModel,
    new_topics,
    produce,
    store_contents,
    wait_caught_up,
)
from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.timeout(120)

SEG = "audience"


def part(batch: str, number: int, parts: int, ids: BitMap) -> Raw:
    headers: list[tuple[str, str | bytes | None]] = [
        ("op", b"replace"), ("segment", SEG.encode()), ("encoding", b"roaring"),
        ("batch", batch.encode()), ("part", str(number).encode()), ("parts", str(parts).encode()),
    ]
    return SEG.encode(), ids.serialize(), headers


def delta(op: str, ids: list[int]) -> Raw:
    return SEG.encode(), f'{{"op": "{op}", "segment": "{SEG}", "ids": {ids}}}'.encode(), []


def test_replace_parts_out_of_order_with_duplicates_across_a_kill(broker: KafkaBroker, tmp_path: Path) -> None:  # noqa: F811
    topics = new_topics(broker)
    store = f"sqlite:///{tmp_path}/segments.db"
    # B: three large parts (one shard range each); A: an older batch that started first
    b_parts = [BitMap(range(p * 2**20, p * 2**20 + 300_000, 2)) for p in range(3)]
    a_parts = [BitMap([7, 8]), BitMap([9])]
    old = list(range(1, 11))

    phase1: list[Raw] = [
        delta("add", old),
        part("A", 0, 2, a_parts[0]),  # A starts first: it is the older batch
        part("B", 2, 3, b_parts[2]),
        part("B", 0, 3, b_parts[0]),
        part("B", 0, 3, b_parts[0]),  # duplicate
        delta("add", [500]),
    ]
    sent1 = produce(broker, topics.updates, phase1)
    first = IngestProcess(broker, topics, store, tmp_path / "first.log")
    wait_caught_up(broker, topics, sent1.ends(), first)
    first.kill()
    before = set(old) | {500}
    assert store_contents(store) == {SEG: before}, "a replace became visible before all its parts arrived"
    with segments.connect(store) as segs:
        staging = StagingStore(segs)
        staged = sorted(key for key, _ in segs.store.scan(staging.parts_set))
    assert staged == [f"{SEG}/A/0", f"{SEG}/B/0", f"{SEG}/B/2"]

    phase2: list[Raw] = [
        part("B", 1, 3, b_parts[1]),  # completes B
        part("B", 2, 3, b_parts[2]),  # late duplicate: applied once
        delta("remove", [0, 2]),
        part("A", 1, 2, a_parts[1]),  # completes A, which is older than B: ignored
        part("A", 1, 2, a_parts[1]),
    ]
    sent2 = produce(broker, topics.updates, phase2)
    union_b = BitMap.union(*b_parts)
    after = set(union_b) - {0, 2}
    allowed = {frozenset(before), frozenset(union_b), frozenset(after)}
    seen: set[frozenset[int]] = set()
    stop = threading.Event()

    def reader() -> None:
        with segments.connect(store) as segs:
            while not stop.is_set():
                seen.add(frozenset(segs.evaluate(SEG)))

    thread = threading.Thread(target=reader)
    thread.start()
    second = IngestProcess(broker, topics, store, tmp_path / "second.log")
    try:
        wait_caught_up(broker, topics, sent2.ends(), second)
    finally:
        stop.set()
        thread.join(30)
        assert second.stop() == 0
    assert seen <= allowed, f"a reader saw a partial replace: sizes {sorted(len(s) for s in seen - allowed)}"
    assert frozenset(after) in seen or store_contents(store)[SEG] == after
    assert store_contents(store) == {SEG: after}

    model = SetModel()
    model.apply_all(phase1 + phase2, _concat(sent1, sent2))
    assert model.members == {SEG: after}

    # nothing is left staged; both batches are remembered as finished
    with segments.connect(store) as segs:
        staging = StagingStore(segs)
        assert list(segs.store.scan(staging.parts_set)) == []
        state = staging.load([SEG])[SEG]
        assert state.open == {} and set(state.done) == {"A", "B"}
        version = segs.info(SEG).version

    # a producer re-sending all of B (same batch id) changes nothing; a new batch C wins
    c = BitMap([42, 43])
    phase3: list[Raw] = [part("B", i, 3, b_parts[i]) for i in range(3)] + [part("C", 0, 1, c)]
    sent3 = produce(broker, topics.updates, phase3)
    third = IngestProcess(broker, topics, store, tmp_path / "third.log")
    try:
        wait_caught_up(broker, topics, sent3.ends(), third)
    finally:
        assert third.stop() == 0
    assert store_contents(store) == {SEG: {42, 43}}
    with segments.connect(store) as segs:
        assert segs.info(SEG).version == version + 1


def _concat(*parts: Delivered) -> Delivered:
    out = Delivered()
    for d in parts:
        out.offsets += d.offsets
    return out
