"""``RESULTS.md`` and the PNG charts, from the plain-data results of a run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .expressions import HEADLINE
from .timing import fmt_ratio, fmt_time

Log = Callable[[str], None]
NA = "–"

ENGINE = "engine"


def _med(t: dict[str, Any] | None) -> float:
    return float(t["median_s"]) if t else float("nan")


def _p99(t: dict[str, Any] | None) -> float:
    return float(t["p99_s"]) if t else float("nan")


def _best_proposal(timings: dict[str, Any], *, suffix: str = "") -> str | None:
    keys = [
        k
        for k in timings
        if k.startswith("proposal ") and k.endswith(suffix) and (suffix or ("," not in k and "(" not in k))
    ]
    return sorted(keys)[-1] if keys else None


def _headline(results: dict[str, Any]) -> dict[str, Any] | None:
    engine = results.get("engine")
    if not isinstance(engine, dict) or "queries" not in engine:
        return None
    return next((q for q in engine["queries"] if q["text"] == HEADLINE), None)


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return "not measured"
    return "**met**" if ok else "**missed**"


def _gb(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e9:.1f} GB/s"


def _size(n: float) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n:.0f} B"


# -- goals ---------------------------------------------------------------------------


def goals(results: dict[str, Any]) -> list[str]:
    bw = results["bandwidth"]["dram_bytes_per_s"]
    rows: list[tuple[str, str, str]] = []
    head = _headline(results)
    users = results.get("dataset", {}).get("users", 0)
    if head:
        t = head["timings"]
        floor = head["floor_bytes"] / bw
        eng = _med(t.get(ENGINE))
        best = _best_proposal(t)
        rows.append(
            (
                f"Hot 5-term reach over {users / 1e6:.0f}M users, engine (`Segments.reach`, sqlite store): "
                "≤ 1.5× the measured floor",
                f"as committed: {fmt_time(eng)} = {fmt_ratio(eng / floor)} the floor ({fmt_time(floor)})"
                + (
                    f"; with proposals 1–{best.split()[1]}: {fmt_time(_med(t[best]))} = "
                    f"{fmt_ratio(_med(t[best]) / floor)}"
                    if best
                    else ""
                ),
                _verdict(eng <= 1.5 * floor)
                + (f" / {_verdict(_med(t[best]) <= 1.5 * floor)} with proposals" if best else ""),
            )
        )
        nostore = t.get(f"{best}, no store read") if best else None
        if nostore:
            rows.append(
                (
                    "… its evaluation part (meta read memoised: planning, cache lookups, evaluation)",
                    f"as committed: {fmt_time(_med(t.get('engine, no store read')))} = "
                    f"{fmt_ratio(_med(t.get('engine, no store read')) / floor)}; with proposals: "
                    f"{fmt_time(_med(nostore))} = {fmt_ratio(_med(nostore) / floor)} the floor",
                    _verdict(_med(nostore) <= 1.5 * floor) + " with proposals",
                )
            )
        ahead = []
        ok = True
        ref = _med(t[best]) if best else eng
        for other in ("chDB", "Redis"):
            if other in t:
                r = _med(t[other]) / ref
                ahead.append(f"{other} is {fmt_ratio(r)} slower")
                ok = ok and r >= 2
            else:
                ahead.append(f"{other} not measured ({results['engine']['skipped'].get(other, '?')})")
        rows.append(
            (
                "… well ahead of chDB and Redis in the same run (at least 2× faster)",
                "; ".join(ahead) + (" (vs the engine with proposals)" if best else ""),
                _verdict(ok if ahead else None),
            )
        )
    else:
        rows.append(("Hot 5-term reach, engine ≤ 1.5× floor", "not measured", _verdict(None)))
    http = results.get("http")
    if isinstance(http, dict) and "hot" in http:
        hot = http["hot"]
        p50, p99 = hot["latency"]["median_s"], hot["latency"]["p99_s"]
        prop = http.get("hot_proposals")
        text = f"as committed: p50 {fmt_time(p50)}, p99 {fmt_time(p99)}"
        verdict = _verdict(p50 <= 5e-3 and p99 <= 15e-3)
        if prop:
            q50, q99 = prop["latency"]["median_s"], prop["latency"]["p99_s"]
            text += f"; with the engine proposals: p50 {fmt_time(q50)}, p99 {fmt_time(q99)}"
            verdict += f" / {_verdict(q50 <= 5e-3 and q99 <= 15e-3)} with proposals"
        rows.append(
            (
                "Same over HTTP (`POST /v1/reach`, keep-alive client process, concurrency 1): p50 ≤ 5 ms, p99 ≤ 15 ms",
                text,
                verdict,
            )
        )
    else:
        rows.append(("Same over HTTP: p50 ≤ 5 ms, p99 ≤ 15 ms", _skip_text(http), _verdict(None)))
    if isinstance(http, dict) and "membership" in http:
        mem = http["membership"]["latency"]
        rows.append(
            (
                f"Membership lookup `GET /v1/users/{{id}}/segments`, {http['membership']['segments']} segments: "
                "p99 ≤ 2 ms over HTTP",
                f"p50 {fmt_time(mem['median_s'])}, p99 {fmt_time(mem['p99_s'])}",
                _verdict(mem["p99_s"] <= 2e-3),
            )
        )
    else:
        rows.append(("Membership lookup: p99 ≤ 2 ms over HTTP", _skip_text(http), _verdict(None)))
    ingest = results.get("ingest")
    if isinstance(ingest, dict) and "binary" in ingest:
        rate = ingest["binary"]["ids_per_s"]
        rows.append(
            (
                "Ingest: ≥ 1M IDs/s per consumer process, binary messages",
                f"{rate / 1e6:.2f}M IDs/s (JSON: {ingest['json']['ids_per_s'] / 1e6:.2f}M IDs/s)",
                _verdict(rate >= 1e6),
            )
        )
    else:
        rows.append(("Ingest: ≥ 1M IDs/s per consumer process, binary", _skip_text(ingest), _verdict(None)))
    if isinstance(ingest, dict) and "freshness" in ingest:
        fr = ingest["freshness"]
        rows.append(
            (
                "Freshness: p99 ≤ 1 s from produce to visible in a reach query",
                f"p50 {fmt_time(fr['median_s'])}, p99 {fmt_time(fr['p99_s'])}",
                _verdict(fr["p99_s"] <= 1.0),
            )
        )
    else:
        rows.append(("Freshness: p99 ≤ 1 s", _skip_text(ingest), _verdict(None)))
    memory = results.get("memory")
    if isinstance(memory, dict) and memory and "error" not in memory:
        total_c = sum(v["cached_bytes"] for v in memory.values())
        total_s = sum(v["serialized_bytes"] for v in memory.values())
        over = {k: v["cached_bytes"] / v["serialized_bytes"] for k, v in memory.items()}
        missed = {k: r for k, r in over.items() if r > 1.2}
        within = [k for k, r in over.items() if r <= 1.2]
        rows.append(
            (
                "Cached memory ≤ 1.2× serialized size",
                f"all segments together {fmt_ratio(total_c / total_s)}; within 1.2×: "
                + (", ".join(f"`{k}` {fmt_ratio(over[k])}" for k in within) or "none")
                + "; above: "
                + (
                    ", ".join(
                        f"`{k}` {fmt_ratio(r)} ({_size(memory[k]['serialized_bytes'])} → {_size(memory[k]['cached_bytes'])})"
                        for k, r in missed.items()
                    )
                    or "none"
                ),
                _verdict(total_c <= 1.2 * total_s)
                + " in total"
                + (
                    f"; **missed** for {len(missed)} of {len(over)} segments"
                    if missed
                    else ", and for every segment"
                ),
            )
        )
    else:
        rows.append(("Cached memory ≤ 1.2× serialized size", _skip_text(memory), _verdict(None)))
    out = ["| goal | measured | verdict |", "| --- | --- | --- |"]
    out += [f"| {g} | {m} | {v} |" for g, m, v in rows]
    return out


def _skip_text(section: object) -> str:
    if section is None:
        return "not measured yet (section not run)"
    if isinstance(section, dict):
        if "skipped" in section:
            return f"not measured yet: {section['skipped']}"
        if "error" in section:
            return f"failed: {section['error']}"
    return "not measured"


# -- section tables ------------------------------------------------------------------


def method_order(timings: dict[str, Any]) -> list[str]:
    order = ["engine", "engine, no store read", "engine (memory://)"]
    props = sorted(k for k in timings if k.startswith("proposal "))
    rest = ["pyroaring (naive)", "chDB", "Redis", "set"]
    keys = [k for k in order if k in timings] + props + [k for k in rest if k in timings]
    return keys + [k for k in timings if k not in keys]


def engine_tables(results: dict[str, Any]) -> list[str]:
    engine = results.get("engine")
    if not isinstance(engine, dict) or "queries" not in engine:
        return [f"Not measured: {_skip_text(engine)}"]
    bw = results["bandwidth"]["dram_bytes_per_s"]
    out: list[str] = []
    head = _headline(results)
    if head:
        t = head["timings"]
        floor = head["floor_bytes"] / bw
        best = _best_proposal(t)
        ref = t.get(best) if best else t[ENGINE]
        out += [
            f"### The headline query `{HEADLINE}` ({results['dataset']['users'] / 1e6:.0f}M users, reach "
            f"{head['answer']:,})",
            "",
            f"Floor: {_size(head['floor_bytes'])} touched at {_gb(bw)} = **{fmt_time(floor)}** "
            f"({', '.join(f'`{k}` {_size(v)}' for k, v in head['floor_by_segment'].items())}).",
            "",
            "| method | median | p99 | × floor | × engine as committed | × engine with proposals | samples |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for k in method_order(t):
            v = t[k]
            out.append(
                f"| {k} | {fmt_time(_med(v))} | {fmt_time(_p99(v))} | {fmt_ratio(_med(v) / floor)} | "
                f"{fmt_ratio(_med(v) / _med(t[ENGINE]))} | {fmt_ratio(_med(v) / _med(ref))} | {v['n']} |"
            )
        out.append("")
    out += [
        "### Every query (medians; ratios against the engine with all proposals, same rounds)",
        "",
        "| query | terms | reach | floor | engine | engine + proposals | × floor | naive pyroaring | chDB | Redis |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for q in engine["queries"]:
        t = q["timings"]
        floor = q["floor_bytes"] / bw
        best = _best_proposal(t)
        ref = _med(t[best]) if best else _med(t[ENGINE])

        def cell(key: str, t: dict[str, Any] = t, ref: float = ref) -> str:
            if key not in t:
                return NA
            return f"{fmt_time(_med(t[key]))} ({fmt_ratio(_med(t[key]) / ref)})"

        out.append(
            f"| `{q['text']}` | {q['terms']} | {q['answer']:,} | {fmt_time(floor)} | {cell(ENGINE)} | "
            f"{fmt_time(ref)} | {fmt_ratio(ref / floor)} | {cell('pyroaring (naive)')} | {cell('chDB')} | {cell('Redis')} |"
        )
    out.append("")
    out.append(
        "p99 of every method is in `results.json`. Skipped: "
        + (", ".join(f"{k}: {v}" for k, v in engine["skipped"].items()) or "nothing")
        + ". Loading the data into the alternatives took: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in engine["load_seconds"].items())
        + "."
    )
    return out


def sets_table(results: dict[str, Any]) -> list[str]:
    sets = results.get("sets")
    if not isinstance(sets, dict) or "queries" not in sets:
        return [f"Not measured: {_skip_text(sets)}"]
    out = [
        f"Python `set` on a {sets['users'] / 1e6:g}M-user universe (1/10 scale), next to the engine and "
        "naive pyroaring on the same data, same rounds.",
        "",
        "| query | set | engine | engine + proposals | naive pyroaring | set ÷ engine + proposals |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for q in sets["queries"]:
        t = q["timings"]
        best = _best_proposal(t)
        ref = _med(t[best]) if best else _med(t[ENGINE])
        out.append(
            f"| `{q['text']}` | {fmt_time(_med(t['set']))} | {fmt_time(_med(t[ENGINE]))} | {fmt_time(ref)} | "
            f"{fmt_time(_med(t['pyroaring (naive)']))} | {fmt_ratio(_med(t['set']) / ref)} |"
        )
    out.append("")
    out.append(f"Building the sets took {sets['load_seconds'].get('set', 0):.1f} s.")
    return out


def breakdown_table(results: dict[str, Any]) -> list[str]:
    bd = results.get("breakdown")
    if not isinstance(bd, dict) or "engine" not in bd:
        return [f"Not measured: {_skip_text(bd)}"]
    parts = ["store.get_many(meta)", "engine.snapshot", "reach, no store read", "reach"]
    out = [
        "| engine | " + " | ".join(parts) + " |",
        "| --- | " + " | ".join("---" for _ in parts) + " |",
    ]
    for variant, t in bd.items():
        out.append(f"| {variant} | " + " | ".join(f"{fmt_time(_med(t[p]))}" for p in parts) + " |")
    return out


def cold_table(results: dict[str, Any]) -> list[str]:
    cold = results.get("cold")
    if not isinstance(cold, dict) or "q5" not in cold:
        return [f"Not measured: {_skip_text(cold)}"]
    out = ["| query | method | median | p99 | samples |", "| --- | --- | --- | --- | --- |"]
    texts = {"q5": HEADLINE, "q2a": "s10 & s30"}
    for key, t in cold.items():
        for method, v in t.items():
            out.append(
                f"| `{texts.get(key, key)}` | {method} | {fmt_time(_med(v))} | {fmt_time(_p99(v))} | {v['n']} |"
            )
    return out


def scaling_table(results: dict[str, Any]) -> list[str]:
    points = _scaling_points(results)
    if not points:
        return ["Not measured."]
    bw = results["bandwidth"]["dram_bytes_per_s"]
    methods = ["engine", "proposal", "pyroaring (naive)", "chDB", "Redis"]
    out = [
        "| users | floor | "
        + " | ".join(m if m != "proposal" else "engine + proposals" for m in methods)
        + " |",
        "| --- | --- | " + " | ".join("---" for _ in methods) + " |",
    ]
    for users, q in points:
        t = q["timings"]
        best = _best_proposal(t)
        cells = []
        for m in methods:
            key = best if m == "proposal" else m
            cells.append(fmt_time(_med(t[key])) if key and key in t else NA)
        out.append(f"| {users / 1e6:g}M | {fmt_time(q['floor_bytes'] / bw)} | " + " | ".join(cells) + " |")
    return out


def _scaling_points(results: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    points: list[tuple[int, dict[str, Any]]] = []
    scaling = results.get("scaling")
    if isinstance(scaling, dict):
        for p in scaling.get("points", []):
            if p["queries"]:
                points.append((p["users"], p["queries"][0]))
    head = _headline(results)
    if head:
        points.append((results["dataset"]["users"], head))
    return sorted(points, key=lambda x: x[0])


def memory_table(results: dict[str, Any]) -> list[str]:
    memory = results.get("memory")
    if not isinstance(memory, dict) or not memory or "error" in memory:
        return [f"Not measured: {_skip_text(memory)}"]
    out = [
        "| segment | members | containers (bitmap/array/run) | serialized | cached (heap in use) | × serialized | "
        "bare `BitMap.deserialize` | engine bookkeeping | `cache.nbytes` accounts |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, v in memory.items():
        out.append(
            f"| `{name}` | {v['cardinality']:,} | {v['containers']} ({v['bitset_containers']}/{v['array_containers']}/"
            f"{v['run_containers']}) | {_size(v['serialized_bytes'])} | {_size(v['cached_bytes'])} | "
            f"{fmt_ratio(v['cached_bytes'] / v['serialized_bytes'])} | {_size(v['bitmap_only_bytes'])} | "
            f"{_size(v['cached_bytes'] - v['bitmap_only_bytes'])} | {_size(v['cache_accounted_bytes'])} |"
        )
    total_c = sum(v["cached_bytes"] for v in memory.values())
    total_s = sum(v["serialized_bytes"] for v in memory.values())
    out.append(
        f"| **all** | | | {_size(total_s)} | {_size(total_c)} | {fmt_ratio(total_c / total_s)} | | | |"
    )
    return out


def http_tables(results: dict[str, Any]) -> list[str]:
    http = results.get("http")
    if not isinstance(http, dict) or "hot" not in http:
        return [f"Not measured yet: {_skip_text(http)}"]
    out = [
        f"Server: `segments serve` ({http.get('server', '')}); client: {http.get('client', '')}.",
        "",
        "| measurement | requests | p50 | p99 | throughput |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, label in (
        ("hot", "hot reach, concurrency 1"),
        ("hot_c8", "hot reach, concurrency 8"),
        ("hot_c8_workers", "hot reach, concurrency 8, 2 workers"),
        ("hot_proposals", "hot reach, concurrency 1, engine with the proposals"),
        ("hot_c8_proposals", "hot reach, concurrency 8, engine with the proposals"),
        ("membership", "membership lookup, API defaults, concurrency 1"),
        ("membership_stale", "membership lookup, `--lookup-staleness 1`, concurrency 1"),
    ):
        if key in http:
            r = http[key]
            out.append(
                f"| {label} | {r['requests']:,} | {fmt_time(r['latency']['median_s'])} | "
                f"{fmt_time(r['latency']['p99_s'])} | {r.get('throughput_rps', 0):,.0f} req/s |"
            )
    for label, t in http.get("membership_engine", {}).items():
        out.append(
            f"| membership lookup in-process (`Segments.segments_of`, {label}, no HTTP) | | "
            f"{fmt_time(t['median_s'])} | {fmt_time(t['p99_s'])} | |"
        )
    if "cold" in http:
        c = http["cold"]
        out.append(
            f"| cold reach: first request of a fresh process | {c['requests']} | {fmt_time(c['latency']['median_s'])} | "
            f"{fmt_time(c['latency']['p99_s'])} | |"
        )
    if "engine_took" in http:
        out += [
            "",
            f"Engine time inside the server (`took_ms`, hot, concurrency 1): p50 {fmt_time(http['engine_took']['median_s'])}, "
            f"p99 {fmt_time(http['engine_took']['p99_s'])}.",
        ]
    for note in http.get("notes", []):
        out += ["", note]
    return out


def ingest_tables(results: dict[str, Any]) -> list[str]:
    ingest = results.get("ingest")
    if not isinstance(ingest, dict) or "binary" not in ingest:
        return [f"Not measured yet: {_skip_text(ingest)}"]
    out = ["| measurement | IDs | messages | seconds | IDs/s |", "| --- | --- | --- | --- | --- |"]
    for key, label in (("binary", "binary roaring messages"), ("json", "JSON messages")):
        r = ingest[key]
        out.append(
            f"| {label} | {r['ids']:,} | {r['messages']:,} | {r['seconds']:.2f} | {r['ids_per_s'] / 1e6:.2f}M |"
        )
    for key, label in (
        ("freshness", "default consumer settings"),
        ("freshness_fast", "`SEGMENTS_BATCH_MAX_WAIT=0.05`, `-X fetch.wait.max.ms=10`"),
    ):
        if key in ingest:
            fr = ingest[key]
            out += [
                "",
                f"Freshness (produce, acknowledged → a reach query reflects it), {label}, {fr['n']} samples: "
                f"p50 {fmt_time(fr['median_s'])}, p99 {fmt_time(fr['p99_s'])}, max {fmt_time(fr.get('max_s', float('nan')))}.",
            ]
    for note in ingest.get("notes", []):
        out += ["", note]
    return out


# -- charts --------------------------------------------------------------------------


def charts(results: dict[str, Any], directory: Path, log: Log) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("  matplotlib is missing: no charts")
        return []
    directory.mkdir(parents=True, exist_ok=True)
    made: list[str] = []
    bw = results["bandwidth"]["dram_bytes_per_s"]
    head = _headline(results)
    if head:
        t = head["timings"]
        last = _best_proposal(t)
        keys = [
            k
            for k in method_order(t)
            if "no store read" not in k or k.startswith("engine,") or (last and k.startswith(last + ","))
        ]
        values = [_med(t[k]) * 1e3 for k in keys]
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(keys) + 1.5))
        ax.barh(keys[::-1], values[::-1], color="#4c72b0")
        ax.axvline(head["floor_bytes"] / bw * 1e3, color="#c44e52", linestyle="--", label="physical floor")
        ax.axvline(
            1.5 * head["floor_bytes"] / bw * 1e3, color="#dd8452", linestyle=":", label="goal: 1.5× floor"
        )
        ax.set_xscale("log")
        ax.set_xlabel("median time per query, ms (log)")
        ax.set_title(f"{HEADLINE}\n{results['dataset']['users'] / 1e6:.0f}M users, hot")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(directory / "headline.png", dpi=110)
        plt.close(fig)
        made.append("headline.png")
    engine = results.get("engine")
    if isinstance(engine, dict) and engine.get("queries"):
        qs = engine["queries"]
        series = [
            ("floor", None),
            ("engine", ENGINE),
            ("engine + proposals", "best"),
            ("naive pyroaring", "pyroaring (naive)"),
            ("chDB", "chDB"),
            ("Redis", "Redis"),
        ]
        fig, ax = plt.subplots(figsize=(11, 5))
        width = 0.13
        for i, (label, key) in enumerate(series):
            vals = []
            for q in qs:
                t = q["timings"]
                if key is None:
                    vals.append(q["floor_bytes"] / bw * 1e3)
                elif key == "best":
                    b = _best_proposal(t)
                    vals.append(_med(t[b]) * 1e3 if b else float("nan"))
                else:
                    vals.append(_med(t[key]) * 1e3 if key in t else float("nan"))
            ax.bar([x + (i - 2.5) * width for x in range(len(qs))], vals, width, label=label)
        ax.set_xticks(range(len(qs)))
        ax.set_xticklabels([f"{q['key']}\n{q['terms']} terms" for q in qs])
        ax.set_yscale("log")
        ax.set_ylabel("median ms (log)")
        ax.set_title(f"Every query, {results['dataset']['users'] / 1e6:.0f}M users, hot")
        ax.legend(ncol=3, fontsize=8)
        fig.tight_layout()
        fig.savefig(directory / "queries.png", dpi=110)
        plt.close(fig)
        made.append("queries.png")
    points = _scaling_points(results)
    if len(points) > 1:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        xs = [p[0] for p in points]
        ax.plot(xs, [p[1]["floor_bytes"] / bw * 1e3 for p in points], "k--", label="floor")
        for label, key in (
            ("engine", ENGINE),
            ("engine + proposals", "best"),
            ("naive pyroaring", "pyroaring (naive)"),
            ("chDB", "chDB"),
            ("Redis", "Redis"),
        ):
            ys = []
            for _, q in points:
                t = q["timings"]
                k = _best_proposal(t) if key == "best" else key
                ys.append(_med(t[k]) * 1e3 if k and k in t else float("nan"))
            ax.plot(xs, ys, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("users")
        ax.set_ylabel("median ms (log)")
        ax.set_title("Headline query vs universe size")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(directory / "scaling.png", dpi=110)
        plt.close(fig)
        made.append("scaling.png")
    if head:
        t = head["timings"]
        steps = ["engine"] + sorted(
            k for k in t if k.startswith("proposal ") and "," not in k and "(" not in k
        )
        fig, ax = plt.subplots(figsize=(7, 4))
        xs = list(range(len(steps)))
        ax.bar([x - 0.2 for x in xs], [_med(t[s]) * 1e3 for s in steps], 0.4, label="reach (with meta read)")
        nostore = [f"{s}, no store read" for s in steps]
        ax.bar(
            [x + 0.2 for x in xs],
            [_med(t[s]) * 1e3 if s in t else float("nan") for s in nostore],
            0.4,
            label="no store read",
        )
        ax.axhline(head["floor_bytes"] / bw * 1e3, color="#c44e52", linestyle="--", label="floor")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(["as committed"] + [s.replace("proposal ", "+ patch ") for s in steps[1:]])
        ax.set_yscale("log")
        ax.set_ylabel("median ms (log)")
        ax.set_title("Headline query, step by step")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(directory / "proposals.png", dpi=110)
        plt.close(fig)
        made.append("proposals.png")
    memory = results.get("memory")
    if isinstance(memory, dict) and memory and "error" not in memory:
        names = list(memory)
        fig, ax = plt.subplots(figsize=(8, 4))
        xs = list(range(len(names)))
        ax.bar([x - 0.2 for x in xs], [memory[n]["serialized_bytes"] for n in names], 0.4, label="serialized")
        ax.bar(
            [x + 0.2 for x in xs],
            [memory[n]["cached_bytes"] for n in names],
            0.4,
            label="cached (heap in use)",
        )
        ax.set_xticks(list(xs))
        ax.set_xticklabels(names)
        ax.set_yscale("log")
        ax.set_ylabel("bytes (log)")
        ax.set_title("Memory per cached segment")
        ax.legend()
        fig.tight_layout()
        fig.savefig(directory / "memory.png", dpi=110)
        plt.close(fig)
        made.append("memory.png")
    http = results.get("http")
    if isinstance(http, dict) and "hot" in http and http["hot"].get("samples_ms"):
        fig, ax = plt.subplots(figsize=(7, 4))
        for key, label in (
            ("hot", "reach, c=1"),
            ("hot_proposals", "reach, c=1, proposals"),
            ("membership", "membership, c=1"),
        ):
            if key in http and http[key].get("samples_ms"):
                xs = sorted(http[key]["samples_ms"])
                ys = [(i + 1) / len(xs) for i in range(len(xs))]
                ax.plot(xs, ys, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("latency, ms (log)")
        ax.set_ylabel("fraction of requests")
        ax.set_title("HTTP latency distribution (hot)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(directory / "http.png", dpi=110)
        plt.close(fig)
        made.append("http.png")
    return made


# -- the document --------------------------------------------------------------------


def environment_table(results: dict[str, Any]) -> list[str]:
    env = results.get("environment", {})
    bw = results["bandwidth"]
    out = ["| | |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in env.items()]
    out.append(
        f"| memory bandwidth (measured) | DRAM {_gb(bw['dram_bytes_per_s'])} ({_size(bw['dram_array_bytes'])} array), "
        f"cache-resident {_gb(bw['cache_bytes_per_s'])} ({_size(bw['cache_array_bytes'])}); {bw['method']} |"
    )
    redis = results.get("redis", {})
    out.append(f"| redis-server | {redis.get('version') or redis.get('skipped', NA)} |")
    cfg = results.get("config", {})
    out.append(
        f"| run | {cfg.get('users', 0):,} users, seed {cfg.get('seed')}, {cfg.get('rounds')} rounds "
        f"({cfg.get('slow_rounds')} for slow methods), {'quick' if cfg.get('quick') else 'full'}; "
        f"took {results.get('total_seconds', 0):.0f} s |"
    )
    return out


def write(results: dict[str, Any], out: Path, *, charts: bool = True, log: Log = print) -> Path:
    from . import narrative

    made = globals()["charts"](results, out / "charts", log) if charts else []
    lines: list[str] = []
    lines += narrative.header(results)
    lines += ["## Goals", ""] + goals(results) + [""]
    lines += narrative.summary(results)
    lines += ["## Environment", ""] + environment_table(results) + [""]
    lines += narrative.method(results)
    lines += ["## 1. Reach, engine only, hot", ""] + engine_tables(results) + [""]
    if "headline.png" in made:
        lines += ["![headline](charts/headline.png)", ""]
    if "queries.png" in made:
        lines += ["![queries](charts/queries.png)", ""]
    lines += ["### Python sets", ""] + sets_table(results) + [""]
    lines += ["### Where the time goes (headline query)", ""] + breakdown_table(results) + [""]
    lines += narrative.breakdown(results)
    lines += ["### Cold: a fresh client, segments fetched from SQLite", ""] + cold_table(results) + [""]
    lines += ["### Scaling: the headline query at 1M to 50M users", ""] + scaling_table(results) + [""]
    if "scaling.png" in made:
        lines += ["![scaling](charts/scaling.png)", ""]
    lines += ["## Performance work: what was measured and changed", ""] + narrative.steps(results)
    if "proposals.png" in made:
        lines += ["![proposals](charts/proposals.png)", ""]
    lines += ["## 2–3. HTTP: reach and membership lookups", ""] + http_tables(results) + [""]
    lines += narrative.http(results)
    if "http.png" in made:
        lines += ["![http](charts/http.png)", ""]
    lines += ["## 4. Ingest and freshness", ""] + ingest_tables(results) + [""]
    lines += ["## 5. Memory per cached segment", ""] + memory_table(results) + [""]
    lines += narrative.memory(results)
    if "memory.png" in made:
        lines += ["![memory](charts/memory.png)", ""]
    lines += narrative.limits(results)
    path = out / "RESULTS.md"
    path.write_text("\n".join(lines) + "\n")
    return path
