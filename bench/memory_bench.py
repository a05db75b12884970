"""Resident bytes per cached segment against its serialized size.

Measured in a child process started with ``PYTHONMALLOC=malloc``, so every
allocation (Python objects and CRoaring containers alike) goes through
glibc ``malloc`` and ``mallinfo2()`` counts it. The child builds an
in-process ``memory://`` store from the cached data set (so the store's own
records exist before measuring), then for each segment: ``gc.collect()``,
``malloc_trim(0)``, read the bytes in use, make a fresh client cache the
segment whole (``overlap([name])``), drop everything transient, read again.
The difference is what the cache keeps for that segment: the bitmap, the
entry and its shard bookkeeping, the cached shard map. For comparison the
child also measures a bare ``BitMap.deserialize`` of the same bytes: what
pyroaring needs at the least.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
from pathlib import Path
from typing import Any

from pyroaring import BitMap

from .machine import rss_bytes
from .processes import run_module


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
            "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        return libc
    except (OSError, AttributeError):
        return None


def heap_in_use(libc: ctypes.CDLL) -> int:
    gc.collect()
    libc.malloc_trim(0)
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def probe(directory: Path, names: list[str]) -> dict[str, Any]:
    """Run inside the child: measure each segment's cached footprint."""
    import segments

    libc = _libc()
    if libc is None:
        return {"error": "glibc mallinfo2 is not available"}
    store_url = f"memory://bench-memory-{os.getpid()}"
    writer = segments.connect(store_url)
    serialized: dict[str, int] = {}
    for name in names:
        raw = (directory / f"{name}.roaring").read_bytes()
        writer.replace(name, BitMap.deserialize(raw))
        serialized[name] = len(raw)
    out: dict[str, Any] = {}
    for name in names:
        client = segments.connect(store_url)
        client.overlap([name])  # warm-up: imports, first-use allocations
        client.close()
        del client
        before = heap_in_use(libc)
        rss_before = rss_bytes()
        client = segments.connect(store_url)
        client.overlap([name])
        after = heap_in_use(libc)
        rss_after = rss_bytes()
        bitmap = client.engine.whole([name])[0][name]
        stats = bitmap.get_statistics()
        raw = (directory / f"{name}.roaring").read_bytes()
        base = heap_in_use(libc)
        alone = BitMap.deserialize(raw)
        alone.shrink_to_fit()
        bitmap_only = heap_in_use(libc) - base
        del alone, raw
        out[name] = {
            "serialized_bytes": serialized[name],
            "cached_bytes": after - before,
            "bitmap_only_bytes": bitmap_only,
            "rss_delta_bytes": rss_after - rss_before,
            "cache_accounted_bytes": client.cache.nbytes,
            "containers": stats["n_containers"],
            "bitset_containers": stats["n_bitset_containers"],
            "array_containers": stats["n_array_containers"],
            "run_containers": stats["n_run_containers"],
            "cardinality": len(bitmap),
        }
        del bitmap
        client.close()
        del client
    return out


def measure(directory: Path, names: list[str], timeout: float = 600) -> dict[str, Any]:
    """Run ``probe`` in a child process with ``PYTHONMALLOC=malloc``."""
    env = dict(os.environ, PYTHONMALLOC="malloc")
    return run_module("bench.memory_bench", [str(directory), *names], timeout=timeout, env=env)


if __name__ == "__main__":
    print(json.dumps(probe(Path(sys.argv[1]), sys.argv[2:])))
