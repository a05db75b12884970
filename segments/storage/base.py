"""The storage interface, in Aerospike's terms.

Records are addressed by ``(set, key)`` and hold named bins (bytes, int or
str values) plus a generation that the store increments on every write.
``put`` with an expected generation is the optimistic-concurrency primitive:
``generation=0`` means "create, the record must not exist", ``generation=n``
means "the record must currently be at generation n"; a mismatch raises
``Conflict`` and the caller retries.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from ..types import BinValue

Bins = Mapping[str, BinValue]


class Record(NamedTuple):
    """One stored record."""

    bins: dict[str, BinValue]
    generation: int


@runtime_checkable
class Store(Protocol):
    """What the segments library needs from a key-value store."""

    url: str

    def get_many(self, set_name: str, keys: Sequence[str]) -> list[Record | None]:
        """Read many records in one round trip; ``None`` for a missing key."""
        ...

    def put(self, set_name: str, key: str, bins: Bins, *, generation: int | None = None) -> int:
        """Write a record (replacing all its bins) and return its new generation.

        ``generation=None`` writes unconditionally; ``0`` requires that the
        record does not exist; ``n > 0`` requires the current generation ``n``.
        Raises ``Conflict`` when the condition fails.
        """
        ...

    def put_many(self, set_name: str, items: Sequence[tuple[str, Bins]]) -> None:
        """Write many records unconditionally (as few round trips as the store allows)."""
        ...

    def delete(self, set_name: str, key: str, *, generation: int | None = None) -> bool:
        """Delete a record; ``False`` if it did not exist. Generation as in ``put``."""
        ...

    def delete_many(self, set_name: str, keys: Sequence[str]) -> None:
        """Delete many records unconditionally; missing ones are ignored."""
        ...

    def scan(self, set_name: str) -> Iterator[tuple[str, Record]]:
        """Every record of a set, in no particular order."""
        ...

    def ping(self) -> None:
        """Raise ``StorageUnavailable`` unless the store answers."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...
