"""The public ``Segments`` API, against every backend, checked against exact expectations."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
from pyroaring import BitMap

import segments
from segments import (
    InvalidBitmap,
    InvalidSegmentName,
    InvalidUserId,
    SegmentNotFound,
    UniverseNotFound,
)


@pytest.fixture
def segs(store_url: str) -> Iterator[segments.Segments]:
    s = segments.connect(store_url)
    yield s
    s.close()


def test_replace_info_and_versions(segs: segments.Segments) -> None:
    info = segs.replace("premium", [1, 2, 3, 70000])
    assert (info.name, info.cardinality, info.version) == ("premium", 4, 1)
    assert isinstance(info.updated_at, datetime)
    info2 = segs.replace("premium", [5])
    assert (info2.cardinality, info2.version) == (1, 2)
    assert segs.info("premium") == info2
    assert sorted(segs.evaluate("premium")) == [5]


def test_ids_in_every_form(segs: segments.Segments) -> None:
    segs.replace("from_list", [3, 1, 2, 2])
    segs.replace("from_range", range(5))
    segs.replace("from_bitmap", BitMap([7, 8]))
    segs.replace("from_bytes", BitMap([9, 2**32 - 1]).serialize())
    segs.replace("from_gen", (i * 2 for i in range(3)))
    assert sorted(segs.evaluate("from_list")) == [1, 2, 3]
    assert len(segs.evaluate("from_range")) == 5
    assert sorted(segs.evaluate("from_bitmap")) == [7, 8]
    assert sorted(segs.evaluate("from_bytes")) == [9, 2**32 - 1]
    assert sorted(segs.evaluate("from_gen")) == [0, 2, 4]


def test_add_remove(segs: segments.Segments) -> None:
    segs.add("s", [1, 2])  # add creates
    segs.add("s", [2, 3, 65536])
    info = segs.remove("s", [1, 99])
    assert info.cardinality == 3 and info.version == 3
    assert sorted(segs.evaluate("s")) == [2, 3, 65536]
    with pytest.raises(SegmentNotFound) as exc:
        segs.remove("absent", [1])
    assert exc.value.names == ["absent"]


def test_a_change_that_changes_nothing_keeps_the_version(segs: segments.Segments) -> None:
    segs.replace("s", [1, 2])
    assert segs.add("s", [1]).version == 1
    assert segs.remove("s", [5]).version == 1


def test_apply_is_remove_then_add_and_idempotent_by_position(segs: segments.Segments) -> None:
    segs.replace("s", [1, 2, 3])
    r = segs.apply("s", add=[3, 4], remove=[1, 3], source="topic/0", position=10)
    assert r.applied and sorted(segs.evaluate("s")) == [2, 3, 4]
    again = segs.apply("s", add=[100], source="topic/0", position=10)
    assert not again.applied and sorted(segs.evaluate("s")) == [2, 3, 4]
    assert segs.watermarks(["s", "none"], "topic/0") == {"s": 10, "none": -1}
    assert segs.info("s").version == 2


def test_delete_and_names(segs: segments.Segments) -> None:
    segs.replace("a", [1])
    segs.replace("b", [])
    assert segs.names() == ["a", "b"]
    assert [i.name for i in segs.infos()] == ["a", "b"]
    segs.delete("a")
    assert segs.names() == ["b"]
    with pytest.raises(SegmentNotFound):
        segs.delete("a")
    with pytest.raises(SegmentNotFound):
        segs.info("a")
    # recreated after delete starts over
    assert segs.add("a", [4]).version == 1


def test_empty_segment(segs: segments.Segments) -> None:
    info = segs.replace("empty", [])
    assert info.cardinality == 0
    assert segs.reach("empty") == 0
    assert len(segs.evaluate("empty")) == 0
    assert list(segs.iter_shards("empty")) == []
    assert segs.contains("empty", 0) is False


def test_membership(segs: segments.Segments) -> None:
    segs.replace("a", [0, 65535, 65536, 2**32 - 1])
    segs.replace("b", [65536])
    segs.replace("c", [])
    assert segs.contains("a", 2**32 - 1)
    assert not segs.contains("a", 1)
    assert segs.segments_of(65536) == ["a", "b"]
    assert segs.segments_of(0) == ["a"]
    assert segs.segments_of(12345) == []
    with pytest.raises(SegmentNotFound):
        segs.contains("zz", 1)


def test_reach_and_evaluate(segs: segments.Segments) -> None:
    segs.replace("all", range(100))
    segs.replace("even", range(0, 100, 2))
    segs.replace("small", range(10))
    assert segs.reach("even & small") == 5
    assert segs.reach("even | small") == 55
    assert segs.reach("small - even") == 5
    assert segs.reach("small ^ even") == 50
    assert segs.reach("~even") == 50
    assert segs.reach({"and": [{"segment": "small"}, {"not": {"segment": "even"}}]}) == 5
    assert sorted(segs.evaluate("small AND NOT even")) == [1, 3, 5, 7, 9]
    detail = segs.reach_detailed("even | small")
    assert detail.reach == 55 and detail.versions == {"even": 1, "small": 1}


def test_evaluate_returns_a_copy_the_caller_may_mutate(segs: segments.Segments) -> None:
    segs.replace("a", [1, 2])
    mine = segs.evaluate("a")
    mine.add(3)
    assert segs.reach("a") == 2 and sorted(segs.evaluate("a")) == [1, 2]


def test_unknown_segments_are_named(segs: segments.Segments) -> None:
    segs.replace("a", [1])
    with pytest.raises(SegmentNotFound) as exc:
        segs.reach("a & x | y")
    assert exc.value.names == ["x", "y"]
    assert "'x'" in str(exc.value) and "'y'" in str(exc.value)


def test_complement_needs_the_universe(segs: segments.Segments) -> None:
    segs.replace("a", [1])
    with pytest.raises(UniverseNotFound) as exc:
        segs.reach("~a")
    assert "'all'" in str(exc.value)


def test_configured_universe(store_url: str) -> None:
    with segments.connect(store_url, universe="users") as s:
        s.replace("users", range(10))
        s.replace("a", [1, 2])
        assert s.reach("~a") == 8


@pytest.mark.parametrize("name", ["", "a b", "a-b", "x" * 129, "a/b", "é", "and", "NOT", "a\n"])
def test_invalid_names(segs: segments.Segments, name: str) -> None:
    with pytest.raises(InvalidSegmentName):
        segs.replace(name, [1])
    with pytest.raises(InvalidSegmentName):
        segs.info(name)


@pytest.mark.parametrize("bad", [[-1], [2**32], [1.0], ["1"], [None], [True], 5, "123", None])
def test_invalid_ids(segs: segments.Segments, bad: object) -> None:
    with pytest.raises(InvalidUserId):
        segs.replace("s", bad)  # type: ignore[arg-type]
    assert segs.names() == []


@pytest.mark.parametrize("uid", [-1, 2**32, 1.5, "7"])
def test_invalid_user_id_in_lookups(segs: segments.Segments, uid: object) -> None:
    segs.replace("s", [1])
    with pytest.raises(InvalidUserId):
        segs.contains("s", uid)  # type: ignore[arg-type]
    with pytest.raises(InvalidUserId):
        segs.segments_of(uid)  # type: ignore[arg-type]


def test_corrupt_bitmap_bytes_are_refused_and_nothing_changes(segs: segments.Segments) -> None:
    segs.replace("s", [1, 2])
    good = BitMap(range(0, 200000, 3)).serialize()
    for bad in [b"garbage", good[:-7], good[: len(good) // 2], b"\x3a\x30\x00\x00\xff\xff\xff\x7f", b""]:
        with pytest.raises(InvalidBitmap):
            segs.replace("s", bad)
    assert sorted(segs.evaluate("s")) == [1, 2] and segs.info("s").version == 1


def test_overlap(segs: segments.Segments) -> None:
    segs.replace("a", [1, 2, 3])
    segs.replace("b", [2, 3, 4, 5])
    segs.replace("c", [])
    ov = segs.overlap(["a", "b", "c"])
    assert ov.sizes == [3, 4, 0]
    assert ov.matrix == [[3, 2, 0], [2, 4, 0], [0, 0, 0]]


def test_iter_shards_streams_in_order(segs: segments.Segments) -> None:
    members = BitMap([5, 65536 * 3 + 1, 65536 * 3 + 2, 2**32 - 1])
    segs.replace("s", members)
    parts = list(segs.iter_shards("s"))
    assert [shard for shard, _ in parts] == [0, 3, 65535]
    assert BitMap.union(*[p for _, p in parts]) == members


def test_a_second_client_sees_changes_and_its_cache_refreshes(store_url: str) -> None:
    with segments.connect(store_url) as one, segments.connect(store_url) as two:
        one.replace("a", range(0, 300000, 2))
        assert two.reach("a") == 150000
        assert two.reach("a & a") == 150000  # loads into two's cache
        one.add("a", [1, 200001])
        one.remove("a", [0])
        assert two.reach("a & a") == 150001
        assert sorted(two.evaluate("a"))[:3] == [1, 2, 4]
        misses_before = two.cache.stats.shard_fetches
        assert two.reach("a | a") == 150001
        assert two.cache.stats.shard_fetches == misses_before  # hot: nothing fetched


def test_concurrent_writers_lose_no_update(store_url: str) -> None:
    with segments.connect(store_url) as segs:
        segs.replace("s", [])
        errors: list[BaseException] = []

        def worker(k: int) -> None:
            try:
                with segments.connect(store_url) as mine:
                    for i in range(15):
                        mine.add("s", [k * 1000 + i, 70000 + k * 1000 + i])
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert segs.info("s").cardinality == 4 * 15 * 2
        assert segs.info("s").version == 1 + 4 * 15


def test_lookup_staleness_is_bounded(store_url: str) -> None:
    with segments.connect(store_url) as writer, segments.connect(store_url) as reader:
        writer.replace("a", [1])
        assert reader.segments_of(1, max_staleness=60) == ["a"]
        writer.replace("b", [1])
        writer.remove("a", [1])
        # within the staleness window the old snapshot may answer...
        assert reader.segments_of(1, max_staleness=60) == ["a"]
        # ...a fresh read always sees every committed change
        assert reader.segments_of(1, max_staleness=0) == ["b"]
        assert reader.segments_of(1, max_staleness=60) == ["b"]
        # the default bound (lookup_staleness, 0.25 s) is kept
        writer.add("a", [1])
        time.sleep(reader.lookup_staleness + 0.05)
        assert reader.segments_of(1) == ["a", "b"]


def test_warm_loads_every_segment_completely(segs: segments.Segments) -> None:
    segs.replace("a", range(0, 400000, 5))
    segs.replace("b", [3])
    with segments.connect(segs.store.url) as other:
        if segs.store.url == "memory://":
            other = segs
        assert other.warm() == 2
        fetched = other.cache.stats.shard_fetches
        assert other.reach("a & b | a") == len(range(0, 400000, 5))
        assert other.segments_of(5) == ["a"]
        assert other.cache.stats.shard_fetches == fetched




def test_segments_of_cached_answers_from_memory_or_says_it_cannot(store_url: str) -> None:
    with segments.connect(store_url, lookup_staleness=60) as segs:
        segs.replace("a", [1, 70000])
        segs.replace("b", [1])
        assert segs.segments_of_cached(1) is None  # no metadata snapshot yet
        assert segs.segments_of(1) == ["a", "b"]
        reads = segs.cache.stats.shard_fetches
        assert segs.segments_of_cached(1) == ["a", "b"]
        assert segs.segments_of_cached(2) == []  # shard 0 is cached for both
        assert segs.segments_of_cached(70000) is None  # shard 1 of "a" is not cached
        assert segs.cache.stats.shard_fetches == reads  # and nothing was read to find that out
        assert segs.segments_of_cached(1, max_staleness=0) is None
        segs.add("b", [2])  # own writes drop the snapshot: never a stale answer after them
        assert segs.segments_of_cached(2) is None
        assert segs.segments_of(2) == ["b"]


def test_lookups_and_queries_state_how_fresh_their_metadata_is(store_url: str) -> None:
    with segments.connect(store_url, query_staleness=60) as reader, segments.connect(store_url) as writer:
        writer.replace("a", range(0, 200_000, 3))
        writer.replace("b", range(0, 200_000, 5))
        first = reader.reach_detailed("a & b")
        assert first.reach == len(range(0, 200_000, 15))
        refreshes = reader.lookup_refreshes
        again = reader.reach_detailed("a & b")
        assert again.reach == first.reach and 0 <= again.staleness <= 60
        assert reader.lookup_refreshes == refreshes  # no metadata read for it
        lookup = reader.segments_of_detailed(3)
        assert lookup.segments == ["a"] and 0 <= lookup.staleness <= 60
        # another process replaces "a": within the bound the old version may still answer, whole
        writer.replace("a", range(1, 200_000, 3))
        new = len([i for i in range(1, 200_000, 3) if i % 5 == 0])
        assert reader.reach("a & b") in (first.reach, new)
        # with "a" no longer cached, the stale snapshot meets the moved shard records: it is
        # dropped and the answer is the new version's, never a mix of two versions or a failure
        reader.cache.drop("a")
        assert reader.reach("a & b") == new
        # a segment newer than the snapshot is read directly, not reported missing
        writer.replace("c", [1])
        assert reader.reach("c") == 1
    with segments.connect(store_url) as exact:
        assert exact.reach_detailed("a").staleness == 0.0
