"""User lookups on the event loop when the library can answer from memory; else in the threadpool.

A hop to the threadpool and back (two thread wake-ups and two GIL hand-overs)
costs 0.3-0.5 ms on a busy 2-core machine, more than a warm lookup itself. The
library says explicitly whether it can answer without the store:
``Segments.segments_of_cached`` answers from memory (the metadata snapshot is
fresh enough and every needed shard is cached) or returns ``None``, and only
then does the lookup go to the threadpool, where blocking on the store does
not stall the loop.
"""

from __future__ import annotations

from fastapi.concurrency import run_in_threadpool

from segments import Segments


async def segments_of(segs: Segments, uid: int) -> tuple[list[str], bool]:
    """The user's segments, and whether they were answered on the event loop (no store I/O)."""
    names = segs.segments_of_cached(uid)
    if names is not None:
        return names, True
    return await run_in_threadpool(segs.segments_of, uid), False


__all__ = ["segments_of"]
