"""Reach and membership lookups over HTTP, on a real ``segments serve`` process.

The server is the public command (``python -m segments serve``, uvicorn,
started by ``tests.support.api_server``) on a free loopback port; the client
is another process (``bench/http_client.py``) holding keep-alive connections.
Hot: the server starts with ``--warm`` and gets warm-up requests before the
measured ones. Cold: a fresh server without ``--warm``, the first request's
latency (the segments come from the SQLite store), once per server start.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import numpy as np
from pyroaring import BitMap

from tests.support.api_server import ApiServer, start_api_server

from . import datasets
from .expressions import HEADLINE, naive_count
from .processes import Log, run_module
from .timing import Timing

if TYPE_CHECKING:
    from .__main__ import Config

#: seconds a server may take to start (``--warm`` loads every segment first)
STARTUP_TIMEOUT = 300.0
#: worker processes of the multi-worker run
WORKERS = 2
#: ``lookup_staleness`` of the in-process lookups (seconds; 0: every call reads the metadata)
LOOKUP_STALENESS = (0.0, 1.0)
#: ``--lookup-staleness`` of the second membership server (the first runs with the API's default)
STALE_LOOKUPS = 1.0


def serve(store_url: str, *args: str) -> AbstractContextManager[ApiServer]:
    """``segments serve --store store_url *args`` until the ``with`` block ends."""
    return start_api_server(store_url, args=list(args), startup_timeout=STARTUP_TIMEOUT)


def client(spec: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Run ``bench.http_client`` in its own process; raises on any wrong answer."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
        path = f.name
    try:
        parsed = run_module("bench.http_client", [path], timeout=timeout)
    finally:
        os.unlink(path)
    if parsed["error_count"]:
        raise AssertionError(f"{parsed['error_count']} wrong HTTP answers, e.g. {parsed['errors'][:3]}")
    return parsed


def latency(base_url: str, requests: list[dict[str, Any]], *, warmup: int, count: int) -> dict[str, Any]:
    """``count`` requests one after the other on one connection."""
    return client({"base_url": base_url, "requests": requests, "warmup": warmup, "count": count})


def throughput(
    base_url: str, requests: list[dict[str, Any]], *, concurrency: int, seconds: float
) -> dict[str, Any]:
    """As many requests as ``concurrency`` connections get answered in ``seconds``."""
    spec = {
        "base_url": base_url,
        "requests": requests,
        "warmup": 10,
        "concurrency": concurrency,
        "seconds": seconds,
    }
    return client(spec)


def _summary(result: dict[str, Any], *, samples: bool = False) -> dict[str, Any]:
    lat = Timing(result["latencies"])
    out: dict[str, Any] = {
        "requests": result["requests"],
        "seconds": result["seconds"],
        "throughput_rps": result["requests"] / result["seconds"] if result["seconds"] else 0.0,
        "latency": lat.as_dict(),
        "concurrency": result["concurrency"],
    }
    if result["took_ms"]:
        out["took"] = Timing([t / 1000 for t in result["took_ms"]]).as_dict()
    if samples:
        out["samples_ms"] = [round(x * 1000, 4) for x in result["latencies"]]
    return out


def run(cfg: Config, ds: datasets.Dataset, log: Log) -> dict[str, Any]:
    out: dict[str, Any] = {
        "server": "python -m segments serve (uvicorn; one worker unless the row names more), sqlite store",
        "client": "python -m bench.http_client: http.client keep-alive connections, one per thread, separate process",
    }
    tree_bitmaps = {
        n: BitMap.deserialize((ds.directory / f"{n}.roaring").read_bytes()) for n in datasets.SHAPES
    }
    import segments

    expect = naive_count(segments.parse(HEADLINE), tree_bitmaps)
    del tree_bitmaps
    reach_req = [
        {"method": "POST", "path": "/v1/reach", "body": {"expr": HEADLINE}, "expect": {"reach": expect}}
    ]
    log("  hot reach server (--warm)")
    with serve(ds.store_url, "--warm") as server:
        out["hot"] = _summary(
            latency(server.base_url, reach_req, warmup=50, count=cfg.http_requests), samples=True
        )
        out["engine_took"] = out["hot"].get("took")
        log(f"  hot c=1: p50 {_ms(out['hot'], 'median_s')} ms p99 {_ms(out['hot'], 'p99_s')} ms")
        out["hot_c8"] = _summary(
            throughput(server.base_url, reach_req, concurrency=8, seconds=cfg.http_seconds)
        )
        log(f"  hot c=8: {out['hot_c8']['throughput_rps']:.0f} req/s p99 {_ms(out['hot_c8'], 'p99_s')} ms")
    if cfg.http_workers and (os.cpu_count() or 1) >= WORKERS:
        with serve(ds.store_url, "--warm", "--workers", str(WORKERS)) as server:
            r8w = throughput(server.base_url, reach_req, concurrency=8, seconds=cfg.http_seconds)
            out["hot_c8_workers"] = _summary(r8w) | {"workers": WORKERS}
            log(f"  hot c=8, {WORKERS} workers: {out['hot_c8_workers']['throughput_rps']:.0f} req/s")
    cold: list[float] = []
    for _ in range(cfg.http_cold_starts):
        with serve(ds.store_url) as server:
            cold.extend(latency(server.base_url, reach_req, warmup=0, count=1)["latencies"])
    out["cold"] = {"requests": len(cold), "latency": Timing(cold).as_dict()}
    log(f"  cold: median {np.median(cold) * 1e3:.1f} ms over {len(cold)} fresh servers")
    out.update(membership(cfg, log))
    return out


def _ms(summary: dict[str, Any], key: str) -> str:
    return f"{summary['latency'][key] * 1e3:.2f}"


def _engine_lookups(
    mds: datasets.Dataset, users: list[int], requests: list[dict[str, Any]], cfg: Config, log: Log
) -> dict[str, Any]:
    """``Segments.segments_of`` in this process (no HTTP), warm, for the same users."""
    import segments

    out: dict[str, Any] = {}
    for staleness in LOOKUP_STALENESS:
        label = f"lookup_staleness={staleness:g}"
        client = segments.connect(mds.store_url, lookup_staleness=staleness)
        client.warm()
        samples = []
        for i in range(cfg.http_requests):
            uid = users[i % len(users)]
            t0 = time.perf_counter()
            got = client.segments_of(uid)
            samples.append(time.perf_counter() - t0)
            if got != requests[i % len(users)]["expect"]["segments"]:
                raise AssertionError(f"segments_of({uid}) = {got}")
        client.close()
        out[label] = Timing(samples[len(samples) // 10 :]).as_dict()
        log(
            f"  engine segments_of, {label}: p50 {out[label]['median_s'] * 1e3:.2f} ms p99 {out[label]['p99_s'] * 1e3:.2f} ms"
        )
    return out


def membership(cfg: Config, log: Log) -> dict[str, Any]:
    """``GET /v1/users/{id}/segments`` with ``cfg.membership_segments`` segments, random users."""
    mds = datasets.load(
        cfg.users, cfg.seed, kind="membership", membership_count=cfg.membership_segments, log=log
    )
    rng = np.random.default_rng([cfg.seed, 7])
    users = rng.integers(0, cfg.users, size=500).tolist()
    requests: list[dict[str, Any]] = []
    for uid in users:
        want = sorted(n for n, bitmap in mds.bitmaps.items() if uid in bitmap)
        requests.append({"method": "GET", "path": f"/v1/users/{uid}/segments", "expect": {"segments": want}})
    count = sum(len(r["expect"]["segments"]) for r in requests) / len(requests)
    out: dict[str, Any] = {"membership_engine": _engine_lookups(mds, users, requests, cfg, log)}
    for key, args in (("membership", ()), ("membership_stale", ("--lookup-staleness", f"{STALE_LOOKUPS:g}"))):
        with serve(mds.store_url, "--warm", *args) as server:
            r = latency(server.base_url, requests, warmup=100, count=cfg.http_requests)
        out[key] = _summary(r, samples=key == "membership") | {
            "segments": len(mds.bitmaps),
            "mean_matches": count,
        }
        if args:
            out[key]["lookup_staleness"] = STALE_LOOKUPS
        log(
            f"  {key} ({len(mds.bitmaps)} segments): p50 {_ms(out[key], 'median_s')} ms p99 {_ms(out[key], 'p99_s')} ms"
        )
    return out
