"""The storage contract, run against every backend (memory, sqlite, aerospike)."""

from __future__ import annotations

import pytest

from segments import Conflict
from segments.storage import Store, open_store


@pytest.fixture
def store(store_url: str) -> Store:
    s = open_store(store_url)
    yield s  # type: ignore[misc]
    s.close()


def test_missing_records_read_as_none(store: Store) -> None:
    assert store.get_many("s1", ["nope", "nada"]) == [None, None]
    assert store.get_many("s1", []) == []


def test_put_get_round_trip_of_every_bin_type(store: Store) -> None:
    gen = store.put("s1", "k", {"b": b"\x00\xffbytes", "i": -(2**40), "s": "text ünicode", "e": b""})
    assert gen >= 1
    (record,) = store.get_many("s1", ["k"])
    assert record is not None
    assert record.bins == {"b": b"\x00\xffbytes", "i": -(2**40), "s": "text ünicode", "e": b""}
    assert record.generation == gen


def test_put_replaces_all_bins_and_bumps_generation(store: Store) -> None:
    g1 = store.put("s1", "k", {"a": 1, "b": 2})
    g2 = store.put("s1", "k", {"a": 3})
    assert g2 != g1
    (record,) = store.get_many("s1", ["k"])
    assert record is not None and record.bins == {"a": 3} and record.generation == g2


def test_create_only(store: Store) -> None:
    store.put("s1", "k", {"a": 1}, generation=0)
    with pytest.raises(Conflict):
        store.put("s1", "k", {"a": 2}, generation=0)
    (record,) = store.get_many("s1", ["k"])
    assert record is not None and record.bins == {"a": 1}


def test_generation_check(store: Store) -> None:
    g1 = store.put("s1", "k", {"a": 1})
    g2 = store.put("s1", "k", {"a": 2}, generation=g1)
    with pytest.raises(Conflict):
        store.put("s1", "k", {"a": 3}, generation=g1)
    (record,) = store.get_many("s1", ["k"])
    assert record is not None and record.bins == {"a": 2} and record.generation == g2
    with pytest.raises(Conflict):
        store.put("s1", "other", {"a": 1}, generation=5)


def test_delete(store: Store) -> None:
    g = store.put("s1", "k", {"a": 1})
    with pytest.raises(Conflict):
        store.delete("s1", "k", generation=g + 1)
    assert store.delete("s1", "k", generation=g) is True
    assert store.get_many("s1", ["k"]) == [None]
    assert store.delete("s1", "k") is False


def test_sets_are_separate_and_scan_sees_only_its_set(store: Store) -> None:
    store.put("s1", "k", {"v": 1})
    store.put("s2", "k", {"v": 2})
    store.put("s2", "j", {"v": 3})
    assert {k: r.bins["v"] for k, r in store.scan("s2")} == {"k": 2, "j": 3}
    assert {k: r.bins["v"] for k, r in store.scan("s1")} == {"k": 1}
    assert list(store.scan("empty")) == []


def test_batches(store: Store) -> None:
    items = [(f"k{i}", {"v": i, "b": bytes([i % 256]) * 100}) for i in range(1500)]
    store.put_many("s1", items)
    keys = [f"k{i}" for i in range(0, 1500, 7)] + ["missing"]
    records = store.get_many("s1", keys)
    assert records[-1] is None
    assert [r.bins["v"] for r in records[:-1] if r is not None] == list(range(0, 1500, 7))
    store.delete_many("s1", [f"k{i}" for i in range(1000)] + ["missing"])
    assert sorted(int(k[1:]) for k, _ in store.scan("s1")) == list(range(1000, 1500))


def test_ping(store: Store) -> None:
    store.ping()
