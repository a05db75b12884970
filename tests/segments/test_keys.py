"""String user keys (segments.keys): exact translation on every backend, under threads, processes and kill -9."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import segments
from segments.keys import MAX_BLOCK, PAGE_SIZE, PAIR_OVERHEAD, KeyCache, KeySets, KeyTable, check_user_key
from segments.storage import open_store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def segs(store_url: str) -> Iterator[segments.Segments]:
    with segments.connect(store_url) as s:
        yield s


def table_records(segs: segments.Segments) -> dict[str, list[str]]:
    """Every record of the key table's three sets, by set."""
    sets = KeySets.of(segs.sets)
    return {name: sorted(k for k, _ in segs.store.scan(name)) for name in (sets.ids, sets.pages, sets.alloc)}


def assert_consistent(table: KeyTable) -> segments.KeyTableReport:
    report = table.check()
    assert report.ok, report
    assert report.shared_ids == {} and report.unreversible == [] and report.beyond_counter == []
    return report


# ---------------------------------------------------------------------------------------------
# Round trips, unknown keys, writes by key
# ---------------------------------------------------------------------------------------------

KEYS = [
    "cust_8812",
    str(uuid.UUID(int=12345)),
    "ü",
    "日本語のキー",
    "emoji 🎯 key",
    "a" * 256,  # the longest ASCII key
    "é" * 128,  # 256 bytes of UTF-8 in 128 characters
    "🎯" * 64,  # 256 bytes in 64 characters
    "with space and \u00a0 no-break space",  # U+00A0 is Zs, not a control character
    "line\u2028separator",  # Zl, not Cc
    "CUST_8812",  # case matters
    "e\u0301",  # not normalised: differs from "é"
    "é",
]


def test_round_trip(segs: segments.Segments) -> None:
    ids = segs.keys.create(KEYS)
    assert sorted(ids) == list(range(len(KEYS)))  # one process, one batch: dense from 0
    assert segs.keys.translate(KEYS) == ids
    assert segs.keys.translate(list(reversed(KEYS))) == list(reversed(ids))
    assert segs.keys.reverse(ids) == KEYS
    assert segs.keys.create([*KEYS, KEYS[0]]) == [*ids, ids[0]]  # idempotent, duplicates in a batch
    segs.keys.cache.clear()
    assert segs.keys.reverse(ids, cache=False) == KEYS  # from the store, not remembered
    assert len(segs.keys.cache) == 0
    assert segs.keys.reverse(ids) == KEYS
    assert len(segs.keys.cache) == len(KEYS)
    assert segs.keys.translate(KEYS) == ids
    report = assert_consistent(segs.keys)
    assert report.keys == len(KEYS) and report.stale_claims == 0


def test_another_connection_reads_the_same_table(store_url: str) -> None:
    with segments.connect(store_url) as first:
        ids = first.keys.create(KEYS)
    with segments.connect(store_url) as second:
        assert second.keys.translate(KEYS) == ids
        assert second.keys.reverse(ids) == KEYS
        more = second.keys.create(["later"])
        assert more[0] not in ids
        assert_consistent(second.keys)


def test_unknown_keys_are_in_no_segment_and_reads_never_allocate(segs: segments.Segments) -> None:
    assert segs.keys.translate(["nobody", "nobody either"]) == [None, None]
    assert segs.keys.reverse([0, 1, 2**32 - 1]) == [None, None, None]
    assert all(v == [] for v in table_records(segs).values())  # nothing was written
    segs.add_keys("s", ["alice", "bob"])
    info = segs.remove_keys("s", ["nobody", "carol"])  # never seen: nothing to remove
    assert info.cardinality == 2
    assert segs.keys.translate(["nobody", "carol"]) == [None, None]
    assert len(table_records(segs)[KeySets.of(segs.sets).ids]) == 2
    with pytest.raises(segments.SegmentNotFound):
        segs.remove_keys("missing", ["alice"])


def test_writes_by_key(segs: segments.Segments) -> None:
    alice, bob, carol = segs.keys.create(["alice", "bob", "carol"])
    segs.add_keys("premium", ["alice", "bob", "dave"])
    dave = segs.keys.translate(["dave"])[0]
    assert dave is not None
    assert set(segs.evaluate("premium")) == {alice, bob, dave}
    segs.remove_keys("premium", ["bob"])
    assert set(segs.evaluate("premium")) == {alice, dave}
    segs.replace_keys("premium", ["carol", "erin"])
    members = sorted(segs.evaluate("premium"))
    assert sorted(k for k in segs.keys.reverse(members) if k) == ["carol", "erin"]
    assert carol in members
    segs.add("premium", segs.keys.create(["frank"]))  # IDs from the translator mix safely with keys
    assert segs.keys.reverse(sorted(segs.evaluate("premium"))) == ["carol", "erin", "frank"]
    assert_consistent(segs.keys)


def test_longest_keys_keep_every_record_small(segs: segments.Segments) -> None:
    """A page full of 256-byte keys is the largest record: far below Aerospike's 1 MiB."""
    keys = [f"{i:04d}" + "🎯" * 63 for i in range(PAGE_SIZE * 2)]
    assert {len(k.encode()) for k in keys} == {256}
    ids = segs.keys.create(keys)
    sets = KeySets.of(segs.sets)
    sizes = []
    for _, record in segs.store.scan(sets.pages):
        sizes.append(sum(len(v.encode()) if isinstance(v, str) else len(v) for v in record.bins.values()
                         if isinstance(v, (str, bytes))))
    print(f"largest page record: {max(sizes)} bytes of bins; key records: 256-byte key + one integer")
    assert max(sizes) <= PAGE_SIZE * 257 + PAGE_SIZE // 8 < (1 << 20) // 8
    segs.keys.cache.clear()
    assert segs.keys.reverse(ids) == keys


# ---------------------------------------------------------------------------------------------
# Bad keys
# ---------------------------------------------------------------------------------------------

BAD_KEYS = [
    pytest.param("", id="empty"),
    pytest.param("x" * 257, id="257-bytes"),
    pytest.param("é" * 129, id="258-bytes-in-129-chars"),
    pytest.param(b"\xff\xfe".decode("utf-8", "surrogateescape"), id="invalid-utf8-bytes-as-surrogates"),
    pytest.param("\ud800", id="lone-surrogate"),
    pytest.param(b"cust_1", id="bytes"),
    pytest.param(b"\xff", id="invalid-utf8-bytes"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("a\nb", id="newline"),
    pytest.param("tab\t", id="tab"),
    pytest.param("\x7f", id="del"),
    pytest.param("x\x85", id="next-line-c1"),
    pytest.param("\x9f", id="last-c1"),
    pytest.param(12, id="int"),
    pytest.param(None, id="none"),
    pytest.param(["a"], id="unhashable-list"),
]


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_bad_keys_are_refused_and_nothing_is_written(segs: segments.Segments, bad: object) -> None:
    batch: list[Any] = ["good_new_key", bad, "other_good_key"]
    for call in (
        lambda: segs.keys.translate(batch, create=True),
        lambda: segs.keys.translate(batch),
        lambda: segs.keys.create(batch),
        lambda: segs.add_keys("s", batch),
        lambda: segs.replace_keys("s", batch),
        lambda: segs.remove_keys("s", batch),
    ):
        with pytest.raises(segments.InvalidUserKey) as caught:
            call()
        assert caught.value.code == "invalid_user_key"
        assert caught.value.fault == segments.errors.Fault.CALLER
        assert str(caught.value)
    assert all(v == [] for v in table_records(segs).values())
    assert segs.names() == []


@pytest.mark.parametrize("batch", ["abc", b"abc", 5, None])
def test_a_batch_must_be_a_collection_of_keys(segs: segments.Segments, batch: object) -> None:
    with pytest.raises(segments.InvalidUserKey):
        segs.keys.translate(batch, create=True)  # type: ignore[arg-type]
    assert all(v == [] for v in table_records(segs).values())


@pytest.mark.parametrize("bad", [-1, 2**32, "1", 1.0, True, None])
def test_bad_ids_in_reverse(segs: segments.Segments, bad: object) -> None:
    with pytest.raises(segments.InvalidUserId):
        segs.keys.reverse([0, bad])  # type: ignore[list-item]


def test_control_characters_are_exactly_category_cc() -> None:
    refused = []
    sample = list(range(0x3000)) + random.sample(range(0x3000, 0x110000), 20000)
    for cp in sample:
        char = chr(cp)
        if unicodedata.category(char) == "Cs":
            continue
        try:
            check_user_key(f"k{char}")
        except segments.InvalidUserKey:
            refused.append(cp)
    expected = [cp for cp in sample if unicodedata.category(chr(cp)) == "Cc"]
    assert refused == expected and len(expected) == 65


def test_message_names_the_problem() -> None:
    with pytest.raises(segments.InvalidUserKey, match="U\\+0000 at position 1"):
        check_user_key("a\x00")
    with pytest.raises(segments.InvalidUserKey, match="257 bytes"):
        check_user_key("x" * 257)
    with pytest.raises(segments.InvalidUserKey, match="decode bytes"):
        check_user_key(b"x")


# ---------------------------------------------------------------------------------------------
# The translation cache
# ---------------------------------------------------------------------------------------------


def test_translation_cache_is_bounded_and_charged_to_the_cache_budget(store_url: str) -> None:
    budget = 1 << 20
    with segments.connect(store_url, cache_bytes=budget) as segs:
        assert segs.keys.cache.max_bytes == budget // 4
        for name, offset in (("a", 0), ("b", 1)):  # bitset containers: about 450 KB each
            segs.replace(name, range(offset, 3_600_000, 3))
        segs.warm(["a", "b"])
        assert len(segs.cache) == 2 and segs.cache.stats.evictions == 0
        keys = [f"user-{i:07d}" for i in range(3000)]
        ids = segs.keys.create(keys)
        print(f"key cache: {len(segs.keys.cache)} pairs in {segs.keys.cache.nbytes} bytes; "
              f"segment cache: {segs.cache.nbytes} bytes in {len(segs.cache)} entries; budget {budget}")
        assert 0 < segs.keys.cache.nbytes <= segs.keys.cache.max_bytes
        assert len(segs.keys.cache) < len(keys)  # the oldest pairs were evicted
        # what the key cache holds is taken from the segment cache
        assert segs.cache.stats.evictions > 0
        assert segs.cache.nbytes + segs.keys.cache.nbytes <= budget
        assert segs.keys.translate(keys) == ids  # evicted pairs come back from the store
        segs.keys.translate(keys[:100])
        hits_before = segs.keys.cache.hits
        segs.keys.translate(keys[:100])
        assert segs.keys.cache.hits == hits_before + 100


def test_key_cache_keeps_what_is_used_and_stays_bounded() -> None:
    cache = KeyCache(max_bytes=100 * (sys.getsizeof("k0000000") + PAIR_OVERHEAD))
    hot = [f"h{i:07d}" for i in range(10)]
    cache.add(zip(hot, range(10), strict=True))
    for n in range(2000):  # a stream of one-off keys, 20 times what the cache holds
        cache.add([(f"k{n:07d}", 1000 + n)])
        assert cache.nbytes <= cache.max_bytes and len(cache) <= 100
        if n % 20 == 0:
            assert cache.ids(hot) == list(range(10))  # used within every generation: kept
    assert cache.ids(["k0000000", "k0001999"]) == [None, 2999]  # the oldest one-off key is gone
    assert cache.keys([*range(10), 1000]) == [*hot, None]
    assert len(cache) >= 50  # at least half the bound stays in use
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_unknown_keys_are_not_cached(store_url: str) -> None:
    with segments.connect(store_url) as reader, segments.connect(store_url) as writer:
        assert reader.keys.translate(["late"]) == [None]
        uid = writer.keys.create(["late"])[0]
        assert reader.keys.translate(["late"]) == [uid]
        assert reader.keys.reverse([uid]) == ["late"]


# ---------------------------------------------------------------------------------------------
# Threads: a dict model against random interleavings
# ---------------------------------------------------------------------------------------------

valid_keys = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12
).filter(lambda k: len(k.encode()) <= 256)

op = st.tuples(
    st.sampled_from(["translate", "create", "reverse", "add", "remove"]),
    st.lists(st.integers(0, 11), min_size=1, max_size=6),
)


@dataclass
class Seen:
    """What the threads observed."""

    pairs: list[tuple[str, int]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


@settings(max_examples=25)
@given(
    raw_pool=st.lists(valid_keys, min_size=12, max_size=12, unique=True),
    programs=st.lists(st.lists(op, min_size=1, max_size=8), min_size=3, max_size=3),
)
def test_threads_against_a_dict_model(store_url: str, raw_pool: list[str], programs: list[list[tuple[str, list[int]]]]) -> None:
    # every example uses the test's one table (a set per example would pile up sets on a real
    # Aerospike), with keys and segments of its own
    tag = uuid.uuid4().hex[:8]
    pool = [f"{tag}:{k}" for k in raw_pool]
    seg = [f"s{t}x{tag}" for t in range(len(programs))]
    with segments.connect(store_url) as probe:
        before = assert_consistent(probe.keys)
    # two tables (as two processes would have) shared by three threads
    conns = [segments.connect(store_url) for _ in range(2)]
    seen = Seen()
    lock = threading.Lock()
    start = threading.Barrier(len(programs))
    models: list[set[str]] = [set() for _ in programs]
    created_by_anyone: set[str] = set()

    def run(t: int, program: list[tuple[str, list[int]]]) -> None:
        segs = conns[t % 2]
        mine: dict[str, int] = {}  # what this thread already knows (program order)
        try:
            start.wait(30)
            for kind, picks in program:
                keys = [pool[i] for i in picks]
                if kind in ("create", "add"):
                    with lock:
                        created_by_anyone.update(keys)
                if kind == "translate":
                    got = segs.keys.translate(keys)
                    for k, v in zip(keys, got, strict=True):
                        if k in mine:
                            assert v == mine[k], (k, v, mine[k])
                        if v is not None:
                            mine[k] = v
                elif kind == "create":
                    for k, v in zip(keys, segs.keys.create(keys), strict=True):
                        assert mine.setdefault(k, v) == v
                elif kind == "reverse":
                    ids = sorted(set(mine.values()))[:3] + [i * 7 for i in picks]
                    for uid, name in zip(ids, segs.keys.reverse(ids), strict=True):
                        if uid in mine.values():
                            assert name is not None and mine[name] == uid
                        if name is not None:
                            with lock:
                                seen.pairs.append((name, uid))
                elif kind == "add":
                    segs.add_keys(seg[t], keys)
                    models[t].update(keys)
                else:
                    try:
                        segs.remove_keys(seg[t], keys)
                    except segments.SegmentNotFound:
                        assert not models[t] and seg[t] not in segs.names()
                    models[t].difference_update(keys)
            with lock:
                seen.pairs.extend(mine.items())
        except BaseException as exc:
            with lock:
                seen.errors.append(exc)

    threads = [threading.Thread(target=run, args=(t, p)) for t, p in enumerate(programs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert not seen.errors, seen.errors
        id_of: dict[str, int] = {}
        key_of: dict[int, str] = {}
        for k, v in seen.pairs:
            assert id_of.setdefault(k, v) == v, f"key {k!r} got two IDs"
            assert key_of.setdefault(v, k) == k, f"ID {v} has two keys"
        final = conns[0].keys.translate(pool)
        for k, found in zip(pool, final, strict=True):
            assert (found is not None) == (k in created_by_anyone), k
            if k in id_of:
                assert found == id_of[k]
        known = {k: v for k, v in zip(pool, final, strict=True) if v is not None}
        assert len(set(known.values())) == len(known)
        fresh = segments.connect(store_url)
        conns.append(fresh)
        assert fresh.keys.reverse(list(known.values())) == list(known)
        for t, model in enumerate(models):
            if seg[t] in conns[0].names():
                assert set(conns[0].evaluate(seg[t])) == {known[k] for k in model}
            else:
                assert not model
        for conn in conns[:2]:
            conn.keys.close()
        report = assert_consistent(fresh.keys)
        assert report.keys == before.keys + len(known)
        spent = sum(c.keys.stats.reserved - c.keys.stats.created for c in conns[:2])
        assert report.gaps - before.gaps == spent  # every gap is accounted for by the table that made it
    finally:
        for conn in conns:
            conn.close()


# ---------------------------------------------------------------------------------------------
# Processes: overlapping new keys at the same moment; kill -9 while allocating
# ---------------------------------------------------------------------------------------------

WORKER = """
import json, sys
import segments
url, path, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
keys = json.load(open(path))
with segments.connect(url) as segs:
    segs.ping()
    print("ready", flush=True)
    sys.stdin.readline()
    got = {}
    for start in range(0, len(keys), batch):
        chunk = keys[start:start + batch]
        got.update(zip(chunk, segs.keys.create(chunk)))
    segs.keys.close()
    stats = segs.keys.stats
    print(json.dumps({"ids": got, "reserved": stats.reserved, "created": stats.created, "lost": stats.lost}))
"""

ALLOCATOR = """
import sys, uuid
import segments
url, batch = sys.argv[1], int(sys.argv[2])
with segments.connect(url) as segs:
    while True:
        keys = [f"k{uuid.uuid4().hex}" for _ in range(batch)]
        ids = segs.keys.create(keys)
        sys.stdout.write("".join(f"{i}\\t{k}\\n" for k, i in zip(keys, ids, strict=True)))
        sys.stdout.flush()
"""


def _python(code: str, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stdin=stdin, text=True, env=env, cwd=ROOT
    )


def _kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL by pid (if it still runs), then reap it."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def shared_url(store_url: str) -> str:
    if store_url.startswith("memory://"):
        pytest.skip("a memory:// store lives in one process")
    return store_url


def test_processes_translating_overlapping_new_keys_at_once(store_url: str, tmp_path: Path) -> None:
    url = shared_url(store_url)
    rng = random.Random()
    everything = [f"user-{uuid.uuid4()}" for _ in range(3000)]
    with ExitStack() as stack:
        workers = []
        for n in range(3):
            mine = rng.sample(everything, 2000)  # about two thirds overlap between any two
            path = tmp_path / f"keys{n}.json"
            path.write_text(json.dumps(mine))
            worker = _python(WORKER, url, str(path), str(rng.choice([50, 200, 700])), stdin=subprocess.PIPE)
            stack.enter_context(worker)
            stack.callback(_kill, worker)
            workers.append(worker)
        for w in workers:
            assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        for w in workers:  # all start together
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        results = []
        for w in workers:
            out, _ = w.communicate(timeout=300)
            assert w.returncode == 0
            results.append(json.loads(out.strip().splitlines()[-1]))
    id_of: dict[str, int] = {}
    for result in results:
        for k, v in result["ids"].items():
            assert id_of.setdefault(k, v) == v, f"key {k!r} got two IDs"
    assert len(set(id_of.values())) == len(id_of), "an ID has two keys"
    lost = sum(r["lost"] for r in results)
    with segments.connect(url) as segs:
        report = assert_consistent(segs.keys)
        assert report.keys == len(id_of)
        assert report.gaps == sum(r["reserved"] - r["created"] for r in results)
        assert report.gaps <= len(results) * MAX_BLOCK + lost
        print(f"{report.keys} keys, next ID {report.next_id}, {report.gaps} gaps, {lost} races lost, "
              f"{report.stale_claims} stale claims")
        keys = list(id_of)
        assert segs.keys.translate(keys) == [id_of[k] for k in keys]
        assert segs.keys.reverse([id_of[k] for k in keys]) == keys


def _reported(text: str) -> dict[str, int]:
    """The translations a killed allocator printed (complete lines only)."""
    out: dict[str, int] = {}
    for line in text.split("\n")[:-1]:
        uid, key = line.split("\t")
        out[key] = int(uid)
    return out


def test_kill_9_while_allocating_loses_no_translation(store_url: str) -> None:
    url = shared_url(store_url)
    rng = random.Random()
    reported: dict[str, int] = {}
    for _ in range(3):
        with _python(ALLOCATOR, url, str(rng.choice([1, 7, 60, 300]))) as proc:
            assert proc.stdout is not None
            try:
                first = proc.stdout.readline()  # it is allocating
                assert first, "the allocator died"
                time.sleep(rng.uniform(0.05, 0.6))
            finally:
                _kill(proc)
            rest = proc.stdout.read()
        assert proc.returncode == -signal.SIGKILL
        batch = _reported(first + rest)
        assert batch
        assert not set(batch) & set(reported)
        reported.update(batch)
        with segments.connect(url) as segs:
            report = assert_consistent(segs.keys)
            keys = list(reported)
            assert segs.keys.translate(keys) == [reported[k] for k in keys]
            assert segs.keys.create(keys) == [reported[k] for k in keys]  # nothing is allocated again
            segs.keys.cache.clear()
            assert segs.keys.reverse([reported[k] for k in keys]) == keys
            print(f"after a kill: {report.keys} keys, {len(reported)} reported, {report.gaps} gaps, "
                  f"{report.stale_claims} stale claims, {report.unconfirmed} unconfirmed")
    assert len(set(reported.values())) == len(reported)


def test_close_hands_back_the_unused_block(store_url: str) -> None:
    with segments.connect(store_url) as segs:
        segs.keys.create([f"k{i}" for i in range(10)])
        segs.keys.create([f"m{i}" for i in range(PAGE_SIZE)])  # into the second page of a new block
        assert segs.keys.stats.reserved == PAGE_SIZE + 2 * PAGE_SIZE
        segs.keys.close()
        assert segs.keys.stats.reserved == 2 * PAGE_SIZE  # the block's unused page went back
        store = open_store(store_url)
        try:
            counter = store.get_many(KeySets.of(segs.sets).alloc, ["next"])[0]
        finally:
            store.close()
        assert counter is not None and counter.bins["next"] == 2 * PAGE_SIZE
    with segments.connect(store_url) as segs:
        assert segs.keys.create(["after"]) == [2 * PAGE_SIZE]
