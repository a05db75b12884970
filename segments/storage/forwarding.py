"""``ForwardingStore``: the one base for stores that wrap another store.

Every call goes to ``inner`` after :meth:`ForwardingStore.before`, a hook that
may count, delay or refuse it (raise). Tests wrap real stores this way to
inject faults at the ``Store`` protocol level (never by mocking a client
library), and tools wrap them to observe or memoise calls.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

from .base import Bins, Record, Store

#: the calls that change the store
WRITES: Final = frozenset({"put", "put_many", "delete", "delete_many"})


class ForwardingStore:
    """A ``Store`` passing every call to ``inner``; override :meth:`before` (or a method)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url

    def before(self, op: str, set_name: str | None) -> None:
        """Called before each call (``op`` is the method name; ``set_name`` is ``None`` for ping/close)."""

    def get_many(self, set_name: str, keys: Sequence[str]) -> list[Record | None]:
        self.before("get_many", set_name)
        return self.inner.get_many(set_name, keys)

    def put(self, set_name: str, key: str, bins: Bins, *, generation: int | None = None) -> int:
        self.before("put", set_name)
        return self.inner.put(set_name, key, bins, generation=generation)

    def put_many(self, set_name: str, items: Sequence[tuple[str, Bins]]) -> None:
        self.before("put_many", set_name)
        self.inner.put_many(set_name, items)

    def delete(self, set_name: str, key: str, *, generation: int | None = None) -> bool:
        self.before("delete", set_name)
        return self.inner.delete(set_name, key, generation=generation)

    def delete_many(self, set_name: str, keys: Sequence[str]) -> None:
        self.before("delete_many", set_name)
        self.inner.delete_many(set_name, keys)

    def scan(self, set_name: str) -> Iterator[tuple[str, Record]]:
        self.before("scan", set_name)
        return self.inner.scan(set_name)

    def ping(self) -> None:
        self.before("ping", None)
        self.inner.ping()

    def close(self) -> None:
        self.before("close", None)
        self.inner.close()


__all__ = ["WRITES", "ForwardingStore"]
