"""Store backends, chosen by URL; each backend module is imported only when used.

| URL | backend |
| --- | --- |
| ``memory://`` or ``memory://name`` | in-process dict (named ones are shared in the process) |
| ``sqlite:///path/to/segments.db`` | embedded, durable SQLite in WAL mode |
| ``aerospike://host:3000[,host2:3000]/namespace`` | the official Aerospike client |
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import StorageMisconfigured
from .base import Bins, Record, Store


def _open_memory(url: str) -> Store:
    from .memory import MemoryStore

    return MemoryStore(url)


def _open_sqlite(url: str) -> Store:
    from .sqlite import SqliteStore

    return SqliteStore(url)


def _open_aerospike(url: str) -> Store:
    from .aerospike import AerospikeStore

    return AerospikeStore(url)


_BACKENDS: dict[str, Callable[[str], Store]] = {
    "memory": _open_memory,
    "sqlite": _open_sqlite,
    "aerospike": _open_aerospike,
}


def open_store(url: str) -> Store:
    """Open the store a URL names."""
    if not isinstance(url, str) or "://" not in url:
        raise StorageMisconfigured(
            f"invalid store URL {url!r}: expected memory://, sqlite:///path or aerospike://host:port/namespace"
        )
    scheme = url.split("://", 1)[0].lower()
    opener = _BACKENDS.get(scheme)
    if opener is None:
        raise StorageMisconfigured(
            f"unknown store scheme {scheme!r} in {url!r}; known: {', '.join(sorted(_BACKENDS))}"
        )
    return opener(url)


__all__ = ["Bins", "Record", "Store", "open_store"]
