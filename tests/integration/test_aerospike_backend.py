"""The Aerospike backend against a real protocol peer: the loopback test server, or the real
cluster named by ``SEGMENTS_TEST_AEROSPIKE=host:port[/namespace]`` (``make test-aerospike``).

Most tests share the session's server (``aerospike_target``, from tests/conftest.py) and keep
apart through a unique set prefix each. The tests that stop, kill or freeze the server start one
of their own (``private_aerospike_target``): the test server, or under ``make test-aerospike`` a
real node from the server kit; the same test body runs on both. Where the two differ, the test
says so.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

import segments
from segments import Conflict, SegmentNotFound
from segments.errors import (
    RecordTooLarge,
    SegmentsError,
    StorageError,
    StorageMisconfigured,
    StorageTimeout,
    StorageUnavailable,
)
from segments.storage import Record, open_store
from segments.storage.aerospike import READ_CHUNK, SCAN_PAGE, AerospikeStore, parse_url
from tests.support.aerospike_fixture import (
    AerospikeTarget,
    add_ids_in_process,
    aerospike_url,
    parse_target,
    private_aerospike_target,
    unique_prefix,
)

T = TypeVar("T")
pytestmark = pytest.mark.aerospike


@pytest.fixture
def store(aerospike_target: AerospikeTarget) -> Iterator[AerospikeStore]:
    s = AerospikeStore(aerospike_url(aerospike_target))
    yield s
    s.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _eventually(call: Callable[[], T], within_s: float = 20.0) -> T:
    """Call until it stops raising StorageUnavailable (the client re-discovers a node in ~1 s)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return call()
        except StorageUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- URL ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("aerospike://127.0.0.1:3000", "names no namespace"),
        ("aerospike://127.0.0.1:3000/", "names no namespace"),
        ("aerospike://127.0.0.1:port/test", "bad port 'port'"),
        ("aerospike://127.0.0.1:0/test", "bad port '0'"),
        ("aerospike://127.0.0.1:3000,/test", "empty host"),
        ("aerospike://127.0.0.1:3000/test?colour=blue", "unknown parameter 'colour'"),
        ("aerospike://127.0.0.1:3000/test?prefix=a:b", "set prefix"),
        ("aerospike://127.0.0.1:3000/test?timeout_ms=-1", "timeout_ms='-1'"),
        ("aerospike://127.0.0.1:3000/test?timeout_ms=1&timeout_ms=2", "given twice"),
        ("aerospike://127.0.0.1:3000/test?user=u", "user and password must be given together"),
        ("aerospike://u:p@127.0.0.1:3000/test", "credentials as query parameters"),
        ("aerospike://127.0.0.1:3000/a/b", "invalid namespace"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(StorageError) as caught:
        open_store(url)
    assert type(caught.value) is StorageMisconfigured  # the operator's to fix: 503, not retried
    assert message in str(caught.value)


def test_url_parameters_and_masked_password() -> None:
    settings = parse_url(
        "aerospike://a.example:3100,b.example,[::1]:3200/prod?prefix=x_&timeout_ms=250"
        "&write_timeout_ms=900&batch_timeout_ms=4000&connect_timeout_s=1.5&user=app&password=s3cret"
    )
    assert settings.hosts == (("a.example", 3100), ("b.example", 3000), ("::1", 3200))
    assert settings.namespace == "prod"
    assert (settings.prefix, settings.timeout_ms, settings.write_timeout_ms) == ("x_", 250, 900)
    assert (settings.batch_timeout_ms, settings.connect_timeout_s) == (4000, 1.5)
    assert settings.socket_timeout_ms == 250  # never above the total timeout
    assert (settings.user, settings.password) == ("app", "s3cret")
    assert "s3cret" not in settings.url() and "password=***" in settings.url()
    assert "s3cret" not in repr(settings)
    with pytest.raises(StorageError) as caught:
        parse_url("aerospike://h:3000/test?user=app&password=s3cret&bogus=1")
    assert "s3cret" not in str(caught.value)


def test_fixture_target_syntax() -> None:
    assert parse_target("10.0.0.5:3000") == ("10.0.0.5", 3000, "test")
    assert parse_target("db:4000/prod") == ("db", 4000, "prod")
    with pytest.raises(ValueError, match="host:port"):
        parse_target("db")


# -- connecting ---------------------------------------------------------------------------------


def test_nothing_listening_is_storage_unavailable_naming_the_host() -> None:
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        AerospikeStore(f"aerospike://127.0.0.1:{port}/test?connect_timeout_s=0.3")
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert time.monotonic() - started >= 0.3  # it kept trying for connect_timeout_s


def test_unknown_namespace_is_a_clear_storage_error(aerospike_target: AerospikeTarget) -> None:
    url = f"aerospike://{aerospike_target.host}:{aerospike_target.port}/no_such_ns"
    with pytest.raises(StorageError) as caught:
        AerospikeStore(url)
    assert not isinstance(caught.value, StorageUnavailable)
    assert "namespace 'no_such_ns' does not exist" in str(caught.value)
    assert aerospike_target.namespace in str(caught.value)  # lists what the cluster has


def test_registry_opens_the_backend(aerospike_target: AerospikeTarget) -> None:
    prefix = unique_prefix("reg")
    s = open_store(aerospike_url(aerospike_target, prefix, timeout_ms=700))
    try:
        assert isinstance(s, AerospikeStore)
        assert s.url == aerospike_url(aerospike_target, prefix, timeout_ms=700)
        again = open_store(s.url)  # the URL reopens the same store
        again.put("x", "k", {"a": 1})
        assert s.get_many("x", ["k"]) == [Record({"a": 1}, 1)]
        again.close()
        s.ping()
    finally:
        s.close()
    with pytest.raises(StorageUnavailable, match="closed"):
        s.get_many("x", ["k"])
    with pytest.raises(StorageUnavailable, match="closed"):
        s.ping()


# -- the store contract, Aerospike specifics ---------------------------------------------------


def test_generations_create_only_and_conditional_writes(store: AerospikeStore) -> None:
    assert store.put("meta", "seg", {"ver": 1}, generation=0) == 1
    with pytest.raises(Conflict, match="already exists"):
        store.put("meta", "seg", {"ver": 99}, generation=0)
    g2 = store.put("meta", "seg", {"ver": 2}, generation=1)
    assert g2 == 2
    with pytest.raises(Conflict, match="generation 1"):
        store.put("meta", "seg", {"ver": 99}, generation=1)
    with pytest.raises(Conflict, match="does not exist"):
        store.put("meta", "never", {"ver": 1}, generation=3)
    assert store.get_many("meta", ["never"]) == [None]
    g3 = store.put("meta", "seg", {"ver": 3})
    assert g3 == 3
    (record,) = store.get_many("meta", ["seg"])
    assert record is not None and record.bins == {"ver": 3} and record.generation == g3
    with pytest.raises(Conflict):
        store.delete("meta", "seg", generation=0)  # it exists
    with pytest.raises(Conflict):
        store.delete("meta", "seg", generation=g2)
    assert store.delete("meta", "seg", generation=g3) is True
    assert store.delete("meta", "seg") is False
    assert store.delete("meta", "seg", generation=0) is False
    with pytest.raises(Conflict, match="does not exist"):
        store.delete("meta", "seg", generation=4)


def test_bin_values_round_trip_with_their_exact_types(store: AerospikeStore) -> None:
    bins: dict[str, bytes | int | str] = {
        "bm": bytes(range(256)) * 4,
        "empty": b"",
        "card": 2**63 - 1,
        "neg": -(2**63),
        "zero": 0,
        "name": "ünïcødé segment ✓",
        "map": "",
        "created": 1_700_000_000_000,
    }
    store.put("shard", "k", bins)
    (record,) = store.get_many("shard", ["k"])
    assert record is not None
    assert record.bins == bins
    assert {name: type(value) for name, value in record.bins.items()} == {
        name: type(value) for name, value in bins.items()
    }
    # a replace drops the bins it does not name
    store.put("shard", "k", {"card": 7})
    assert store.get_many("shard", ["k"])[0].bins == {"card": 7}  # type: ignore[union-attr]
    store.put_many("shard", [("k", {"name": "x"})])
    assert store.get_many("shard", ["k"])[0].bins == {"name": "x"}  # type: ignore[union-attr]
    # bytearray and memoryview go in as bytes
    store.put("shard", "b", {"bm": bytearray(b"\x01\x02"), "map": memoryview(b"\x03")})  # type: ignore[dict-item]
    assert store.get_many("shard", ["b"])[0].bins == {"bm": b"\x01\x02", "map": b"\x03"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("set_name", "bins", "error", "message"),
    [
        ("s", {}, StorageError, "without bins"),
        ("s", {"sixteen_chars_xx": 1}, StorageError, "bin name"),
        ("s", {"": 1}, StorageError, "bin name"),
        ("s", {"big": 2**63}, StorageError, "64-bit"),
        ("s", {"flag": True}, TypeError, "bool"),
        ("s", {"f": 1.5}, TypeError, "float"),
        ("x" * 60, {"a": 1}, StorageError, "set name"),
        ("a:b", {"a": 1}, StorageError, "set name"),
    ],
)
def test_unstorable_records_are_refused_before_anything_is_written(
    store: AerospikeStore, set_name: str, bins: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        store.put(set_name, "k", bins)
    with pytest.raises(error, match=message):
        store.put_many(set_name, [("ok", {"a": 1}), ("k", bins)])
    if error is TypeError or "set name" not in message:
        assert store.get_many(set_name, ["k", "ok"]) == [None, None]


def test_scans_return_keys_and_are_isolated_by_set_and_prefix(aerospike_target: AerospikeTarget) -> None:
    one = AerospikeStore(aerospike_url(aerospike_target))
    two = AerospikeStore(aerospike_url(aerospike_target))
    try:
        count = SCAN_PAGE * 2 + 345  # several scan pages
        one.put_many("segmeta", [(f"seg{i}", {"card": i}) for i in range(count)])
        one.put("segmap", "seg0/1", {"shards": b"\x00"})
        two.put("segmeta", "other", {"card": -1})
        scanned = dict(one.scan("segmeta"))
        assert len(scanned) == count
        assert {k: r.bins["card"] for k, r in scanned.items()} == {f"seg{i}": i for i in range(count)}
        assert all(r.generation == 1 for r in scanned.values())
        assert [k for k, _ in two.scan("segmeta")] == ["other"]
        assert [k for k, _ in one.scan("segmap")] == ["seg0/1"]
        assert list(two.scan("segmap")) == []
        assert list(one.scan("never_written")) == []
    finally:
        one.close()
        two.close()


def test_batch_reads_of_thousands_of_shard_records(store: AerospikeStore) -> None:
    rng = random.Random(7)
    payloads = {
        f"seg/{shard}/{rng.getrandbits(40):x}": rng.randbytes(rng.randrange(1, 2048)) for shard in range(3000)
    }
    store.put_many("segshard", [(k, {"bm": v, "card": len(v)}) for k, v in payloads.items()])
    keys = list(payloads)
    missing = [f"seg/{i}/missing" for i in range(0, 3000, 10)]
    asked = keys + missing
    rng.shuffle(asked)
    asked += [f"gap{i}" for i in range(READ_CHUNK)]  # more than one batch_read call
    records = store.get_many("segshard", asked)
    assert len(records) == len(asked)
    for key, record in zip(asked, records, strict=True):
        if key in payloads:
            assert record is not None, key
            assert record.bins == {"bm": payloads[key], "card": len(payloads[key])}
        else:
            assert record is None, key
    store.delete_many("segshard", keys[:2000] + missing)
    left = store.get_many("segshard", keys)
    assert [r is not None for r in left] == [False] * 2000 + [True] * 1000
    assert sorted(k for k, _ in store.scan("segshard")) == sorted(keys[2000:])


def test_a_record_over_the_size_limit_is_reported_clearly(
    store: AerospikeStore, aerospike_target: AerospikeTarget
) -> None:
    limit = aerospike_target.max_record_size
    with pytest.raises(RecordTooLarge) as caught:
        store.put("segshard", "huge", {"bm": b"\x00" * (limit + 1)})
    text = str(caught.value)
    assert "max-record-size" in text and "segshard/huge" in text
    reported = int(re.search(r"about (\d+) bytes", text).group(1))  # type: ignore[union-attr]
    assert limit < reported < limit + 200
    assert store.get_many("segshard", ["huge"]) == [None]
    with pytest.raises(RecordTooLarge) as caught:
        store.put_many("segshard", [("fine", {"bm": b"\x01" * 100}), ("huge", {"bm": b"\x00" * (limit + 1)})])
    assert "segshard/huge" in str(caught.value) and "max-record-size" in str(caught.value)
    assert store.get_many("segshard", ["huge"]) == [None]
    # well under the limit is fine, also in a batch
    store.put_many("segshard", [("half", {"bm": b"\x02" * (limit // 2)})])
    assert store.get_many("segshard", ["half"])[0].bins["bm"] == b"\x02" * (limit // 2)  # type: ignore[union-attr]


def test_records_never_expire_and_keep_their_user_key(
    store: AerospikeStore, aerospike_target: AerospikeTarget
) -> None:
    """What the backend leaves on the server, read back with the plain client."""
    import aerospike

    store.put("segmeta", "one", {"ver": 1})
    store.put("segmeta", "two", {"ver": 1}, generation=0)
    store.put_many("segshard", [("one/0/1", {"card": 1})])
    store.put("segmeta", "two", {"ver": 2}, generation=1)
    client = aerospike.client({"hosts": [(aerospike_target.host, aerospike_target.port)]})
    try:
        full = store.settings.prefix
        keys = [
            (aerospike_target.namespace, f"{full}segmeta", "one"),
            (aerospike_target.namespace, f"{full}segmeta", "two"),
            (aerospike_target.namespace, f"{full}segshard", "one/0/1"),
        ]
        rows = client.batch_read(keys).batch_records
        never = 0xFFFFFFFF  # how the client shows "no expiry" (void time 0)
        assert [row.record[1]["ttl"] for row in rows] == [never, never, never]
        assert [row.record[1]["gen"] for row in rows] == [1, 2, 1]
        scanned = client.query(aerospike_target.namespace, f"{full}segmeta").results()
        assert sorted(record[0][2] for record in scanned) == ["one", "two"]  # user keys were sent
    finally:
        client.close()


def test_errors_are_segments_errors_caused_by_the_client(store: AerospikeStore) -> None:
    store.put("s", "k", {"a": 1})
    with pytest.raises(Conflict) as caught:
        store.put("s", "k", {"a": 2}, generation=0)
    assert isinstance(caught.value, SegmentsError)
    assert type(caught.value).__module__ == "segments.errors"
    assert caught.value.__cause__ is not None
    assert type(caught.value.__cause__).__module__ != "segments.errors"  # the client's, kept as cause


# -- the server going away -------------------------------------------------------------------


def _every_call(store: AerospikeStore, generation: int) -> list[Callable[[], object]]:
    return [
        lambda: store.get_many("segshard", ["k1", "k2", "k3"]),
        lambda: store.get_many("segshard", ["k1"]),
        lambda: store.put("segmeta", "seg", {"ver": 2}, generation=generation),
        lambda: store.put("segmeta", "other", {"ver": 2}, generation=0),
        lambda: store.put("segmeta", "other", {"ver": 2}),
        lambda: store.put_many("segshard", [("x", {"card": 1}), ("y", {"card": 2})]),
        lambda: store.delete("segmeta", "seg"),
        lambda: store.delete_many("segshard", ["k1", "k2"]),
        lambda: list(store.scan("segshard")),
        store.ping,
    ]


_FAST = {"timeout_ms": 300, "write_timeout_ms": 500, "batch_timeout_ms": 800, "connect_timeout_s": 0.5}


def test_server_gone_gives_unavailable_and_the_same_store_recovers() -> None:
    with private_aerospike_target() as target:
        server = target.require_server()
        store = AerospikeStore(aerospike_url(target, **_FAST))
        try:
            store.put_many("segshard", [(f"k{i}", {"card": i}) for i in range(50)])
            generation = store.put("segmeta", "seg", {"ver": 1})
            server.stop()
            for call in _every_call(store, generation):
                started = time.monotonic()
                with pytest.raises(StorageUnavailable):  # StorageTimeout is one too
                    call()
                # hang detection only: the configured timeouts are at most 1 s
                assert time.monotonic() - started < 15
            time.sleep(2.5)  # long enough for the client's tend (every 1 s) to drop the node
            with pytest.raises(StorageUnavailable):
                store.get_many("segshard", ["k1"])
            server.start()  # same port; the data file kept the records
            records = _eventually(lambda: store.get_many("segshard", [f"k{i}" for i in range(50)]))
            assert [r.bins["card"] for r in records if r is not None] == list(range(50))
            assert store.put("segmeta", "seg", {"ver": 2}, generation=generation) == generation + 1
            store.ping()
            server.restart()  # a quick one: the node never leaves the client's view
            record = _eventually(lambda: store.get_many("segmeta", ["seg"]))[0]
            assert record is not None and record.bins == {"ver": 2}
        finally:
            store.close()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc to see a stopped process")
def test_a_frozen_server_gives_timeouts_then_recovers() -> None:
    with private_aerospike_target() as target:
        server = target.require_server()
        store = AerospikeStore(aerospike_url(target, **_FAST))
        try:
            generation = store.put("segmeta", "seg", {"ver": 1})
            server.freeze()  # SIGSTOP: connections stay open, nothing answers
            try:
                # first, on the pooled connection: the request goes out and its answer never comes
                with pytest.raises(StorageTimeout) as timed_out:
                    store.put("segmeta", "seg", {"ver": 2}, generation=generation)
                assert "may have been applied" in str(timed_out.value)
                for call in _every_call(store, generation):
                    started = time.monotonic()
                    with pytest.raises(StorageUnavailable) as caught:
                        call()
                    assert time.monotonic() - started < 15  # hang detection only
                    assert "Aerospike" in str(caught.value)
            finally:
                server.thaw()
            record = _eventually(lambda: store.get_many("segmeta", ["seg"]))[0]
            # The requests that timed out were still in the node's socket buffers: thawed, it runs
            # them (a real node and the test server alike), so the unconditional delete among
            # them may have removed the record. Whatever ran, ran whole: the conditional write
            # that timed out was either applied or not, never half.
            assert record is None or (record.bins, record.generation) in (
                ({"ver": 1}, generation),
                ({"ver": 2}, generation + 1),
            )
        finally:
            store.close()


def test_connect_waits_for_a_server_that_is_still_starting() -> None:
    with private_aerospike_target() as target:
        server = target.require_server()
        server.stop()
        opened: list[AerospikeStore] = []
        failed: list[BaseException] = []

        def open_it() -> None:
            try:
                opened.append(AerospikeStore(aerospike_url(target, connect_timeout_s=60)))
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                failed.append(exc)

        thread = threading.Thread(target=open_it)
        thread.start()
        try:
            time.sleep(0.5)  # the store is retrying by now
            # the test server listens once it serves; a real node listens first and answers
            # ClientError -1 until its cluster has formed, which the store waits out too
            server.start()
            thread.join(90)
            assert failed == [] and len(opened) == 1
            opened[0].put("s", "k", {"a": 1})
            assert opened[0].get_many("s", ["k"])[0] == Record({"a": 1}, 1)
        finally:
            thread.join(90)
            for s in opened:
                s.close()


Write = tuple[str, frozenset[int]]  # (replace | add | remove, ids)


def _random_write(rng: random.Random, first: bool) -> Write:
    action = "replace" if first else rng.choice(["replace", "add", "add", "remove"])
    return action, frozenset(rng.sample(range(0, 300_000), rng.randrange(1, 60)))  # five shards


def _after(write: Write, members: frozenset[int]) -> frozenset[int]:
    action, ids = write
    return ids if action == "replace" else members | ids if action == "add" else members - ids


def _state(segs: segments.Segments, name: str) -> tuple[int, frozenset[int]]:
    info = segs.info(name)
    members = frozenset(segs.evaluate(name))
    assert info.cardinality == len(members), name
    return info.version, members


def test_a_kill_loses_no_write_acknowledged_before_the_last_flush_and_no_segment_is_partial() -> None:
    """SIGKILL the server while a writer runs, start it again on the same data, compare with a model.

    Acknowledged = the call returned. The same on both servers: a write is acknowledged once it is
    in the node's write buffer, which reaches the data file within ``flush-max-ms`` (1 s by
    default; a real node with ``commit-to-device false``, the default, and the test server alike).
    So a crash may lose the writes acknowledged in the last flush interval, never older ones (on
    a cluster, replication-factor 2 keeps those on another node); and a segment is always at a
    version some write produced, whole: never a meta without its shards (CorruptSegment).
    """
    rng = random.Random(31)
    names = [f"k{i}" for i in range(4)]
    with private_aerospike_target() as target:
        server = target.require_server()
        url = aerospike_url(target, **_FAST)
        # per segment: every (version, members) an acknowledged write produced, in order
        history: dict[str, list[tuple[int, frozenset[int]]]] = {name: [(0, frozenset())] for name in names}
        in_doubt: dict[str, frozenset[int]] = {}  # members after the write the kill interrupted

        def write(segs: segments.Segments, name: str) -> None:
            version, members = history[name][-1]
            change = _random_write(rng, first=version == 0)
            try:
                info = getattr(segs, change[0])(name, sorted(change[1]))
            except StorageError:
                in_doubt[name] = _after(change, members)
                raise
            assert info.version >= version  # a write that changes nothing may keep the version
            history[name].append((info.version, _after(change, members)))

        with segments.connect(url) as segs:
            for step in range(40):
                write(segs, names[step % len(names)])
            time.sleep(target.flush_max_ms / 1000 + 1.0)  # all of these are on the device now
            durable = {name: len(states) - 1 for name, states in history.items()}
            stop = threading.Event()
            interrupted: list[str] = []

            def writer() -> None:
                step = 0
                while not stop.is_set():
                    try:
                        write(segs, names[step % len(names)])
                    except StorageError as exc:
                        interrupted.append(f"{type(exc).__name__}: {exc}"[:200])
                        return
                    step += 1

            thread = threading.Thread(target=writer)
            thread.start()
            time.sleep(0.6)  # writes acknowledged since are (most likely) still in the write buffer
            server.kill()
            stop.set()
            thread.join(60)
            server.start()  # on the same data: what reached the device comes back

        with segments.connect(url) as fresh:  # a new client: nothing cached from before the kill
            found = _eventually(lambda: {name: _state(fresh, name) for name in names}, within_s=60)
            lost = 0
            for name in names:
                states = history[name]
                if found[name][0] > states[-1][0] and found[name][1] == in_doubt.get(name):
                    continue  # the interrupted write was applied, whole
                assert found[name] in states, f"{name}: version {found[name][0]} is no state a write produced"
                at = max(i for i, state in enumerate(states) if state == found[name])  # a no-op write repeats one
                assert at >= durable[name], (
                    f"{name}: back at version {found[name][0]}, older than writes acknowledged before "
                    f"the last flush (version {states[durable[name]][0]})"
                )
                lost += len(states) - 1 - at
            fresh.add(names[0], [299_999])  # and it takes writes again
            assert 299_999 in fresh.evaluate(names[0])
    after_flush = sum(len(states) - 1 - durable[name] for name, states in history.items())
    print(
        f"\n[kill] {target.description}: {sum(len(h) - 1 for h in history.values())} acknowledged writes, "
        f"{after_flush} of them after the last sure flush; {lost} of those lost by the kill "
        f"(allowed: the last flush interval); interrupted: {interrupted}"
    )


def test_a_deleted_segment_stays_deleted_across_a_restart() -> None:
    with private_aerospike_target() as target:
        server = target.require_server()
        url = aerospike_url(target, **_FAST)
        with segments.connect(url) as segs:
            segs.replace("kept", range(0, 100_000, 7))
            segs.replace("gone", range(0, 100_000, 3))
            segs.delete("gone")
            assert sorted(segs.names()) == ["kept"]
            time.sleep(target.flush_max_ms / 1000 + 0.5)
            server.restart()  # a clean stop and start
        with segments.connect(url) as fresh:
            names = _eventually(lambda: sorted(fresh.names()), within_s=60)
            assert fresh.info("kept").cardinality == len(range(0, 100_000, 7))
            assert names == ["kept"], f"after the restart: {names}"


# -- the library on top ----------------------------------------------------------------------


def test_segments_end_to_end_against_a_set_model(aerospike_target: AerospikeTarget) -> None:
    rng = random.Random(2024)
    universe_ids = range(0, 600_000)  # spans ten shards
    model: dict[str, set[int]] = {}
    with segments.connect(aerospike_url(aerospike_target)) as segs:
        for step in range(40):
            name = rng.choice(["all", "a", "b", "c", "d"])
            action = rng.choice(["replace", "add", "remove", "delete"])
            ids = set(rng.sample(universe_ids, rng.randrange(0, 400)))
            if action == "replace":
                segs.replace(name, ids)
                model[name] = set(ids)
            elif action == "add":
                segs.add(name, ids)
                model.setdefault(name, set()).update(ids)
            elif action == "remove":
                if name in model:
                    segs.remove(name, ids)
                    model[name] -= ids
                else:
                    with pytest.raises(SegmentNotFound):
                        segs.remove(name, ids)
            elif name in model:
                segs.delete(name)
                del model[name]
            else:
                with pytest.raises(SegmentNotFound):
                    segs.delete(name)
            assert sorted(segs.names()) == sorted(model), step
            for seg, members in model.items():
                assert segs.info(seg).cardinality == len(members)
            if {"a", "b", "c"} <= model.keys():
                expected = (model["a"] | model["b"]) & model["c"]
                assert segs.reach("(a | b) & c") == len(expected)
                assert set(segs.evaluate("(a | b) & c")) == expected
                assert segs.reach("a - b ^ c") == len((model["a"] - model["b"]) ^ model["c"])
            if "all" in model and "a" in model:
                assert set(segs.evaluate("~a")) == model["all"] - model["a"]
        for seg, members in model.items():
            assert set().union(*(set(bm) for _, bm in segs.iter_shards(seg))) == members
            if members:
                some = next(iter(members))
                assert segs.contains(seg, some)
                assert seg in segs.segments_of(some)
    # a second client sees the same state from the store alone
    # (the prefix is in the URL, so it is the same deployment)


def test_concurrent_writer_processes_lose_no_update(aerospike_target: AerospikeTarget) -> None:
    url = aerospike_url(aerospike_target)
    workers, adds_per_worker, batch = 4, 8, 30
    rng = random.Random(11)
    ids = rng.sample(range(0, 3 * 65536), workers * adds_per_worker * batch)  # disjoint, 3 shards
    plans = [
        [
            ids[(w * adds_per_worker + a) * batch : (w * adds_per_worker + a + 1) * batch]
            for a in range(adds_per_worker)
        ]
        for w in range(workers)
    ]
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(workers)
    processes = [
        context.Process(target=add_ids_in_process, args=(url, "shared", plan, start)) for plan in plans
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [p.exitcode for p in processes] == [0] * workers
    with segments.connect(url) as segs:
        info = segs.info("shared")
        assert info.cardinality == len(ids)
        assert set(segs.evaluate("shared")) == set(ids)
        assert info.version == workers * adds_per_worker  # every add committed exactly once


def test_threads_share_one_store(store: AerospikeStore) -> None:
    def work(worker: int) -> None:
        for i in range(40):
            key = f"w{worker}/{i}"
            generation = store.put("s", key, {"n": i}, generation=0)
            assert store.put("s", key, {"n": i + 1}, generation=generation) == generation + 1
            assert store.get_many("s", [key])[0] == Record({"n": i + 1}, generation + 1)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    assert len(list(store.scan("s"))) == 8 * 40


def test_segments_store_errors_surface_as_segments_errors(aerospike_target: AerospikeTarget) -> None:
    with segments.connect(aerospike_url(aerospike_target)) as segs:
        big = range(0, 65536, 1)  # one full shard: 8 KiB, well under the limit
        assert segs.replace("full", big).cardinality == 65536
        with pytest.raises(SegmentNotFound):
            segs.info("absent")
