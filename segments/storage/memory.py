"""``memory://``: an in-process store for unit tests and experiments.

It follows the same contract as the durable stores (generations, conditional
writes, copies on the way in and out) so tests against it mean something.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from ..errors import Conflict, StorageUnavailable
from ..types import BinValue
from .base import Bins, Record

_GEN_WRAP = 0xFFFF


_Data = dict[tuple[str, str], tuple[dict[str, BinValue], int]]
#: ``memory://name`` stores live as long as the process, so a reconnect sees the data.
_NAMED: dict[str, tuple[_Data, threading.Lock]] = {}
_NAMED_LOCK = threading.Lock()


class MemoryStore:
    """A dict of ``(set, key) -> (bins, generation)`` behind a lock.

    ``memory://`` is private to this handle; ``memory://name`` is shared by
    every handle opened with the same name in this process.
    """

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        name = url.split("://", 1)[1] if "://" in url else ""
        if name:
            with _NAMED_LOCK:
                if name not in _NAMED:
                    _NAMED[name] = ({}, threading.Lock())
                self._data, self._lock = _NAMED[name]
        else:
            self._data = {}
            self._lock = threading.Lock()
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise StorageUnavailable("the memory store is closed")

    def get_many(self, set_name: str, keys: Sequence[str]) -> list[Record | None]:
        self._check()
        with self._lock:
            out: list[Record | None] = []
            for key in keys:
                hit = self._data.get((set_name, key))
                out.append(None if hit is None else Record(dict(hit[0]), hit[1]))
            return out

    def put(self, set_name: str, key: str, bins: Bins, *, generation: int | None = None) -> int:
        self._check()
        with self._lock:
            current = self._data.get((set_name, key))
            current_gen = 0 if current is None else current[1]
            if generation is not None and generation != current_gen:
                raise Conflict(
                    f"record {set_name}/{key} is at generation {current_gen}, expected {generation}"
                )
            new_gen = current_gen % _GEN_WRAP + 1
            self._data[(set_name, key)] = (dict(bins), new_gen)
            return new_gen

    def put_many(self, set_name: str, items: Sequence[tuple[str, Bins]]) -> None:
        for key, bins in items:
            self.put(set_name, key, bins)

    def delete(self, set_name: str, key: str, *, generation: int | None = None) -> bool:
        self._check()
        with self._lock:
            current = self._data.get((set_name, key))
            if current is None:
                if generation not in (None, 0):
                    raise Conflict(f"record {set_name}/{key} does not exist")
                return False
            if generation is not None and generation != current[1]:
                raise Conflict(
                    f"record {set_name}/{key} is at generation {current[1]}, expected {generation}"
                )
            del self._data[(set_name, key)]
            return True

    def delete_many(self, set_name: str, keys: Sequence[str]) -> None:
        self._check()
        with self._lock:
            for key in keys:
                self._data.pop((set_name, key), None)

    def scan(self, set_name: str) -> Iterator[tuple[str, Record]]:
        self._check()
        with self._lock:
            rows = [(k, Record(dict(v[0]), v[1])) for (s, k), v in self._data.items() if s == set_name]
        yield from rows

    def ping(self) -> None:
        self._check()

    def close(self) -> None:
        self._closed = True
