"""``api.lookups``: lookups answered on the event loop never touch the store there.

The store of these tests records the thread of every call it gets; the
property checked is that none comes from the event loop's thread, whatever
the cache and snapshot state, while every answer stays exact. Over HTTP, the
``segments_lookups_total{path}`` counter shows where lookups ran.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api import lookups
from segments import Segments
from segments.storage import Store, open_store
from segments.storage.forwarding import ForwardingStore
from tests.api.conftest import seed_store
from tests.support.api_server import start_api_server

SHARD = 1 << 16


class RecordingStore(ForwardingStore):
    """A real store that notes the thread of every call."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.threads: list[int] = []

    def before(self, op: str, set_name: str | None) -> None:
        if op != "close":
            self.threads.append(threading.get_ident())


def _open(tmp_path: Path, staleness: float) -> tuple[Segments, RecordingStore]:
    recorder = RecordingStore(open_store(f"sqlite:///{tmp_path / 'guard.db'}"))
    return Segments(recorder, lookup_staleness=staleness), recorder


MODEL: dict[str, set[int]] = {
    "a": set(range(0, 3 * SHARD, 7)),
    "b": set(range(SHARD, 2 * SHARD)),
    "c": {5, SHARD + 5, 5 * SHARD + 1},
}


def _expected(model: dict[str, set[int]], uid: int) -> list[str]:
    return sorted(name for name, ids in model.items() if uid in ids)


@pytest.mark.parametrize("staleness", [0.0, 3600.0])
def test_lookups_never_read_the_store_on_the_event_loop(tmp_path: Path, staleness: float) -> None:
    segs, recorder = _open(tmp_path, staleness)
    model = {name: set(ids) for name, ids in MODEL.items()}
    for name, ids in model.items():
        segs.replace(name, sorted(ids))
    segs.warm()
    rng = random.Random(20240601)
    probes = [5, SHARD + 5, 7 * 3, 5 * SHARD + 1, 9 * SHARD, 0]
    ran_inline: list[bool] = []

    async def scenario() -> None:
        loop_thread = threading.get_ident()
        recorder.threads.clear()  # the set-up above ran on this thread
        for step in range(60):
            if step % 10 == 9:  # a write from a worker thread, as a PUT would do
                uid = rng.choice(probes)
                name = rng.choice(sorted(model))
                await asyncio.to_thread(segs.add, name, [uid])
                model[name].add(uid)
            uid = probes[step % len(probes)]
            calls_before = len(recorder.threads)
            names, inline = await lookups.segments_of(segs, uid)
            assert names == _expected(model, uid), (step, uid)
            if inline:
                assert len(recorder.threads) == calls_before  # answered without the store
            ran_inline.append(inline)
        assert loop_thread not in recorder.threads

    asyncio.run(scenario())
    if staleness == 0:
        assert not any(ran_inline)  # every lookup reads the metadata: always the threadpool
    else:
        assert ran_inline.count(True) > ran_inline.count(False)
    segs.close()


@given(
    sizes=st.lists(st.integers(0, 400), min_size=1, max_size=4),
    probes=st.lists(st.integers(0, 4 * SHARD), min_size=1, max_size=12),
    seed=st.integers(0, 2**16),
)
def test_answers_are_exact_whichever_way_they_ran(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], probes: list[int], seed: int
) -> None:
    rng = random.Random(seed)
    model = {f"s{i}": {rng.randrange(4 * SHARD) for _ in range(n)} for i, n in enumerate(sizes)}
    segs, recorder = _open(tmp_path_factory.mktemp("prop"), 3600.0)
    for name, ids in model.items():
        segs.replace(name, sorted(ids))
    if seed % 2:
        segs.warm()  # else: a cold cache, shards loaded on demand (in the threadpool)

    async def scenario() -> list[list[str]]:
        loop_thread = threading.get_ident()
        recorder.threads.clear()
        answers = [(await lookups.segments_of(segs, uid))[0] for uid in [*probes, *probes]]
        assert loop_thread not in recorder.threads
        return answers

    answers = asyncio.run(scenario())
    assert answers == [_expected(model, uid) for uid in [*probes, *probes]]
    segs.close()


def _lookups(client: httpx.Client) -> dict[str, float]:
    text = client.get("/metrics").text
    return {
        m[0]: float(m[1]) for m in re.findall(r'^segments_lookups_total\{path="(\w+)"\} (\S+)$', text, re.M)
    }


@pytest.mark.parametrize("staleness", ["0", "3600"])
def test_served_lookups_run_on_the_event_loop_when_no_io_is_needed(tmp_path: Path, staleness: str) -> None:
    url = f"sqlite:///{tmp_path / 'served.db'}"
    seed_store(url, MODEL)
    with start_api_server(url, args=["--warm", "--lookup-staleness", staleness]) as api:
        with httpx.Client(base_url=api.base_url, timeout=30) as client:
            for uid in (5, SHARD + 5, 0):
                body = client.get(f"/v1/users/{uid}/segments").json()
                assert body == {"user_id": uid, "segments": _expected(MODEL, uid)}
            before = _lookups(client)
            for _ in range(10):
                assert client.get(f"/v1/users/{SHARD + 5}/segments").json()["segments"] == _expected(
                    MODEL, SHARD + 5
                )
            after = _lookups(client)
            ran = {path: after.get(path, 0) - before.get(path, 0) for path in ("event_loop", "threadpool")}
            if staleness == "0":
                assert ran == {"event_loop": 0, "threadpool": 10}
            else:
                assert ran == {"event_loop": 10, "threadpool": 0}
            # a write through this process invalidates its snapshot: the next lookup reads the store
            assert client.post("/v1/segments/c/add", json={"ids": [SHARD + 6]}).status_code == 200
            changed = {**MODEL, "c": MODEL["c"] | {SHARD + 6}}
            assert client.get(f"/v1/users/{SHARD + 6}/segments").json()["segments"] == _expected(
                changed, SHARD + 6
            )
            assert _lookups(client)["threadpool"] == after.get("threadpool", 0) + 1
