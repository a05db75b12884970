"""``/metrics``: cheap to scrape, and a store failure shows instead of disappearing.

* The segment count comes from ``Segments.catalog(max_age)``, the metadata
  snapshot shared with user lookups: scraping does not scan the store each
  time (counted on a real SQLite store that records every call).
* ``segments_store_up`` is 1 when the store answered this scrape's ping (the
  outage itself is tested in ``tests/faults/test_metrics_outage.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from prometheus_client import generate_latest

import segments
from api.metrics import Metrics
from segments import Segments
from segments.storage import Record, Store, open_store
from tests.api.test_lookups import RecordingStore


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


class CountingStore(RecordingStore):
    """A real store that counts its calls by method and set."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()

    def scan(self, set_name: str) -> Iterator[tuple[str, Record]]:
        self.calls[f"scan {set_name}"] += 1
        return super().scan(set_name)

    def get_many(self, set_name: str, keys: Sequence[str]) -> list[Record | None]:
        self.calls[f"get_many {set_name}"] += 1
        return super().get_many(set_name, keys)

    def ping(self) -> None:
        self.calls["ping"] += 1
        super().ping()


def test_scrapes_reuse_the_shared_metadata_snapshot(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    with segments.connect(url) as writer:
        for i in range(5):
            writer.replace(f"s{i}", range(i, 1000, 7))
    store = CountingStore(open_store(url))
    segs = Segments(store)  # a cold process: no metadata snapshot yet
    metrics = Metrics()
    metrics.watch(lambda: segs, max_age=3600)
    scrapes = [samples(generate_latest(metrics.registry).decode()) for _ in range(20)]
    print(f"\nstore calls for 20 scrapes: {dict(store.calls)}")
    assert all(s["segments_segments"] == 5 and s["segments_store_up"] == 1 for s in scrapes)
    assert store.calls.pop("ping") == 20
    assert sum(n for call, n in store.calls.items() if call.startswith("scan")) == 1
    assert store.calls.total() <= 2  # the scan of the metadata and one batch read of the shard maps
    segs.replace("s5", [1])  # a write through this process shows at the next scrape
    assert samples(generate_latest(metrics.registry).decode())["segments_segments"] == 6
    segs.close()
