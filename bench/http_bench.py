"""Reach and membership lookups over HTTP, on a real ``segments serve`` process.

The server is the public command (``python -m segments serve``, uvicorn,
started by ``tests.support.api_server``) on a free loopback port; the client
is another process (``bench/http_client.py``) holding keep-alive connections.
Hot: the server starts with ``--warm`` and gets warm-up requests before the
measured ones. Cold: a fresh server without ``--warm``, the first request's
latency (the segments come from the SQLite store), once per server start.

The baseline of every route is a bare Starlette app under uvicorn
(``bench/bare_app.py``) answering the same requests with constant JSON,
timed by the same client in the same run: the round trip no API can beat
here. Several workers: the throughput of ``--workers N`` with the same
connections, and the resident memory of each worker process afterwards.
User lookups and per-user checks run on the membership data set (``Config.membership_segments``
segments) on SQLite and on an Aerospike (``bench/stores.py``), in this process
(``Segments.segments_of_detailed``, ``Segments.matches``) and over HTTP; the
in-process runs also count the metadata scans that keep lookups fresh
(``Segments.lookup_refreshes``) and the bytes a scan reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pyroaring import BitMap

from tests.support.api_server import ApiServer, start_api_server

from . import datasets
from .expressions import HEADLINE, naive_count
from .processes import ROOT, Log, run_module, stop
from .stores import CountingStore, aerospike_store
from .timing import Timing

if TYPE_CHECKING:
    from .__main__ import Config

#: seconds a server may take to start (``--warm`` loads every segment first)
STARTUP_TIMEOUT = 300.0
#: worker processes of the multi-worker run
WORKERS = 2
#: ``lookup_staleness`` of the in-process lookups (seconds; 0: every call reads the metadata; 0.25 the default)
LOOKUP_STALENESS = (0.0, 0.25, 1.0)
#: the HTTP goal's budget: engine time + this many bare round trips
BUDGET_FACTOR = 1.5
#: the expression of the per-user checks (``POST /v1/users/{id}/match``, ``Segments.matches``)
MATCH_EXPR = "(m000 | m001) & m002 - m003"
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



@contextmanager
def bare_server() -> Iterator[str]:
    """``python -m bench.bare_app`` on a free loopback port until the block ends; yields its base URL."""
    from tests.support.api_server import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_app", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("python -m bench.bare_app did not start") from None
                time.sleep(0.05)
        yield base
    finally:
        stop(process, 10)


def _bare(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same requests without expected answers (the bare app answers constants)."""
    return [{k: v for k, v in r.items() if k != "expect"} for r in requests]


def worker_memory(pid: int) -> list[int]:
    """Resident bytes (``VmRSS``) of each child process of ``pid`` (the uvicorn workers)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                status = Path(f"/proc/{child}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    out.append(int(line.split()[1]) * 1024)
    return out


def run(cfg: Config, ds: datasets.Dataset, log: Log) -> dict[str, Any]:
    out: dict[str, Any] = {
        "server": "python -m segments serve (uvicorn; one worker unless the row names more), sqlite store",
        "client": "python -m bench.http_client: http.client keep-alive connections, one per thread, separate process",
        "bare": "python -m bench.bare_app: Starlette under uvicorn, the same routes answering constant JSON",
        "budget_factor": BUDGET_FACTOR,
        "default_lookup": f"lookup_staleness={LOOKUP_STALENESS[1]:g}",
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
    log("  hot reach server (--warm), bare Starlette baseline")
    with bare_server() as base:
        out["bare_reach"] = _summary(latency(base, _bare(reach_req), warmup=50, count=cfg.http_requests))
    with serve(ds.store_url, "--warm") as server:
        out["hot"] = _summary(
            latency(server.base_url, reach_req, warmup=50, count=cfg.http_requests), samples=True
        )
        out["engine_took"] = out["hot"].get("took")
        log(
            f"  hot c=1: p50 {_ms(out['hot'], 'median_s')} ms p99 {_ms(out['hot'], 'p99_s')} ms "
            f"(bare {_ms(out['bare_reach'], 'median_s')} ms)"
        )
        out["hot_c8"] = _summary(
            throughput(server.base_url, reach_req, concurrency=8, seconds=cfg.http_seconds)
        )
        out["hot_c8"]["worker_rss_bytes"] = [server.memory().rss]
        log(f"  hot c=8: {out['hot_c8']['throughput_rps']:.0f} req/s p99 {_ms(out['hot_c8'], 'p99_s')} ms")
    if cfg.http_workers and (os.cpu_count() or 1) >= WORKERS:
        with serve(ds.store_url, "--warm", "--workers", str(WORKERS)) as server:
            r8w = throughput(server.base_url, reach_req, concurrency=8, seconds=cfg.http_seconds)
            out["hot_c8_workers"] = _summary(r8w) | {
                "workers": WORKERS,
                "worker_rss_bytes": worker_memory(server.process.pid),
            }
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
    url: str, users: list[int], requests: list[dict[str, Any]], cfg: Config, log: Log, label: str
) -> dict[str, Any]:
    """``Segments.segments_of_detailed`` and ``Segments.matches`` in this process (no HTTP), warm."""
    import segments
    from segments.storage import open_store

    out: dict[str, Any] = {}
    match_expect = [r["expect"]["match"] for r in _match_requests(users, requests)]
    for staleness in LOOKUP_STALENESS:
        name = f"lookup_staleness={staleness:g}"
        store = CountingStore(open_store(url))
        client = segments.Segments(store, lookup_staleness=staleness)
        client.warm()
        samples, ages = [], []
        client.segments_of(users[0])
        store.reset()
        client.refresh_lookups()  # one scan, to see what it reads
        meta = client.sets.meta
        scan_bytes, scan_records = store.bytes[meta], store.records[meta]
        refreshes = client.lookup_refreshes
        started = time.perf_counter()
        for i in range(cfg.http_requests):
            uid = users[i % len(users)]
            t0 = time.perf_counter()
            got = client.segments_of_detailed(uid)
            samples.append(time.perf_counter() - t0)
            ages.append(got.staleness)
            if got.segments != requests[i % len(users)]["expect"]["segments"]:
                raise AssertionError(f"segments_of({uid}) = {got.segments}")
            if i >= 20 and time.perf_counter() - started > cfg.budget_s:
                break  # slow (a scan per call): enough samples
        elapsed = time.perf_counter() - started
        scans = client.lookup_refreshes - refreshes
        row: dict[str, Any] = Timing(samples[len(samples) // 10 :]).as_dict() | {
            "lookup_staleness": staleness,
            "max_staleness_s": max(ages),
            "scans": scans,
            "scans_per_s": scans / elapsed if elapsed else 0.0,
            "bytes_per_scan": scan_bytes,
            "records_per_scan": scan_records,
        }
        if staleness == LOOKUP_STALENESS[1]:
            checks = []
            for i in range(min(cfg.http_requests, 1000)):
                t0 = time.perf_counter()
                hit = client.matches(users[i % len(users)], MATCH_EXPR)
                checks.append(time.perf_counter() - t0)
                if hit != match_expect[i % len(users)]:
                    raise AssertionError(f"matches({users[i % len(users)]}) = {hit}")
            out["matches"] = Timing(checks[len(checks) // 10 :]).as_dict()
        client.close()
        out[name] = row
        log(
            f"  {label} segments_of, {name}: p50 {row['median_s'] * 1e3:.3f} ms p99 {row['p99_s'] * 1e3:.3f} ms, "
            f"{row['scans_per_s']:.1f} scans/s of {row['bytes_per_scan'] / 1e3:.1f} kB"
        )
    return out


def _match_requests(users: list[int], requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for uid, req in zip(users, requests, strict=True):
        has = set(req["expect"]["segments"])
        hit = (("m000" in has) or ("m001" in has)) and ("m002" in has) and ("m003" not in has)
        out.append(
            {
                "method": "POST",
                "path": f"/v1/users/{uid}/match",
                "body": {"expr": MATCH_EXPR},
                "expect": {"match": hit},
            }
        )
    return out


def _http_lookups(
    url: str, requests: list[dict[str, Any]], matches: list[dict[str, Any]], cfg: Config, log: Log,
    label: str, *, stale_server: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    variants: list[tuple[str, tuple[str, ...]]] = [("membership", ())]
    if stale_server:
        variants.append(("membership_stale", ("--lookup-staleness", f"{STALE_LOOKUPS:g}")))
    for key, args in variants:
        with serve(url, "--warm", *args) as server:
            out[key] = _summary(latency(server.base_url, requests, warmup=100, count=cfg.http_requests),
                                samples=key == "membership")  # fmt: skip
            if key == "membership":
                out["match"] = _summary(
                    latency(server.base_url, matches, warmup=50, count=min(cfg.http_requests, 1000))
                )
        if args:
            out[key]["lookup_staleness"] = STALE_LOOKUPS
        log(f"  {label} {key}: p50 {_ms(out[key], 'median_s')} ms p99 {_ms(out[key], 'p99_s')} ms")
    return out


def membership(cfg: Config, log: Log) -> dict[str, Any]:
    """User lookups and per-user checks with ``cfg.membership_segments`` segments, random users."""
    mds = datasets.load(
        cfg.users, cfg.seed, kind="membership", membership_count=cfg.membership_segments, log=log
    )
    rng = np.random.default_rng([cfg.seed, 7])
    users = rng.integers(0, cfg.users, size=500).tolist()
    requests: list[dict[str, Any]] = []
    for uid in users:
        want = sorted(n for n, bitmap in mds.bitmaps.items() if uid in bitmap)
        requests.append({"method": "GET", "path": f"/v1/users/{uid}/segments", "expect": {"segments": want}})
    matches = _match_requests(users, requests)
    count = sum(len(r["expect"]["segments"]) for r in requests) / len(requests)
    shape = {"segments": len(mds.bitmaps), "mean_matches": count}
    out: dict[str, Any] = {}
    with bare_server() as base:
        out["bare_lookup"] = _summary(latency(base, _bare(requests), warmup=100, count=cfg.http_requests))
        out["bare_match"] = _summary(latency(base, _bare(matches), warmup=50, count=min(cfg.http_requests, 1000)))
    out["membership_engine"] = _engine_lookups(mds.store_url, users, requests, cfg, log, "sqlite")
    for key, row in _http_lookups(mds.store_url, requests, matches, cfg, log, "sqlite", stale_server=True).items():
        out[key] = row | shape
    if not cfg.aerospike_lookups:
        out["aerospike"] = {"skipped": "not asked for (Config.aerospike_lookups)"}
        return out
    try:
        with aerospike_store() as (description, url):
            import segments

            started = time.perf_counter()
            with segments.connect(url) as writer:
                for name, bitmap in mds.bitmaps.items():
                    writer.replace(name, bitmap)
            load_s = time.perf_counter() - started
            log(f"  loaded {len(mds.bitmaps)} segments into {description} in {load_s:.0f} s")
            engine = _engine_lookups(url, users, requests, cfg, log, "aerospike")
            http = _http_lookups(url, requests, matches, cfg, log, "aerospike", stale_server=False)
            out["aerospike"] = {"server": description, "load_seconds": load_s, "engine": engine,
                                **{k: v | shape for k, v in http.items()}}  # fmt: skip
    except ImportError as exc:
        out["aerospike"] = {"skipped": f"the aerospike client or the test server is missing ({exc})"}
    return out
