"""Byte accounting of the segment cache (issue 10, items 12 and 13).

Everything the cache holds, segment entries *and* shard maps, counts against
its one byte budget: putting an item again replaces its bytes, dropping an
entry gives them back, and eviction (least recently used first, entries and
maps in one order) keeps the total within ``max_bytes``, except for a single
item larger than the whole budget. The expected totals are computed from the
``nbytes`` of the items put, and checked against a plain ``OrderedDict`` model
of the LRU by a property test. Statistics are counted under the lock.
"""

from __future__ import annotations

import array
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from pyroaring import BitMap

from segments.cache import Entry, SegmentCache, make_entry
from segments.catalog import SHARD_ENTRY, ShardMap


def shard_map(key: str, shards: int) -> ShardMap:
    """A shard map of ``shards`` one-member shards (0, 1, ...) under ``key``."""
    entries = np.zeros(shards, dtype=SHARD_ENTRY)
    entries["shard"] = np.arange(shards)
    entries["card"] = 1
    entries["rid"] = np.arange(1, shards + 1)
    return ShardMap(key, entries)


def entry(name: str, nbytes: int) -> Entry:
    """A complete entry of segment ``name`` said to cost ``nbytes``."""
    held = shard_map(f"{name}/1", 1)
    return Entry(name, held.key, BitMap([0]), {}, nbytes, held)


def test_put_replacing_an_entry_subtracts_the_old_one() -> None:
    cache = SegmentCache(max_bytes=1 << 20)
    first, second, other = entry("a", 1_000), entry("a", 3_000), entry("b", 500)
    cache.put(first)
    cache.put(other)
    cache.put(second)
    assert cache.nbytes == second.nbytes + other.nbytes
    assert len(cache) == 2
    assert cache.get("a") is second
    cache.put(second)  # the same entry again: counted once
    assert cache.nbytes == second.nbytes + other.nbytes


def test_shard_maps_count_against_the_budget() -> None:
    cache = SegmentCache(max_bytes=1 << 20)
    small, large = shard_map("a/1", 3), shard_map("b/2", 300)
    assert large.nbytes > large.entries.nbytes  # its array and more
    cache.put_map(small)
    assert cache.nbytes == small.nbytes
    cache.put_map(large)
    assert cache.nbytes == small.nbytes + large.nbytes
    cache.put_map(shard_map("b/2", 300))  # the same key again replaces the old one
    assert cache.nbytes == small.nbytes + large.nbytes
    held = entry("a", 2_000)
    cache.put(held)
    assert cache.nbytes == small.nbytes + large.nbytes + held.nbytes
    assert len(cache) == 1  # len counts segment entries, not maps
    assert cache.get_map("a/1") is small


def test_a_segments_newer_shard_map_replaces_its_older_one() -> None:
    cache = SegmentCache(max_bytes=1 << 20)
    old, new, other = shard_map("a/1", 300), shard_map("a/2", 300), shard_map("b/1", 3)
    cache.put_map(old)
    cache.put_map(other)
    cache.put_map(new)
    assert cache.get_map("a/1") is None and cache.get_map("a/2") is new
    assert cache.nbytes == new.nbytes + other.nbytes


def test_drop_gives_back_the_entry_bytes_only() -> None:
    cache = SegmentCache(max_bytes=1 << 20)
    a, b, m = entry("a", 1_200), entry("b", 700), shard_map("a/9", 40)
    cache.put(a)
    cache.put(b)
    cache.put_map(m)
    cache.drop("a")
    assert cache.nbytes == b.nbytes + m.nbytes
    assert cache.get("a") is None and cache.peek("a") is None
    cache.drop("a")  # dropping what is not there changes nothing
    cache.drop("nothing")
    assert cache.nbytes == b.nbytes + m.nbytes
    assert cache.get_map("a/9") is m  # drop is about entries: the map stays


def test_eviction_keeps_the_total_within_the_budget_least_recently_used_first() -> None:
    maps = [shard_map(f"m{i}/0", 100) for i in range(3)]
    size = maps[0].nbytes
    cache = SegmentCache(max_bytes=3 * size)
    for m in maps:
        cache.put_map(m)
    assert cache.nbytes == 3 * size
    assert cache.get_map("m0/0") is maps[0]  # m0/0 is now the most recently used
    newcomer = entry("e", size)
    cache.put(newcomer)  # one item must go: the least recently used, m1/0
    assert cache.nbytes == 3 * size <= cache.max_bytes
    assert cache.get_map("m1/0") is None
    assert cache.stats.evictions == 1
    assert cache.get_map("m0/0") is maps[0] and cache.get_map("m2/0") is maps[2]  # order: e, m0/0, m2/0
    assert cache.peek("e") is newcomer  # peek leaves the order alone
    big = entry("f", 2 * size)  # needs the room of two items: e and m0/0 go
    cache.put(big)
    assert cache.nbytes == maps[2].nbytes + big.nbytes <= cache.max_bytes
    assert cache.stats.evictions == 3
    assert cache.peek("e") is None and cache.get_map("m0/0") is None
    assert cache.get_map("m2/0") is maps[2]
    assert cache.names() == ["f"]


def test_a_single_oversized_item_stays_alone_until_something_else_comes() -> None:
    cache = SegmentCache(max_bytes=10_000)
    small = entry("small", 3_000)
    cache.put(small)
    cache.put_map(shard_map("x/1", 10))
    huge = shard_map("huge/1", 1_000)
    assert huge.nbytes > cache.max_bytes
    cache.put_map(huge)
    assert cache.nbytes == huge.nbytes  # everything else went; the item itself is kept
    assert cache.peek("small") is None and len(cache) == 0
    assert cache.get_map("huge/1") is huge
    cache.put(small)  # now the oversized one is the least recently used
    assert cache.nbytes == small.nbytes
    assert cache.get_map("huge/1") is None


def test_an_entry_replaced_by_a_larger_one_evicts_others_not_itself() -> None:
    cache = SegmentCache(max_bytes=5_000)
    cache.put(entry("a", 2_000))
    cache.put(entry("b", 2_000))
    grown = entry("a", 4_000)
    cache.put(grown)
    assert cache.nbytes == grown.nbytes
    assert cache.peek("a") is grown and cache.peek("b") is None


# -- the same accounting against a model ------------------------------------------------------------

NAMES = ["a", "b", "c", "d"]
MAP_KEYS = [f"{n}/{v}" for n in NAMES for v in range(3)]
BUDGET = 12_000

operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(NAMES), st.integers(1, 6_000)),
        st.tuples(st.just("put_map"), st.sampled_from(MAP_KEYS), st.integers(0, 700)),
        st.tuples(st.just("get"), st.sampled_from(NAMES), st.just(0)),
        st.tuples(st.just("get_map"), st.sampled_from(MAP_KEYS), st.just(0)),
        st.tuples(st.just("drop"), st.sampled_from(NAMES), st.just(0)),
    ),
    max_size=60,
)


@given(operations)
def test_accounting_matches_an_lru_model(ops: list[tuple[str, str, int]]) -> None:
    cache = SegmentCache(max_bytes=BUDGET)
    model: OrderedDict[tuple[bool, str], tuple[Entry | ShardMap, int]] = OrderedDict()
    evictions = 0
    for op, key, size in ops:
        if op in ("put", "put_map"):
            item: Entry | ShardMap
            if op == "put":
                item = entry(key, size)
                cache.put(item)
            else:
                item = shard_map(key, size)
                cache.put_map(item)
            slot = (op == "put_map", key)
            model.pop(slot, None)
            if op == "put_map":  # a segment's newer map replaces its older ones
                segment = key.partition("/")[0]
                for older in [s for s in model if s[0] and s[1].partition("/")[0] == segment]:
                    del model[older]
            model[slot] = (item, item.nbytes)
            while sum(n for _, n in model.values()) > BUDGET and len(model) > 1:
                model.popitem(last=False)
                evictions += 1
        elif op in ("get", "get_map"):
            slot = (op == "get_map", key)
            found = cache.get(key) if op == "get" else cache.get_map(key)
            assert found is (model[slot][0] if slot in model else None)
            if slot in model:
                model.move_to_end(slot)
        else:
            cache.drop(key)
            model.pop((False, key), None)
        total = sum(n for _, n in model.values())
        assert cache.nbytes == total
        assert total <= BUDGET or len(model) == 1
        assert sorted(cache.names()) == sorted(k for is_map, k in model if not is_map)
    assert cache.stats.evictions == evictions
    for (is_map, key), (kept, _) in list(model.items()):
        assert (cache.get_map(key) if is_map else cache.peek(key)) is kept


# -- statistics and single flight ----------------------------------------------------------------------


def test_statistics_are_counted_exactly_from_many_threads() -> None:
    cache = SegmentCache()
    threads, rounds = 8, 20_000

    def count() -> None:
        for _ in range(rounds):
            cache.count(hits=1, misses=2, shard_fetches=3)

    workers = [threading.Thread(target=count) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.shard_fetches) == (threads * rounds, 2 * threads * rounds, 3 * threads * rounds)


def test_loading_the_same_segment_waits_for_the_one_in_flight() -> None:
    cache = SegmentCache()
    entered = threading.Event()
    events: list[str] = []

    def second() -> None:
        with cache.loading(["b", "a"]):
            events.append("second loads")
        entered.set()

    with cache.loading(["a"]):
        waiter = threading.Thread(target=second)
        waiter.start()
        assert not entered.wait(0.3), "a second load of the same segment ran while the first was in flight"
        events.append("first done")
    assert entered.wait(30)
    waiter.join()
    assert events == ["first done", "second loads"]


# -- what an entry costs ----------------------------------------------------------------------------


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_an_entry_counts_the_memory_its_bitmap_holds() -> None:
    shards = 1 << 16
    held = shard_map("wide/1", shards)
    sources = [array.array("I", range(copy, 1 << 32, 1 << 16)) for copy in range(16)]  # one member a shard
    before = _rss()
    bitmaps = []
    for source in sources:
        bitmap = BitMap(source)
        bitmap.shrink_to_fit()
        bitmaps.append(bitmap)
    grown = _rss() - before
    counted = sum(make_entry("wide", held, b, held.rids()).nbytes for b in bitmaps)
    print(f"16 bitmaps of {shards} one-member shards: RSS grew {grown / 2**20:.1f} MiB, "
          f"entries count {counted / 2**20:.1f} MiB")
    assert counted >= grown // 2
