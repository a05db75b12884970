"""Stores for the benchmarks: counting what a client reads, and the Aerospike the run can use.

* ``CountingStore`` wraps a store and counts calls, records and bytes read per
  set (``get_many`` and ``scan``), so a measurement can say what it read.
* ``aerospike_store()`` yields ``(kind, url_prefix)`` for an Aerospike: the real
  server named by ``SEGMENTS_TEST_AEROSPIKE`` (``host:port[/namespace]``) when set,
  else the loopback Aerospike test server of ``tests/support`` (started for the
  block, stopped by pid afterwards).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from segments.storage.base import Record, Store
from segments.storage.forwarding import ForwardingStore
from segments.types import BinValue


def bin_bytes(value: BinValue) -> int:
    """Bytes of one bin's value as stored: a blob's or text's length, 8 for an integer."""
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, str):
        return len(value.encode())
    return 8


def record_bytes(record: Record) -> int:
    return sum(len(name) + bin_bytes(value) for name, value in record.bins.items())


class CountingStore(ForwardingStore):
    """Counts the reads that go through it: calls, records and bytes, per set."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()
        self.records: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()

    def get_many(self, set_name: str, keys: Sequence[str]) -> list[Record | None]:
        found = self.inner.get_many(set_name, keys)
        self.calls[set_name] += 1
        for record in found:
            if record is not None:
                self.records[set_name] += 1
                self.bytes[set_name] += record_bytes(record)
        return found

    def scan(self, set_name: str) -> Iterator[tuple[str, Record]]:
        self.calls[set_name] += 1
        for key, record in self.inner.scan(set_name):
            self.records[set_name] += 1
            self.bytes[set_name] += record_bytes(record)
            yield key, record

    def totals(self) -> dict[str, int]:
        return {
            "calls": sum(self.calls.values()),
            "records": sum(self.records.values()),
            "bytes": sum(self.bytes.values()),
        }

    def reset(self) -> None:
        self.calls.clear()
        self.records.clear()
        self.bytes.clear()


@contextmanager
def aerospike_store() -> Iterator[tuple[str, str]]:
    """``(description, url)`` of a fresh set prefix on an Aerospike (see the module docstring)."""
    from tests.support.aerospike_fixture import aerospike_target, aerospike_url

    with aerospike_target() as target:
        yield target.description, aerospike_url(target, f"b{uuid.uuid4().hex[:10]}_")
