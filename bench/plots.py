"""The PNG charts of ``RESULTS.md``, drawn from derived results (``report.derive``) with matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .goals import headline
from .processes import Log
from .report import SCALING_METHODS, Results, scaling_points

#: the series of the query charts: label and method (``None``: the floor)
SERIES: tuple[tuple[str, str | None], ...] = (
    ("floor", None),
    ("engine", "engine"),
    ("naive pyroaring", "pyroaring (naive)"),
    ("chDB", "chDB"),
    ("Redis", "Redis"),
)


def _ms(query: dict[str, Any], method: str | None) -> float:
    if method is None:
        return float(query.get("floor_s") or float("nan")) * 1e3
    t = query["timings"].get(method)
    return float(t["median_s"]) * 1e3 if t else float("nan")


def draw(results: Results, directory: Path, log: Log) -> list[str]:
    """Draw every chart the results have data for into ``directory``; the file names made."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("  matplotlib is missing: no charts")
        return []
    directory.mkdir(parents=True, exist_ok=True)
    made: list[str] = []
    users = f"{results.get('dataset', {}).get('users', 0) / 1e6:g}M users"

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(directory / f"{name}.png", dpi=110)
        plt.close(fig)
        made.append(f"{name}.png")

    head = headline(results)
    if head and head.get("floor_s"):
        t = head["timings"]
        keys = list(t)
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(keys) + 1.5))
        ax.barh(keys[::-1], [t[k]["median_s"] * 1e3 for k in keys[::-1]], color="#4c72b0")
        floor_ms = head["floor_s"] * 1e3
        limit = next((g["limit"] for g in results.get("goals", []) if g["key"] == "headline_floor"), 1.0)
        ax.axvline(floor_ms, color="#c44e52", linestyle="--", label="physical floor")
        ax.axvline(limit * floor_ms, color="#dd8452", linestyle=":", label=f"goal: {limit:g}× floor")
        ax.set_xscale("log")
        ax.set_xlabel("median time per query, ms (log)")
        ax.set_title(f"{head['text']}\n{users}, hot")
        ax.legend(loc="lower right")
        save(fig, "headline")
    engine = results.get("engine")
    if isinstance(engine, dict) and engine.get("queries"):
        qs = engine["queries"]
        fig, ax = plt.subplots(figsize=(11, 5))
        width = 0.8 / len(SERIES)
        for i, (label, method) in enumerate(SERIES):
            offset = (i - (len(SERIES) - 1) / 2) * width
            ax.bar([x + offset for x in range(len(qs))], [_ms(q, method) for q in qs], width, label=label)
        ax.set_xticks(range(len(qs)))
        ax.set_xticklabels([f"{q['key']}\n{q['terms']} terms" for q in qs])
        ax.set_yscale("log")
        ax.set_ylabel("median ms (log)")
        ax.set_title(f"Every query, {users}, hot")
        ax.legend(ncol=3, fontsize=8)
        save(fig, "queries")
    points = scaling_points(results)
    if len(points) > 1:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        xs = [p[0] for p in points]
        ax.plot(xs, [_ms(q, None) for _, q in points], "k--", label="floor")
        for method in SCALING_METHODS:
            ax.plot(xs, [_ms(q, method) for _, q in points], marker="o", label=method)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("users")
        ax.set_ylabel("median ms (log)")
        ax.set_title("Headline query vs universe size")
        ax.legend(fontsize=8)
        save(fig, "scaling")
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
        ax.set_xticks(xs)
        ax.set_xticklabels(names)
        ax.set_yscale("log")
        ax.set_ylabel("bytes (log)")
        ax.set_title("Memory per cached segment")
        ax.legend()
        save(fig, "memory")
    http = results.get("http")
    if isinstance(http, dict) and "hot" in http and http["hot"].get("samples_ms"):
        fig, ax = plt.subplots(figsize=(7, 4))
        for key, label in (("hot", "reach, one connection"), ("membership", "user lookup, one connection")):
            if key in http and http[key].get("samples_ms"):
                samples = sorted(http[key]["samples_ms"])
                ax.plot(samples, [(i + 1) / len(samples) for i in range(len(samples))], label=label)
        ax.set_xscale("log")
        ax.set_xlabel("latency, ms (log)")
        ax.set_ylabel("fraction of requests")
        ax.set_title("HTTP latency distribution (hot)")
        ax.legend()
        save(fig, "http")
    return made
