"""Runs the sections a configuration asks for and collects their results as plain data."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import datasets, machine
from . import engine_bench as eb
from .baselines import RedisServer
from .expressions import HEADLINE
from .processes import Log
from .timing import Timing

if TYPE_CHECKING:
    from .__main__ import Config


def _timings(d: dict[str, Timing]) -> dict[str, Any]:
    return {k: v.as_dict() for k, v in d.items()}


def _one_line(exc: Exception) -> str:
    """The exception's type and message, its first and last lines when it has several."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [""]
    text = lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1]}"
    return f"{type(exc).__name__}: {text}"


def run(cfg: Config, log: Log) -> dict[str, Any]:
    results: dict[str, Any] = {"failures": [], "headline": HEADLINE}
    results["environment"] = machine.environment()
    log("measuring memory bandwidth")
    bw = machine.memory_bandwidth(cfg.bandwidth_bytes, cfg.bandwidth_repeats)
    results["bandwidth"] = bw.as_dict()
    log(f"  DRAM {bw.dram / 1e9:.1f} GB/s, cache-resident {bw.cache / 1e9:.1f} GB/s")
    settings = eb.Settings(cfg.rounds, cfg.slow_rounds, cfg.set_rounds, cfg.cold_rounds, cfg.budget_s)

    def attempt(name: str, body: Callable[[], Any]) -> None:
        if name not in cfg.sections:
            return
        log(f"section {name}")
        try:
            results[name] = body()
        except Exception as exc:  # a broken section is reported, the others still run
            traceback.print_exc()
            results[name] = {"error": _one_line(exc), "detail": str(exc)}
            results["failures"].append(f"{name}: {_one_line(exc)}")

    log(f"data set: {cfg.users:,} users")
    ds = datasets.load(cfg.users, cfg.seed, log=log)
    results["dataset"] = {
        "users": ds.users,
        "seed": ds.seed,
        "from_cache": ds.from_cache,
        "build_seconds": ds.build_seconds,
        "segments": {
            n: {"cardinality": len(b), "serialized_bytes": ds.serialized_bytes(n)}
            for n, b in ds.bitmaps.items()
        },
    }
    with RedisServer() as redis_server:
        why = redis_server.start()
        results["redis"] = {"skipped": why} if why else {"version": redis_server.version}
        if why:
            log(f"  Redis skipped: {why}")
        server = None if why else redis_server
        attempt("engine", lambda: eb.run_reach(ds, bw, settings, server, log).as_dict())
        attempt("breakdown", lambda: _timings(eb.run_breakdown(ds, settings, log)))
        attempt("cold", lambda: {k: _timings(v) for k, v in eb.run_cold(ds, settings, log).items()})

        def sets() -> dict[str, Any]:
            small = datasets.load(max(1000, cfg.users // 10), cfg.seed, log=log)
            return eb.run_sets(small, settings, log).as_dict()

        attempt("sets", sets)

        def scaling() -> dict[str, Any]:
            points = []
            for users in cfg.scaling:
                log(f"  scaling: {users:,} users")
                small = datasets.load(users, cfg.seed, log=log)
                points.append(eb.run_scaling_point(small, bw, settings, server, log).as_dict())
            return {"points": points}

        attempt("scaling", scaling)

    def overhead() -> dict[str, Any]:
        import tempfile
        from pathlib import Path

        from . import overhead_bench

        with tempfile.TemporaryDirectory(prefix="bench-overhead-") as directory:
            tiny = overhead_bench.tiny(cfg.seed, cfg.rounds * 20, cfg.budget_s, Path(directory) / "tiny.db", log)
        return {"tiny": tiny, "realdata": overhead_bench.realdata(cfg.realdata, cfg.rounds, cfg.budget_s, log)}

    attempt("overhead", overhead)

    def coldstart() -> dict[str, Any]:
        from . import cold_bench

        return cold_bench.run(ds, cfg.cold_rounds, cfg.budget_s, log)

    attempt("coldstart", coldstart)
    ds.bitmaps.clear()

    def scale() -> dict[str, Any]:
        from . import scale_bench

        return scale_bench.run(
            cfg.scale_users, cfg.seed, cfg.rounds, cfg.budget_s, log, machine.memory_total_bytes()
        )

    attempt("scale", scale)

    def memory() -> dict[str, Any]:
        from . import memory_bench

        return memory_bench.measure(ds.directory, list(results["dataset"]["segments"]))

    attempt("memory", memory)

    def http() -> dict[str, Any]:
        from . import http_bench

        return http_bench.run(cfg, ds, log)

    attempt("http", http)

    def ingest() -> dict[str, Any]:
        from . import ingest_bench

        return ingest_bench.run(cfg, log)

    attempt("ingest", ingest)
    return results
