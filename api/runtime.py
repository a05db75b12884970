"""Process-level tuning for the API process.

glibc gives each thread that allocates its own malloc arena, and trims
(returns to the kernel) the top of a thread arena as soon as enough memory is
free. Bitmap queries allocate and free megabytes per call (intermediates of
dense 50M-user segments), so in FastAPI's worker threads every query paid
for fresh page faults: the same reach ran 3x slower in a worker thread than
in the main thread (9.0 ms against 2.8 ms for three dense 50M-user segments).
One arena for all threads (``M_ARENA_MAX = 1``, the main arena, which keeps
freed memory with a dynamic threshold) removes the difference; the GIL
already serializes most allocation, so the shared arena costs nothing.

An explicit ``MALLOC_ARENA_MAX`` in the environment wins. Other C libraries
(musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_ARENA_MAX = -8
_done = False


def tune_malloc() -> bool:
    """Use one glibc malloc arena for every thread; returns whether it was applied."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(M_ARENA_MAX, 1))
    return _done
