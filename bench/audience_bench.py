"""Audiences and time, side by side with baselines measured in the same run.

    python -m bench.audience_bench --users 5000000          # a few minutes; the goals are stated at 50M
    python -m bench.audience_bench --users 50000000 --requests 3000

What it measures (issues 12 and 13), every answer checked against plain pyroaring on the same bitmaps:

* **match**: ``POST /v1/users/{id}/match`` of a 5-term expression, one request at a time on a
  keep-alive connection (p50/p99), next to the baseline ``GET /v1/segments/{name}/members/{id}``
  (one segment, the cheapest per-user read) on the same server. Goal: p99 <= 1 ms at 50M users.
* **batch match**: ``POST /v1/match`` of 1,000 users, next to the library's ``match_many`` in process
  (what the HTTP layer adds) and a naive pyroaring loop. Goal: <= 5 ms.
* **insights**: ``POST /v1/insights`` over 200 segments, over HTTP and in process, next to the naive
  floor: the audience's bitmap intersected with each of the 200 bitmaps (cardinalities only). Goal:
  <= 100 ms hot.
* **reach history**: ``POST /v1/reach/history`` of ``paid_bill[7d] & card_gold`` for 90 daily points,
  next to 90 times one hot reach of the same expression. Goal: <= 1 s at 50M users.
* **windowed reach**: ``paid_bill[30d] & card_gold - churned`` (a union of 30 daily buckets) against
  ``paid_30d & card_gold - churned`` on a materialized 30-day segment holding the same members, hot,
  in process, interleaved. Goal: <= 2x.

Data: the cached membership data set of ``bench.datasets`` (a universe and 200 segments of 0.01 % to
10 % density) copied into a scratch store, plus ``card_gold`` (10 %), ``churned`` (1 %), a windowed
``paid_bill`` with 96 daily buckets (1 % of the users each) and the materialized ``paid_30d``.
Not part of ``python -m bench`` yet.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pyroaring import BitMap

import segments

from . import datasets
from .http_bench import latency, serve
from .timing import Timing, interleaved

SEGMENTS = 200
HISTORY_POINTS = 90
BATCH = 1000
#: the 5-term expression of the match goal (names filled in from the data set)
MATCH_EXPR = "(card_gold | {a}) & {b} - churned - {c}"
HISTORY_EXPR = "paid_bill[7d] & card_gold"
WINDOWED_EXPR = "paid_bill[30d] & card_gold - churned"
MATERIALIZED_EXPR = "paid_30d & card_gold - churned"
INSIGHTS_EXPR = "card_gold & {a} - churned"
GOALS_S = {"match p99": 0.001, "batch match": 0.005, "insights": 0.100, "reach history": 1.0}


@dataclass
class Scenario:
    users: int
    store_url: str
    bitmaps: dict[str, BitMap]
    buckets: dict[datetime, BitMap]
    today: datetime
    names: dict[str, str]


def log(message: str) -> None:
    print(message, flush=True)


@contextmanager
def scenario(users: int, seed: int) -> Iterator[Scenario]:
    """The data set in a scratch SQLite store (removed afterwards), with the windowed segment added."""
    ds = datasets.load(users, seed, kind="membership", membership_count=SEGMENTS, log=log)
    scratch = Path(tempfile.mkdtemp(prefix="audience-bench-"))
    try:
        for path in ds.directory.glob("segments.db*"):
            shutil.copy(path, scratch / path.name)
        url = f"sqlite:///{scratch / 'segments.db'}"
        bitmaps = dict(ds.bitmaps)
        bitmaps["card_gold"] = datasets.bitmap_from_array(datasets.generate(users, seed + 1, "s10"))
        bitmaps["churned"] = datasets.bitmap_from_array(datasets.generate(users, seed + 2, "s1"))
        rng = random.Random(seed)
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        buckets: dict[datetime, BitMap] = {}
        started = time.perf_counter()
        with segments.connect(url) as segs:
            segs.replace("card_gold", bitmaps["card_gold"])
            segs.replace("churned", bitmaps["churned"])
            segs.create_windowed("paid_bill", granularity="day", retention=400)
            for back in range(HISTORY_POINTS + 6):
                day = today - timedelta(days=back)
                members = BitMap(rng.sample(range(users), max(1, users // 100)))
                members.run_optimize()
                buckets[day] = members
                segs.replace("paid_bill", members, at=day)
            paid_30d = BitMap.union(*(buckets[today - timedelta(days=d)] for d in range(30)))
            segs.replace("paid_30d", paid_30d)
            bitmaps["paid_30d"] = paid_30d
        log(
            f"  windowed segment: {len(buckets)} daily buckets written in {time.perf_counter() - started:.1f} s"
        )
        by_size = sorted((n for n in ds.bitmaps if n != datasets.UNIVERSE), key=lambda n: -len(ds.bitmaps[n]))
        names = {"a": by_size[0], "b": by_size[1], "c": by_size[5]}
        yield Scenario(users, url, bitmaps, buckets, today, names)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _window(sc: Scenario, as_of: datetime, days: int) -> BitMap:
    return BitMap.union(*(b for d, b in sc.buckets.items() if as_of - timedelta(days=days) < d <= as_of))


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def _timing(result: dict[str, Any]) -> Timing:
    return Timing(list(result["latencies"]))


def match_requests(
    sc: Scenario, count: int, seed: int
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """The 5-term match requests (random users, expected answers from pyroaring) and the baseline's."""
    b = sc.bitmaps
    expr = MATCH_EXPR.format(**sc.names)
    a_, b_, c_ = (b[sc.names[k]] for k in "abc")
    members = ((b["card_gold"] | a_) & b_) - b["churned"] - c_
    rng = random.Random(seed)
    uids = [rng.randrange(sc.users) for _ in range(count)]
    match = [
        {
            "method": "POST",
            "path": f"/v1/users/{u}/match",
            "body": {"expr": expr},
            "expect": {"match": u in members},
        }
        for u in uids
    ]
    member = [
        {
            "method": "GET",
            "path": f"/v1/segments/card_gold/members/{u}",
            "expect": {"member": u in b["card_gold"]},
        }
        for u in uids
    ]
    return expr, match, member


def run(users: int, seed: int, requests: int, rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {"users": users, "segments": SEGMENTS}
    with scenario(users, seed) as sc:
        b = sc.bitmaps
        match_expr, match_reqs, member_reqs = match_requests(sc, requests, seed)
        rng = random.Random(seed + 7)
        batch = [rng.randrange(users) for _ in range(BATCH)]
        match_members = (
            ((b["card_gold"] | b[sc.names["a"]]) & b[sc.names["b"]]) - b["churned"] - b[sc.names["c"]]
        )
        insights_expr = INSIGHTS_EXPR.format(**sc.names)
        audience = (b["card_gold"] & b[sc.names["a"]]) - b["churned"]
        rows = [n for n in b if n not in (datasets.UNIVERSE, "paid_30d")][:SEGMENTS]
        start = sc.today - timedelta(days=HISTORY_POINTS - 1)
        history_expect = [
            {"at": (start + timedelta(days=i)).isoformat(),
             "reach": _window(sc, start + timedelta(days=i), 7).intersection_cardinality(b["card_gold"])}
            for i in range(HISTORY_POINTS)
        ]  # fmt: skip
        history_body = {
            "expr": HISTORY_EXPR,
            "from": start.isoformat(),
            "to": sc.today.isoformat(),
            "step": "1d",
        }

        log("  HTTP: segments serve --warm")
        with serve(sc.store_url, "--warm") as server:
            url = server.base_url
            m = _timing(latency(url, match_reqs, warmup=200, count=requests))
            base = _timing(latency(url, member_reqs, warmup=200, count=requests))
            out["match"] = {
                "expr": match_expr,
                "http": m.as_dict(),
                "baseline_membership_http": base.as_dict(),
            }
            log(f"  match (5 terms) over HTTP: p50 {_ms(m.median)}  p99 {_ms(m.p99)}  "
                f"| membership of one segment: p50 {_ms(base.median)}  p99 {_ms(base.p99)}  "
                f"| p99 ratio {m.p99 / base.p99:.2f}x  (goal p99 <= 1 ms at 50M)")  # fmt: skip
            batch_req = [{"method": "POST", "path": "/v1/match", "body": {"users": batch, "expr": match_expr},
                          "expect": {"matches": [u in match_members for u in batch]}}]  # fmt: skip
            bt = _timing(latency(url, batch_req, warmup=20, count=max(50, requests // 10)))
            out["batch_match_http"] = bt.as_dict()
            insights_req = [{"method": "POST", "path": "/v1/insights", "body": {"expr": insights_expr, "segments": rows},
                             "expect": {"reach": len(audience)}}]  # fmt: skip
            it = _timing(latency(url, insights_req, warmup=5, count=max(20, rounds)))
            out["insights_http"] = it.as_dict()
            history_req = [{"method": "POST", "path": "/v1/reach/history", "body": history_body,
                            "expect": {"points": history_expect}}]  # fmt: skip
            ht = _timing(latency(url, history_req, warmup=3, count=max(10, rounds // 3)))
            out["reach_history_http"] = ht.as_dict()

        log("  in process (hot)")
        with segments.connect(sc.store_url, lookup_staleness=0.25) as segs:
            segs.warm()
            expected_batch = sum(u in match_members for u in batch)
            expected_rows = {n: audience.intersection_cardinality(b[n]) for n in rows}

            def lib_batch() -> int:
                return sum(segs.match_many(batch, match_expr))

            def naive_batch() -> int:
                return sum(u in match_members for u in batch)

            batch_t = interleaved({"library": lib_batch, "naive": naive_batch}, rounds, expect=expected_batch)
            out["batch_match_inprocess"] = {k: v.as_dict() for k, v in batch_t.items()}
            log(f"  batch match of {BATCH:,} users: HTTP p50 {_ms(bt.median)}  p99 {_ms(bt.p99)}  "
                f"| library {_ms(batch_t['library'].median)}  | naive pyroaring on a ready bitmap "
                f"{_ms(batch_t['naive'].median)}  (goal <= 5 ms)")  # fmt: skip

            def lib_insights() -> int:
                result = segs.insights(insights_expr, rows)
                if {r.segment: r.both for r in result.rows} != expected_rows:
                    raise AssertionError("insights disagree with pyroaring")
                return result.reach

            def naive_insights() -> int:
                whole = (b["card_gold"] & b[sc.names["a"]]) - b["churned"]
                for n in rows:
                    whole.intersection_cardinality(b[n])
                    b[n].intersection_cardinality(b[datasets.UNIVERSE])
                return len(whole)

            ins = interleaved(
                {"library": lib_insights, "naive": naive_insights}, rounds, expect=len(audience)
            )
            out["insights_inprocess"] = {k: v.as_dict() for k, v in ins.items()}
            log(f"  insights over {len(rows)} segments: HTTP p50 {_ms(it.median)}  | library "
                f"{_ms(ins['library'].median)}  | naive floor {_ms(ins['naive'].median)}  "
                f"| library/naive {ins['library'].median / ins['naive'].median:.2f}x  (goal <= 100 ms)")  # fmt: skip

            expected_history = [p["reach"] for p in history_expect]

            def lib_history() -> int:
                points = segs.reach_history(HISTORY_EXPR, start=start, end=sc.today, step="1d")
                if [r for _, r in points] != expected_history:
                    raise AssertionError("reach history disagrees with pyroaring")
                return len(points)

            one = _window(sc, sc.today, 7).intersection_cardinality(b["card_gold"])

            def ninety_reaches() -> int:
                for _ in range(HISTORY_POINTS):
                    segs.reach(HISTORY_EXPR)
                return HISTORY_POINTS if segs.reach(HISTORY_EXPR) == one else -1

            hist = interleaved(
                {"history": lib_history, "90 reaches": ninety_reaches},
                max(5, rounds // 3),
                expect=HISTORY_POINTS,
            )
            out["reach_history_inprocess"] = {k: v.as_dict() for k, v in hist.items()}
            log(f"  reach history, {HISTORY_POINTS} daily points of {HISTORY_EXPR}: HTTP p50 {_ms(ht.median)}  "
                f"| library {_ms(hist['history'].median)}  | 90 hot reaches of the expression now "
                f"{_ms(hist['90 reaches'].median)}  | ratio {hist['history'].median / hist['90 reaches'].median:.2f}x  "
                f"(goal <= 1 s at 50M)")  # fmt: skip

            windowed = (_window(sc, sc.today, 30) & b["card_gold"]) - b["churned"]
            methods: dict[str, Callable[[], int]] = {
                "windowed": lambda: segs.reach(WINDOWED_EXPR),
                "materialized": lambda: segs.reach(MATERIALIZED_EXPR),
            }
            wt = interleaved(methods, rounds, expect=len(windowed))
            ratio = wt["windowed"].median / wt["materialized"].median
            out["windowed_vs_materialized"] = {k: v.as_dict() for k, v in wt.items()} | {"ratio": ratio}
            log(f"  hot reach of {WINDOWED_EXPR}: {_ms(wt['windowed'].median)}  | {MATERIALIZED_EXPR}: "
                f"{_ms(wt['materialized'].median)}  | ratio {ratio:.2f}x  (goal <= 2x)")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=5_000_000, help="universe size (default %(default)s)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--requests", type=int, default=2000, help="HTTP requests per latency measurement")
    parser.add_argument("--rounds", type=int, default=30, help="rounds of the in-process comparisons")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    log(f"audience bench: {args.users:,} users, {SEGMENTS} segments")
    result = run(args.users, args.seed, args.requests, args.rounds)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
