"""``python -m bench``: run the benchmark suite and write ``RESULTS.md``, ``results.json`` and charts.

``--quick`` runs a 5M-user universe with few repetitions (under a minute once
the data set is cached) and writes to ``bench/.cache/quick/`` so it never
overwrites the recorded full results; the full run (50M users) writes to
``bench/``. ``--users`` / ``--sections`` / ``--out`` adjust a run; ``--smoke``
is the tiny configuration the test suite uses.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

SECTIONS = (
    "engine", "sets", "cold", "breakdown", "scaling", "overhead", "coldstart", "scale", "memory", "http", "ingest",
)  # fmt: skip
BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Config:
    users: int = 50_000_000
    seed: int = 42
    rounds: int = 100
    slow_rounds: int = 25
    set_rounds: int = 3
    cold_rounds: int = 15
    budget_s: float = 20.0
    scaling: tuple[int, ...] = (1_000_000, 5_000_000, 10_000_000)
    bandwidth_bytes: int = 1 << 30
    bandwidth_repeats: int = 5
    membership_segments: int = 500
    #: user lookups also on an Aerospike (the test server, or SEGMENTS_TEST_AEROSPIKE's)
    aerospike_lookups: bool = True
    #: universe sizes of the scale model
    scale_users: tuple[int, ...] = (5_000_000, 10_000_000, 50_000_000, 100_000_000)
    #: CRoaring's benchmarks/realdata folder (``--realdata``)
    realdata: Path | None = None
    http_requests: int = 3000
    http_seconds: float = 6.0
    http_cold_starts: int = 5
    http_workers: bool = True
    ingest_ids: int = 20_000_000
    ingest_json_ids: int = 2_000_000
    freshness_samples: int = 60
    sections: tuple[str, ...] = SECTIONS
    quick: bool = False
    charts: bool = True
    out: Path = BENCH_DIR


QUICK = Config(
    users=5_000_000,
    rounds=30,
    slow_rounds=8,
    set_rounds=2,
    cold_rounds=5,
    budget_s=2.0,
    scaling=(1_000_000, 2_000_000),
    scale_users=(1_000_000, 2_000_000, 5_000_000),
    bandwidth_bytes=256 << 20,
    bandwidth_repeats=3,
    http_requests=400,
    http_seconds=2.0,
    http_cold_starts=1,
    http_workers=False,
    ingest_ids=2_000_000,
    ingest_json_ids=200_000,
    freshness_samples=5,
    quick=True,
    out=BENCH_DIR / ".cache" / "quick",
)

SMOKE = replace(
    QUICK,
    users=200_000,
    rounds=3,
    slow_rounds=2,
    set_rounds=1,
    cold_rounds=2,
    budget_s=0.5,
    scaling=(100_000,),
    scale_users=(100_000, 200_000),
    bandwidth_bytes=64 << 20,
    bandwidth_repeats=1,
    membership_segments=20,
    http_requests=30,
    http_seconds=0.5,
    http_cold_starts=1,
    ingest_ids=100_000,
    ingest_json_ids=10_000,
    freshness_samples=2,
    charts=False,
)


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5M users, few repetitions (under a minute)")
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite (200k users)")
    parser.add_argument("--users", type=int, help="users in the main universe")
    parser.add_argument("--seed", type=int, help="seed of every generator")
    parser.add_argument(
        "--sections",
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--out", type=Path, help="directory for RESULTS.md, results.json and charts/")
    parser.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    parser.add_argument(
        "--realdata",
        type=Path,
        help="CRoaring's benchmarks/realdata folder (census1881, weather_sept_85, ...): engine vs pyroaring on it",
    )
    args = parser.parse_args(argv)
    cfg = SMOKE if args.smoke else QUICK if args.quick else Config()
    changes: dict[str, Any] = {}
    if args.users:
        changes["users"] = args.users
        changes["scaling"] = tuple(s for s in cfg.scaling if s < args.users)
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.sections:
        wanted = tuple(s.strip() for s in args.sections.split(",") if s.strip())
        unknown = [s for s in wanted if s not in SECTIONS]
        if unknown:
            parser.error(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
        changes["sections"] = wanted
    if args.out:
        changes["out"] = args.out
    if args.no_charts:
        changes["charts"] = False
    if args.realdata:
        changes["realdata"] = args.realdata
    return replace(cfg, **changes)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    from . import runner

    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)

    cfg.out.mkdir(parents=True, exist_ok=True)
    log(f"bench: {cfg.users:,} users, seed {cfg.seed}, sections {','.join(cfg.sections)} -> {cfg.out}")
    try:
        results = runner.run(cfg, log)
    except Exception:
        traceback.print_exc()
        return 1
    results["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    results["total_seconds"] = time.perf_counter() - started
    from . import report

    path = report.write(results, cfg.out, charts=cfg.charts, log=log)
    log(f"wrote {path} and results.json in {results['total_seconds']:.0f} s")
    failures: list[str] = results.get("failures", [])
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
