"""The cache under a cold herd and under version churn (issue 10, items 12 and 13).

Real ``segments serve`` processes on SQLite and on Aerospike (the test
server, or the real one ``SEGMENTS_TEST_AEROSPIKE`` names).

* Cold herd (item 12): 4 segments of 150 shards each; 16 threads send the
  same reach at once to a server whose cache is cold (just started, and once
  more after a restart). ``segments_cache_shard_fetches_total`` must grow by
  exactly the number of distinct shard records the expression needs: each is
  fetched once however many queries wait for it (single flight; before the
  fix every query fetched every shard). A second herd on the warm cache
  fetches nothing. All answers are equal to each other, to the library's and
  to a bitmap model's.
* Version churn (item 13): one segment with a member in each of the 65,536
  shards of the ID space, so its shard map is ~0.9 MiB and every write
  publishes a new one, under ``--cache-bytes 16 MiB``. Writes alternate with
  reaches (each of which reads the new map; every 100th loads the whole
  segment). The server's RSS (``VmRSS`` from ``/proc``) must stay within a
  generous bound however many writes there are, and ``segments_cache_bytes``
  within the budget. Before the fix shard maps were kept by count (4,096 of
  them) outside the byte budget: RSS grew by about one map per write.

The engine's memo of plans (since ebb9aca) once kept the shard maps of up to
1,024 versions outside the budget, and RSS grew by a map per write again; plans
now hold masks only, and the cache keeps one shard map per segment.
"""

from __future__ import annotations

import array
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pyroaring import BitMap

import segments
from tests.faults.conftest import HEAVY
from tests.support.api_server import start_api_server

pytestmark = pytest.mark.timeout(600)

MiB = 1 << 20


@pytest.fixture(params=["sqlite", "aerospike"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store the test process and the API process share."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/segments.db"
        return
    from tests.support.aerospike_fixture import aerospike_url

    url = aerospike_url(request.getfixturevalue("aerospike_target"))
    yield url
    with segments.connect(url) as segs:  # leave a real server as it was (but for a damaged one's orphans)
        for name in segs.names():
            segs.delete(name)


def metric(client: httpx.Client, name: str) -> float:
    """The value of one unlabelled metric of the API process (``name`` without ``_total``)."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        if family.name == name:
            return float(family.samples[0].value)
    raise AssertionError(f"/metrics has no {name}")


# -- item 12: a herd of cold queries ------------------------------------------------------------------

HERD = 16
HERD_SHARDS = 150
HERD_EXPR = "(h0 | h1) & h2 - h3"


def herd_segments() -> dict[str, BitMap]:
    """4 segments over the same 150 shards, 300 random members per shard each (seeded)."""
    rng = np.random.default_rng(20261201)
    out = {}
    for i in range(4):
        ids = [
            (shard << 16) + rng.choice(1 << 16, size=300, replace=False).astype(np.int64)
            for shard in range(HERD_SHARDS)
        ]
        out[f"h{i}"] = BitMap(np.concatenate(ids).tolist())
    return out


def needed_shard_records(data: dict[str, BitMap]) -> int:
    """Shard records ``HERD_EXPR`` needs: those of each operand where ``(h0 | h1) & h2`` can be non-empty."""
    shards = {name: {uid >> 16 for uid in members} for name, members in data.items()}
    region = (shards["h0"] | shards["h1"]) & shards["h2"]
    return sum(len(s & region) for s in shards.values())


def herd(base_url: str) -> list[tuple[int, Any]]:
    """``HERD`` threads, each with its own connection, send ``HERD_EXPR`` at the same moment."""
    start = threading.Barrier(HERD)
    answers: list[tuple[int, Any]] = [(0, None)] * HERD

    def one(i: int) -> None:
        with httpx.Client(base_url=base_url, timeout=300) as client:
            client.get("/healthz")  # connected before the start line
            start.wait(60)
            response = client.post("/v1/reach", json={"expr": HERD_EXPR})
            answers[i] = (response.status_code, response.json())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(HERD)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return answers


def test_a_cold_herd_fetches_each_shard_record_once(store: str) -> None:
    data = herd_segments()
    with segments.connect(store) as segs:
        for name, members in data.items():
            segs.replace(name, members)
        library = segs.reach(HERD_EXPR)
    model = len((data["h0"] | data["h1"]) & data["h2"] - data["h3"])
    assert library == model
    needed = needed_shard_records(data)

    for run in ("cold start", "restarted cold"):
        with start_api_server(store) as api, httpx.Client(base_url=api.base_url, timeout=60) as client:
            before = metric(client, "segments_cache_shard_fetches")
            answers = herd(api.base_url)
            after = metric(client, "segments_cache_shard_fetches")
            print(f"\n{run}: {HERD} concurrent reaches fetched {after - before:.0f} shard records "
                  f"(before {before:.0f}, after {after:.0f}; the expression needs {needed})")
            assert all(status == 200 for status, _ in answers), answers
            assert {body["reach"] for _, body in answers} == {model}
            assert after - before == needed

            warm_before = after
            answers = herd(api.base_url)
            warm_after = metric(client, "segments_cache_shard_fetches")
            print(f"{run}, warm: {HERD} concurrent reaches fetched {warm_after - warm_before:.0f} shard records")
            assert {(status, body["reach"]) for status, body in answers} == {(200, model)}
            assert warm_after == warm_before


# -- item 13: everything the cache holds counts against its budget ------------------------------------

BUDGET = 16 * MiB
WRITES = 600 if HEAVY else 300
#: RSS may grow by this much over the run (allocator slack, transient buffers): before the fix
#: 300 writes grew it by 230-260 MiB (about one 0.9 MiB shard map per write); after it, by < 20 MiB
GROWTH_BOUND = 120 * MiB
SMALL = BitMap([5, 7 << 16, (9 << 16) | 3, (40_000 << 16) | 1])


def rss_bound_store(store: str) -> BitMap:
    """``wide`` (one member in every shard of the ID space) and ``small``; returns ``wide``."""
    wide = BitMap(array.array("I", range(0, 1 << 32, 1 << 16)))
    with segments.connect(store) as segs:
        segs.replace("wide", wide)
        segs.replace("small", SMALL)
    return wide


def test_rss_stays_bounded_while_a_segment_of_every_shard_keeps_changing(store: str) -> None:
    model = rss_bound_store(store)
    args = ["--cache-bytes", str(BUDGET)]
    with start_api_server(store, args=args) as api, httpx.Client(base_url=api.base_url, timeout=120) as client:

        def reach(expr: str) -> int:
            response = client.post("/v1/reach", json={"expr": expr})
            assert response.status_code == 200, response.text
            return int(response.json()["reach"])

        assert reach("wide - small") == len(model - SMALL)  # the whole segment, cold
        assert reach("wide & small") == len(model & SMALL)
        start = api.memory().rss
        samples: list[tuple[int, int, float]] = []
        for i in range(1, WRITES + 1):
            uid = (((i * 7919) % (1 << 16)) << 16) | i  # a new member, in a different shard each time
            added = client.post("/v1/segments/wide/add", json={"ids": [uid]})
            assert added.status_code == 200, added.text
            model.add(uid)
            assert added.json()["cardinality"] == len(model)
            assert reach("wide & small") == len(model & SMALL)
            if i % 100 == 0:
                assert reach("wide - small") == len(model - SMALL)
            if i % 25 == 0:
                cached = metric(client, "segments_cache_bytes")
                samples.append((i, api.memory().rss, cached))
                assert cached <= BUDGET
        end = api.memory()
        print(f"\n{WRITES} writes of a {1 << 16}-shard segment, --cache-bytes {BUDGET // MiB} MiB: RSS "
              f"{start / MiB:.0f} MiB after the first reaches, {end.rss / MiB:.0f} MiB at the end "
              f"(peak {end.peak / MiB:.0f} MiB)")
        print("  writes / RSS MiB / cache MiB: "
              + ", ".join(f"{i}/{rss / MiB:.0f}/{cached / MiB:.1f}" for i, rss, cached in samples))
        grown = max(rss for _, rss, _ in samples) - start
        assert grown < GROWTH_BOUND, f"RSS grew {grown / MiB:.0f} MiB"
