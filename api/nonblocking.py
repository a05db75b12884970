"""Answer a call on the event loop when the library can do it without I/O; else in the threadpool.

A hop to the threadpool and back (two thread wake-ups and two GIL hand-overs)
cost 0.3-0.5 ms per request on the 2-core benchmark machine, more than the
lookup it carried (``segments_of`` on a warm cache: 0.25 ms at 10M users),
and a millisecond or more at the tail when the machine is busy. But the
library blocks when it reads the store (a stale metadata snapshot, a shard
that is not cached), and a blocked event loop stalls every connection of
the process.

The store is the only thing in ``segments`` that blocks: its locks guard
in-memory updates only. So the API opens its ``Segments`` over a
:class:`GuardedStore`, and :func:`run_nonblocking` calls the function on the
event loop with the guard armed: the first store call raises
:class:`WouldBlock` *before* any I/O, and the function is then run again in
the threadpool, where the guard is off (the flag is a context variable: it
is reset before the hop, and other threads never see it). Work the first
attempt did in memory is simply done again; a store failure can interrupt
the library at any store call, so it leaves nothing half-done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from fastapi.concurrency import run_in_threadpool

from segments.storage import Bins, Record, Store

__all__ = ["GuardedStore", "WouldBlock", "run_nonblocking"]

P = ParamSpec("P")
T = TypeVar("T")

_armed: ContextVar[bool] = ContextVar("segments_api_no_store_io", default=False)


class WouldBlock(BaseException):  # noqa: N818 - it is a signal, not an error
    """A store call was attempted on the event loop.

    A ``BaseException``, like ``asyncio.CancelledError``: no ``except Exception``
    in the library can mistake it for a store failure and swallow or retry it.
    """


def _check() -> None:
    if _armed.get():
        raise WouldBlock


class GuardedStore:
    """A ``Store`` that refuses every call while :func:`run_nonblocking` tries the event loop."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url

    def get_many(self, set_name: str, keys: Sequence[str]) -> list[Record | None]:
        _check()
        return self.inner.get_many(set_name, keys)

    def put(self, set_name: str, key: str, bins: Bins, *, generation: int | None = None) -> int:
        _check()
        return self.inner.put(set_name, key, bins, generation=generation)

    def put_many(self, set_name: str, items: Sequence[tuple[str, Bins]]) -> None:
        _check()
        self.inner.put_many(set_name, items)

    def delete(self, set_name: str, key: str, *, generation: int | None = None) -> bool:
        _check()
        return self.inner.delete(set_name, key, generation=generation)

    def delete_many(self, set_name: str, keys: Sequence[str]) -> None:
        _check()
        self.inner.delete_many(set_name, keys)

    def scan(self, set_name: str) -> Iterator[tuple[str, Record]]:
        _check()
        return self.inner.scan(set_name)

    def ping(self) -> None:
        _check()
        self.inner.ping()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # anything a backend has beyond the protocol
        return getattr(self.inner, name)


async def run_nonblocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> tuple[T, bool]:
    """``fn(*args, **kwargs)`` and whether it ran on the event loop (no store I/O) or in the threadpool.

    ``fn`` must reach the store only through a :class:`GuardedStore` and must not block otherwise.
    """
    token = _armed.set(True)
    try:
        return fn(*args, **kwargs), True
    except WouldBlock:
        pass
    finally:
        _armed.reset(token)
    return await run_in_threadpool(fn, *args, **kwargs), False
