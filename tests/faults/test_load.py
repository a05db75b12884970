"""A bounded load run against ``segments serve``: mixed traffic, zero errors, latency percentiles.

``segments serve`` on a SQLite store with the demo data set (1 million users,
46 segments), loopback only. Two client processes with four threads each send,
for a fixed time, 60 % reach queries (random 3-segment expressions), 30 %
membership lookups (``/v1/users/{id}/segments`` and ``/v1/segments/{name}/members/{id}``)
and 10 % small updates (1-20 IDs added to or removed from four ``load_*``
segments). Asserted: no error at all (no status >= 400, no connection error)
and every kind of request was served. Latency percentiles per kind are
printed, not asserted. ``SEGMENTS_TEST_HEAVY=1`` runs for a minute with 10
million users.
"""

from __future__ import annotations

import multiprocessing
import statistics
from pathlib import Path

import httpx
import pytest

from tests.faults import workers
from tests.faults.conftest import HEAVY
from tests.support.api_server import start_api_server

pytestmark = pytest.mark.timeout(300)

USERS = 10_000_000 if HEAVY else 1_000_000
SECONDS = 60.0 if HEAVY else 10.0
PROCESSES = 2
THREADS = 4


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_mixed_load_has_no_errors(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/segments.db"
    with start_api_server(store, args=["--demo", "--demo-users", str(USERS)], startup_timeout=240) as api:
        with httpx.Client(base_url=api.base_url, timeout=30) as client:
            names = [s["name"] for s in client.get("/v1/segments").json()["segments"] if s["name"] != "all"]
            assert len(names) >= 10
            for i in range(4):
                assert client.put(f"/v1/segments/load_{i}", json={"ids": [i]}).status_code == 200
        context = multiprocessing.get_context("spawn")
        manager = context.Manager()
        try:
            start = manager.Event()
            with context.Pool(PROCESSES) as pool:
                pending = [
                    pool.apply_async(
                        workers.load_client, (api.base_url, SECONDS, THREADS, p, names, USERS, start)
                    )
                    for p in range(PROCESSES)
                ]
                start.set()
                results = [p.get(timeout=SECONDS + 120) for p in pending]
        finally:
            manager.shutdown()
        output = api.output()

    errors = [e for r in results for e in r["errors"]]
    latencies: dict[str, list[float]] = {"reach": [], "membership": [], "update": []}
    statuses: dict[str, int] = {}
    for r in results:
        for kind, values in r["latencies"].items():
            latencies[kind] += values
        for code, count in r["statuses"].items():
            statuses[code] = statuses.get(code, 0) + count
    total = sum(len(v) for v in latencies.values())
    lines = [
        f"\n[load] {USERS:,} users, {PROCESSES}x{THREADS} clients for {SECONDS:.0f}s: {total} requests "
        f"({total / SECONDS:.0f}/s), statuses {statuses}, errors {len(errors)}"
    ]
    for kind, values in latencies.items():
        if values:
            lines.append(
                f"[load] {kind:10s} n={len(values):6d}  p50={percentile(values, 0.5) * 1000:7.2f} ms  "
                f"p95={percentile(values, 0.95) * 1000:7.2f} ms  p99={percentile(values, 0.99) * 1000:7.2f} ms  "
                f"mean={statistics.fmean(values) * 1000:7.2f} ms"
            )
    print("\n".join(lines))
    assert errors == [], errors[:10]
    assert all(latencies[kind] for kind in latencies), "a kind of request was never sent"
    assert set(statuses) == {"200"}
    assert "Traceback" not in output
