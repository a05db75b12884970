"""Sections 2 and 3: reach and membership lookups over HTTP, on a real ``segments serve`` process.

The server is the public command (``python -m segments serve``, uvicorn)
on a free loopback port; the client is another process
(``bench/http_client.py``) holding keep-alive connections. Hot: the server
starts with ``--warm`` and gets warm-up requests before the measured ones.
Cold: a fresh server without ``--warm``, the first request's latency (the
segments come from the SQLite store), once per server start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pyroaring import BitMap

from . import datasets
from .baselines import free_port
from .expressions import HEADLINE, naive_count
from .timing import Timing

if TYPE_CHECKING:
    from .__main__ import Config

Log = Callable[[str], None]
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def serve(store_url: str, *args: str, timeout: float = 300, patched: bool = False) -> Iterator[Server]:
    """``segments serve --store store_url *args`` until the block ends (SIGTERM, then SIGKILL).

    ``patched``: the same command with the engine of ``bench/patches`` (``bench.patched_serve``).
    """
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="bench-serve-", suffix=".log")[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")}
    entry = ["bench.patched_serve"] if patched else ["segments", "serve"]
    command = [
        sys.executable, "-m", *entry, "--store", store_url,
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *args,
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(server.base_url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"segments serve did not start:\n{log.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.05)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.unlink(missing_ok=True)


def client(spec: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Run ``bench.http_client`` in its own process."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
        path = f.name
    try:
        result = subprocess.run(
            [sys.executable, "-m", "bench.http_client", path],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=timeout,
        )
    finally:
        os.unlink(path)
    if result.returncode != 0:
        raise RuntimeError(f"HTTP client failed: {result.stderr[-3000:]}")
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    if parsed["error_count"]:
        raise AssertionError(f"{parsed['error_count']} wrong HTTP answers, e.g. {parsed['errors'][:3]}")
    return parsed


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
        "server": "python -m segments serve (uvicorn, 1 worker unless noted), sqlite store",
        "client": "python -m bench.http_client: http.client keep-alive connections, one per thread, separate process",
        "notes": [],
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
        r1 = client(
            {"base_url": server.base_url, "requests": reach_req, "warmup": 50, "count": cfg.http_requests}
        )
        out["hot"] = _summary(r1, samples=True)
        out["engine_took"] = out["hot"].get("took")
        log(
            f"  hot c=1: p50 {out['hot']['latency']['median_s'] * 1e3:.2f} ms p99 {out['hot']['latency']['p99_s'] * 1e3:.2f} ms"
        )
        r8 = client(
            {
                "base_url": server.base_url,
                "requests": reach_req,
                "warmup": 10,
                "concurrency": 8,
                "seconds": cfg.http_seconds,
            }
        )
        out["hot_c8"] = _summary(r8)
        log(
            f"  hot c=8: {out['hot_c8']['throughput_rps']:.0f} req/s p99 {out['hot_c8']['latency']['p99_s'] * 1e3:.2f} ms"
        )
    from .proposals import variants

    if not any(v.module is not None for v in variants()):
        log("  engine patches: all applied to segments/engine.py (or none applies): no patched server to compare")
    else:
        _patched_server(ds.store_url, reach_req, cfg, out, log)
    if cfg.http_workers and (os.cpu_count() or 1) >= 2:
        with serve(ds.store_url, "--warm", "--workers", "2") as server:
            r8w = client(
                {
                    "base_url": server.base_url,
                    "requests": reach_req,
                    "warmup": 20,
                    "concurrency": 8,
                    "seconds": cfg.http_seconds,
                }
            )
            out["hot_c8_workers"] = _summary(r8w)
            log(f"  hot c=8, 2 workers: {out['hot_c8_workers']['throughput_rps']:.0f} req/s")
    cold: list[float] = []
    for _ in range(cfg.http_cold_starts):
        with serve(ds.store_url) as server:
            rc = client({"base_url": server.base_url, "requests": reach_req, "warmup": 0, "count": 1})
            cold.extend(rc["latencies"])
    out["cold"] = {"requests": len(cold), "latency": Timing(cold).as_dict()}
    log(f"  cold: median {np.median(cold) * 1e3:.1f} ms over {len(cold)} fresh servers")
    out.update(membership(cfg, log))
    return out


def _engine_lookups(
    mds: datasets.Dataset, users: list[int], requests: list[dict[str, Any]], cfg: Config, log: Log
) -> dict[str, Any]:
    """``Segments.segments_of`` in this process (no HTTP), warm, for the same users."""
    import segments

    out: dict[str, Any] = {}
    for label, staleness in (("lookup_staleness=0", 0.0), ("lookup_staleness=1", 1.0)):
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
    with serve(mds.store_url, "--warm") as server:
        r = client(
            {"base_url": server.base_url, "requests": requests, "warmup": 100, "count": cfg.http_requests}
        )
        out["membership"] = _summary(r, samples=True)
        out["membership"]["segments"] = len(mds.bitmaps)
        out["membership"]["mean_matches"] = count
        log(
            f"  membership ({len(mds.bitmaps)} segments): p50 {out['membership']['latency']['median_s'] * 1e3:.2f} ms "
            f"p99 {out['membership']['latency']['p99_s'] * 1e3:.2f} ms"
        )
    with serve(mds.store_url, "--warm", "--lookup-staleness", "1") as server:
        r = client(
            {"base_url": server.base_url, "requests": requests, "warmup": 100, "count": cfg.http_requests}
        )
        out["membership_stale"] = _summary(r)
        out["membership_stale"]["segments"] = len(mds.bitmaps)
    return out


def _patched_server(store_url: str, reach_req: Any, cfg: Any, out: dict[str, Any], log: Any) -> None:
    log("  hot reach server with the proposed engine patches")
    with serve(store_url, "--warm", patched=True) as server:
        r1 = client(
            {"base_url": server.base_url, "requests": reach_req, "warmup": 50, "count": cfg.http_requests}
        )
        out["hot_proposals"] = _summary(r1, samples=True)
        log(
            f"  hot c=1, proposals: p50 {out['hot_proposals']['latency']['median_s'] * 1e3:.2f} ms "
            f"p99 {out['hot_proposals']['latency']['p99_s'] * 1e3:.2f} ms"
        )
        r8 = client(
            {
                "base_url": server.base_url,
                "requests": reach_req,
                "warmup": 10,
                "concurrency": 8,
                "seconds": cfg.http_seconds,
            }
        )
        out["hot_c8_proposals"] = _summary(r8)
        log(f"  hot c=8, proposals: {out['hot_c8_proposals']['throughput_rps']:.0f} req/s")
