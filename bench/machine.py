"""The machine: what it is, and how fast it streams memory (measured in the same run)."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata

import numpy as np


@dataclass(frozen=True)
class Bandwidth:
    """Single-thread read bandwidth in bytes per second."""

    dram: float
    cache: float
    dram_array_bytes: int
    cache_array_bytes: int
    method: str

    def as_dict(self) -> dict[str, object]:
        return {
            "dram_bytes_per_s": self.dram,
            "cache_bytes_per_s": self.cache,
            "dram_array_bytes": self.dram_array_bytes,
            "cache_array_bytes": self.cache_array_bytes,
            "method": self.method,
        }


def _read_rate(array: np.ndarray, repeats: int) -> float:
    """Best rate of several read-only reductions over ``array`` (the fastest is the honest floor)."""
    best = float("inf")
    kernels: tuple[Callable[[], object], ...] = (
        lambda: array.sum(),
        lambda: np.bitwise_or.reduce(array),
        lambda: array.max(),
    )
    for _ in range(repeats):
        for kernel in kernels:
            t0 = time.perf_counter()
            kernel()
            best = min(best, time.perf_counter() - t0)
    return array.nbytes / best


def memory_bandwidth(dram_bytes: int = 1 << 30, repeats: int = 5) -> Bandwidth:
    """Read bandwidth from DRAM (an array far larger than the caches) and from cache (8 MiB)."""
    big = np.ones(dram_bytes // 8, dtype=np.uint64)
    dram = _read_rate(big, repeats)
    del big
    small = np.ones((8 << 20) // 8, dtype=np.uint64)
    cache = _read_rate(small, repeats * 20)
    return Bandwidth(
        dram,
        cache,
        dram_bytes,
        small.nbytes,
        "best of numpy sum / bitwise_or.reduce / max over a uint64 array, one thread",
    )


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_sizes() -> str:
    try:
        import subprocess

        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        found = [
            line.split(":", 1) for line in text.splitlines() if line.strip().startswith(("L1d", "L2", "L3"))
        ]
        if found:
            return ", ".join(f"{k.strip().replace(' cache', '')} {v.strip()}" for k, v in found)
    except (OSError, subprocess.SubprocessError):
        pass
    parts = []
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(base)):
            path = os.path.join(base, index)
            level = open(os.path.join(path, "level")).read().strip()
            kind = open(os.path.join(path, "type")).read().strip()
            size = open(os.path.join(path, "size")).read().strip()
            if kind != "Instruction":
                parts.append(f"L{level} {size}")
    except OSError:
        return "unknown"
    return ", ".join(parts)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, str]:
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / (1 << 20):.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "caches": cache_sizes(),
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "pyroaring": _version("pyroaring"),
        "numpy": _version("numpy"),
        "chdb": _version("chdb"),
        "redis (client)": _version("redis"),
        "fastapi": _version("fastapi"),
        "uvicorn": _version("uvicorn"),
        "confluent-kafka": _version("confluent-kafka"),
        "matplotlib": _version("matplotlib"),
    }


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_total_bytes() -> int:
    """Physical memory of the machine (``MemTotal`` of ``/proc/meminfo``), 0 when unknown."""
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
