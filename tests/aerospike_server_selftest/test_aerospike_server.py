"""Drive the loopback Aerospike test server with the real ``aerospike`` client.

Most tests share one server and one client, and each uses its own set name so they do not see
each other's records. Tests that stop or restart the server start their own.
"""

from __future__ import annotations

import multiprocessing
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Barrier
from typing import Any

import aerospike
import pytest
from aerospike import exception as aerospike_exception
from aerospike_helpers.batch import records as batch_records
from aerospike_helpers.operations import operations

from tests.support.aerospike_server import (
    FIELD_BATCH_INDEX,
    FIELD_DIGEST,
    FIELD_NAMESPACE,
    FIELD_SET,
    INFO1_BATCH,
    INFO1_GET_ALL,
    INFO1_READ,
    INFO3_LAST,
    MSG_HEADER,
    PROTO_TYPE_INFO,
    PROTO_TYPE_MESSAGE,
    AerospikeServerProcess,
    decode_proto_header,
    encode_message,
    frame,
    start_aerospike_server,
)

NAMESPACE = "test"
MAX_RECORD_SIZE = 1024 * 1024
TIMEOUT_MS = 2000
POLICIES: dict[str, Any] = {
    "read": {"total_timeout": TIMEOUT_MS},
    "write": {"total_timeout": TIMEOUT_MS},
    "operate": {"total_timeout": TIMEOUT_MS},
    "remove": {"total_timeout": TIMEOUT_MS},
    "batch": {"total_timeout": TIMEOUT_MS},
    "scan": {"total_timeout": TIMEOUT_MS},
    "query": {"total_timeout": TIMEOUT_MS},
    "info": {"timeout": TIMEOUT_MS},
}

Key = tuple[str, str, Any]


def connect(port: int, **policies: Any) -> Any:
    config = {"hosts": [("127.0.0.1", port)], "policies": {**POLICIES, **policies}}
    return aerospike.client(config).connect()


def info_value(client: Any, command: str) -> str:
    """The value of an info command on the one node (the client strips the command name)."""
    ((error, value),) = client.info_all(command).values()
    assert error is None
    return str(value)


def server_statistics(client: Any) -> dict[str, int]:
    value = info_value(client, "test-server-statistics").strip()
    return {name: int(number) for name, _, number in (item.partition("=") for item in value.split(";"))}


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server() -> Iterator[AerospikeServerProcess]:
    with start_aerospike_server(namespaces=("test", "bar"), max_record_size=MAX_RECORD_SIZE) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: AerospikeServerProcess) -> Iterator[Any]:
    connected = connect(server.port)
    yield connected
    connected.close()


# --- single-record commands ---------------------------------------------------------------


def test_put_get_bytes_never_expire(client: Any) -> None:
    key = (NAMESPACE, "basic", "user-1")
    payload = bytes(range(256)) * 4

    # meta={"ttl": ...} still works in client 19.x but warns; with warnings as errors the client
    # turns that warning into ClientError(-1). policy={"ttl": ...} is the current spelling.
    with pytest.warns(DeprecationWarning, match="ttl"):
        client.put(key, {"bitmap": payload}, meta={"ttl": aerospike.TTL_NEVER_EXPIRE})
    _, meta, bins = client.get(key)

    assert bins == {"bitmap": payload}
    assert isinstance(bins["bitmap"], bytes)
    assert meta == {"ttl": 4294967295, "gen": 1}
    client.put(key, {"bitmap": payload[:10]}, policy={"ttl": aerospike.TTL_NEVER_EXPIRE})
    assert client.get(key)[1:] == ({"ttl": 4294967295, "gen": 2}, {"bitmap": payload[:10]})


def test_particle_types_round_trip(client: Any) -> None:
    key = (NAMESPACE, "types", 1)
    bins = {"i": -7, "f": 1.5, "s": "héllo", "b": b"\x00\x01", "l": [1, "a"], "m": {"k": 2}, "t": True}

    client.put(key, bins)

    assert client.get(key)[2] == bins
    assert client.select(key, ["s", "missing", "i"])[2] == {"s": "héllo", "i": -7}


def test_get_missing_raises_record_not_found(client: Any) -> None:
    with pytest.raises(aerospike_exception.RecordNotFound):
        client.get((NAMESPACE, "basic", "never-written"))
    _, meta = client.exists((NAMESPACE, "basic", "never-written"))
    assert meta is None


def test_exists_returns_metadata(client: Any) -> None:
    key = (NAMESPACE, "basic", "exists")
    client.put(key, {"a": 1})
    client.put(key, {"a": 2})

    _, meta = client.exists(key)

    assert meta == {"ttl": 4294967295, "gen": 2}


def test_generation_check_on_put(client: Any) -> None:
    key = (NAMESPACE, "generation", "k")
    client.put(key, {"a": 1})
    gen_eq = {"gen": aerospike.POLICY_GEN_EQ}

    client.put(key, {"a": 2}, meta={"gen": 1}, policy=gen_eq)
    with pytest.raises(aerospike_exception.RecordGenerationError):
        client.put(key, {"a": 3}, meta={"gen": 1}, policy=gen_eq)

    _, meta, bins = client.get(key)
    assert (meta["gen"], bins) == (2, {"a": 2})


def test_generation_check_on_remove(client: Any) -> None:
    key = (NAMESPACE, "generation", "remove")
    client.put(key, {"a": 1})

    # remove() takes the expected generation in the policy (its meta argument is deprecated).
    with pytest.raises(aerospike_exception.RecordGenerationError):
        client.remove(key, policy={"gen": aerospike.POLICY_GEN_EQ, "generation": 5})
    client.remove(key, policy={"gen": aerospike.POLICY_GEN_EQ, "generation": 1})

    with pytest.raises(aerospike_exception.RecordNotFound):
        client.get(key)


def test_exists_policies(client: Any) -> None:
    key = (NAMESPACE, "exists_policy", "k")
    missing = (NAMESPACE, "exists_policy", "missing")
    client.put(key, {"a": 1, "b": 2}, policy={"exists": aerospike.POLICY_EXISTS_CREATE})

    with pytest.raises(aerospike_exception.RecordExistsError):
        client.put(key, {"a": 9}, policy={"exists": aerospike.POLICY_EXISTS_CREATE})
    for policy in (aerospike.POLICY_EXISTS_UPDATE, aerospike.POLICY_EXISTS_REPLACE):
        with pytest.raises(aerospike_exception.RecordNotFound):
            client.put(missing, {"a": 1}, policy={"exists": policy})

    client.put(key, {"c": 3}, policy={"exists": aerospike.POLICY_EXISTS_UPDATE})
    assert client.get(key)[2] == {"a": 1, "b": 2, "c": 3}
    client.put(key, {"d": 4}, policy={"exists": aerospike.POLICY_EXISTS_REPLACE})
    assert client.get(key)[2] == {"d": 4}
    client.put(key, {"e": 5}, policy={"exists": aerospike.POLICY_EXISTS_CREATE_OR_REPLACE})
    _, meta, bins = client.get(key)
    assert bins == {"e": 5}
    assert meta["gen"] == 4


def test_remove_and_remove_missing(client: Any) -> None:
    key = (NAMESPACE, "remove", "k")
    client.put(key, {"a": 1})

    client.remove(key)

    with pytest.raises(aerospike_exception.RecordNotFound):
        client.get(key)
    with pytest.raises(aerospike_exception.RecordNotFound):
        client.remove(key)


def test_remove_bin_and_deleting_last_bin_deletes_record(client: Any) -> None:
    key = (NAMESPACE, "remove", "bins")
    client.put(key, {"a": 1, "b": 2})

    client.remove_bin(key, ["a"])
    assert client.get(key)[2] == {"b": 2}
    client.remove_bin(key, ["b"])

    with pytest.raises(aerospike_exception.RecordNotFound):
        client.get(key)


def test_ttls_need_a_namespace_supervisor(client: Any) -> None:
    """Like a default server (nsup-period 0): only 0, -1 and -2 are accepted; over 10 years is 4."""
    key = (NAMESPACE, "ttl", "refused")
    for ttl in (1, 60, 10 * 365 * 24 * 3600):
        with pytest.raises(aerospike_exception.ForbiddenError):
            client.put(key, {"a": 1}, policy={"ttl": ttl})
    with pytest.raises(aerospike_exception.InvalidRequest):
        client.put(key, {"a": 1}, policy={"ttl": 10 * 365 * 24 * 3600 + 1})
    for ttl in (aerospike.TTL_NAMESPACE_DEFAULT, aerospike.TTL_NEVER_EXPIRE, aerospike.TTL_DONT_UPDATE):
        client.put(key, {"a": ttl}, policy={"ttl": ttl})
    _, meta, bins = client.get(key)
    assert (meta, bins) == ({"ttl": 4294967295, "gen": 3}, {"a": aerospike.TTL_DONT_UPDATE})
    with pytest.raises(aerospike_exception.ForbiddenError):
        client.touch(key, 100)


def test_ttl_is_reported_and_records_expire() -> None:
    with start_aerospike_server(namespaces=("test",), nsup_period=120, persist=False) as server:
        client = connect(server.port)
        try:
            key = (NAMESPACE, "ttl", "short")
            client.put((NAMESPACE, "ttl", "long"), {"a": 1}, policy={"ttl": 60})
            client.put(key, {"a": 1}, policy={"ttl": 1})

            assert 58 <= client.get((NAMESPACE, "ttl", "long"))[1]["ttl"] <= 60
            client.touch((NAMESPACE, "ttl", "long"), 600)
            _, meta, _ = client.get((NAMESPACE, "ttl", "long"))
            assert 598 <= meta["ttl"] <= 600 and meta["gen"] == 2

            wait_until(lambda: client.exists(key)[1] is None, timeout=5, what="the record to expire")
            with pytest.raises(aerospike_exception.RecordNotFound):
                client.get(key)
        finally:
            client.close()


def test_record_too_big_boundary(client: Any) -> None:
    # Measured on a real 8.1.2.0 server with max-record-size 1 MiB: one-char set and bin names,
    # no key sent, one blob bin: 49 bytes besides the blob's value.
    largest = MAX_RECORD_SIZE - 49
    client.put((NAMESPACE, "s", "fits"), {"b": b"x" * largest})

    with pytest.raises(aerospike_exception.RecordTooBig):
        client.put((NAMESPACE, "s", "too-big"), {"b": b"x" * (largest + 1)})

    assert len(client.get((NAMESPACE, "s", "fits"))[2]["b"]) == largest
    with pytest.raises(aerospike_exception.RecordNotFound):
        client.get((NAMESPACE, "s", "too-big"))


def test_unknown_namespace_fails_client_side(client: Any) -> None:
    with pytest.raises(aerospike_exception.NamespaceNotFound):
        client.put(("no_such_namespace", "s", "k"), {"a": 1})
    with pytest.raises(aerospike_exception.NamespaceNotFound):
        client.get(("no_such_namespace", "s", "k"))


def test_second_namespace_is_separate(client: Any) -> None:
    client.put(("bar", "other_ns", "k"), {"a": "bar"})
    client.put((NAMESPACE, "other_ns", "k"), {"a": "test"})

    assert client.get(("bar", "other_ns", "k"))[2] == {"a": "bar"}
    assert client.get((NAMESPACE, "other_ns", "k"))[2] == {"a": "test"}


def test_operate_increment_append_prepend_read(client: Any) -> None:
    key = (NAMESPACE, "operate", "k")
    client.put(key, {"n": 1, "s": "b", "blob": b"\x02"})

    _, meta, bins = client.operate(
        key,
        [
            operations.increment("n", 41),
            operations.append("blob", b"\x03"),
            operations.prepend("blob", b"\x01"),
            operations.increment("new_counter", 5),
            operations.read("n"),
            operations.read("blob"),
            operations.read("new_counter"),
        ],
    )
    assert meta["gen"] == 2
    assert bins == {"n": 42, "blob": b"\x01\x02\x03", "new_counter": 5}

    # String append/prepend warn (deprecated for servers >= 8.2) but work.
    with pytest.warns(DeprecationWarning, match="deprecated for strings"):
        _, _, bins = client.operate(
            key, [operations.append("s", "c"), operations.prepend("s", "a"), operations.read("s")]
        )
    assert bins == {"s": "abc"}
    _, _, ordered = client.operate_ordered(
        key, [operations.read("n"), operations.increment("n", -2), operations.read("n")]
    )
    assert ordered == [("n", 42), ("n", 40)]


def test_operate_type_mismatch_and_generation(client: Any) -> None:
    key = (NAMESPACE, "operate", "mismatch")
    client.put(key, {"s": "text"})

    with pytest.raises(aerospike_exception.AerospikeError) as raised:
        client.operate(key, [operations.increment("s", 1)])
    assert raised.value.code == 12  # INCOMPATIBLE_TYPE
    with pytest.raises(aerospike_exception.RecordGenerationError):
        client.operate(
            key, [operations.write("x", 1)], meta={"gen": 7}, policy={"gen": aerospike.POLICY_GEN_EQ}
        )
    _, meta, bins = client.operate(
        key,
        [operations.write("x", 1), operations.read("x")],
        meta={"gen": 1},
        policy={"gen": aerospike.POLICY_GEN_EQ},
    )
    assert (meta["gen"], bins) == (2, {"x": 1})


def test_operate_delete_and_touch(client: Any) -> None:
    key = (NAMESPACE, "operate", "delete")
    client.put(key, {"a": 1})

    client.operate(key, [operations.delete()])

    with pytest.raises(aerospike_exception.RecordNotFound):
        client.get(key)
    with pytest.raises(aerospike_exception.RecordNotFound):
        client.operate(key, [operations.touch()], policy={"ttl": 100})


# --- batch ------------------------------------------------------------------------------------


def test_batch_read_thousands_of_keys_with_missing(client: Any) -> None:
    set_name = "batch_read"
    keys = [(NAMESPACE, set_name, f"user-{i}") for i in range(3000)]
    for i, key in enumerate(keys):
        if i % 3:
            client.put(key, {"bin": i.to_bytes(4, "big"), "other": i})

    full = client.batch_read(keys)
    selected = client.batch_read(keys, ["bin"])
    headers = client.batch_read(keys, [])

    for response in (full, selected, headers):
        assert response.result == 0
        assert len(response.batch_records) == len(keys)
    for i, key in enumerate(keys):
        full_row, selected_row, header_row = (r.batch_records[i] for r in (full, selected, headers))
        assert full_row.key[:3] == key
        if i % 3 == 0:
            assert [row.result for row in (full_row, selected_row, header_row)] == [2, 2, 2]
            assert full_row.record is None and selected_row.record is None and header_row.record is None
            continue
        assert full_row.result == 0
        assert full_row.record[2] == {"bin": i.to_bytes(4, "big"), "other": i}
        assert selected_row.record[2] == {"bin": i.to_bytes(4, "big")}
        assert header_row.record[1] == {"ttl": 4294967295, "gen": 1}


def test_batch_write_and_batch_remove(client: Any) -> None:
    set_name = "batch_write"
    keys = [(NAMESPACE, set_name, i) for i in range(20)]
    writes = batch_records.BatchRecords(
        [
            batch_records.Write(key, [operations.write("v", i), operations.read("v")])
            for i, key in enumerate(keys)
        ]
    )

    written = client.batch_write(writes)

    assert written.result == 0
    assert [row.result for row in written.batch_records] == [0] * len(keys)
    assert [row.record[2] for row in written.batch_records] == [{"v": i} for i in range(len(keys))]

    removed = client.batch_remove(keys[:10] + [(NAMESPACE, set_name, "missing")])
    assert [row.result for row in removed.batch_records] == [0] * 10 + [2]
    remaining = client.batch_read(keys)
    assert [row.result for row in remaining.batch_records] == [2] * 10 + [0] * 10


def test_batch_operate(client: Any) -> None:
    keys = [(NAMESPACE, "batch_operate", i) for i in range(5)]
    for key in keys:
        client.put(key, {"n": 1})

    response = client.batch_operate(keys, [operations.increment("n", 2), operations.read("n")])

    assert [row.result for row in response.batch_records] == [0] * 5
    assert [row.record[2]["n"] for row in response.batch_records] == [3] * 5


# --- scan, query, truncate, info ----------------------------------------------------------


def test_scan_and_query_return_exactly_that_sets_records(client: Any) -> None:
    send_key = {"key": aerospike.POLICY_KEY_SEND}
    for i in range(100):
        client.put((NAMESPACE, "scan_a", i), {"v": i}, policy=send_key)
    for i in range(30):
        client.put((NAMESPACE, "scan_b", i), {"v": -i, "w": i}, policy=send_key)

    scanned = client.scan(NAMESPACE, "scan_a").results()
    queried = client.query(NAMESPACE, "scan_a").results()

    for records in (scanned, queried):
        assert sorted(key[2] for key, _, _ in records) == list(range(100))
        assert all(key[0] == NAMESPACE and key[1] == "scan_a" for key, _, _ in records)
        assert all(bins == {"v": key[2]} and meta["gen"] == 1 for key, meta, bins in records)
    query = client.query(NAMESPACE, "scan_b")
    query.select("w")
    assert sorted(bins["w"] for _, _, bins in query.results()) == list(range(30))
    assert all(set(bins) == {"w"} for _, _, bins in query.results())


def test_scan_max_records_and_pagination(client: Any) -> None:
    for i in range(40):
        client.put((NAMESPACE, "pages", i), {"v": i}, policy={"key": aerospike.POLICY_KEY_SEND})

    assert len(client.scan(NAMESPACE, "pages").results(policy={"max_records": 7})) == 7
    query = client.query(NAMESPACE, "pages")
    query.max_records = 15
    query.paginate()
    seen: list[int] = []
    while not query.is_done():
        seen += [key[2] for key, _, _ in query.results()]
        assert len(seen) <= 40
    assert sorted(seen) == list(range(40))


def test_truncate_set_and_namespace(client: Any) -> None:
    for i in range(10):
        client.put(("bar", "trunc_a", i), {"v": i})
        client.put(("bar", "trunc_b", i), {"v": i})

    time.sleep(0.002)  # truncate-to-now spares what was written in the same millisecond, as a real node does
    client.truncate("bar", "trunc_a", 0)

    assert client.scan("bar", "trunc_a").results() == []
    assert len(client.scan("bar", "trunc_b").results()) == 10
    client.truncate("bar", None, 0)
    assert client.scan("bar", None).results() == []
    assert len(client.scan(NAMESPACE, "scan_a").results()) in (0, 100)  # other namespace untouched


def test_info_commands(client: Any) -> None:
    client.put((NAMESPACE, "info_set", 1), {"v": 1})

    assert info_value(client, "namespaces") == "test;bar\n"
    assert info_value(client, "status") == "ok\n"
    assert info_value(client, "build") == "8.1.2.0\n"
    assert "ns=test:set=info_set:objects=1:" in info_value(client, "sets/test")
    with pytest.raises(aerospike_exception.AerospikeError):
        client.info_all("no-such-command")


def test_compressed_requests_are_enterprise_only(server: AerospikeServerProcess) -> None:
    """Community Edition answers a compressed request with 25 and never compresses a reply."""
    compressing = {"compress": True, "total_timeout": TIMEOUT_MS}
    client = connect(server.port, read=compressing, write=compressing, batch=compressing)
    try:
        before = server_statistics(client)
        key = (NAMESPACE, "compressed", 1)
        client.put(key, {"b": b"small"})  # too small for the client to compress
        with pytest.raises(aerospike_exception.AerospikeError) as refused:
            client.put(key, {"b": b"roaring" * 2000})
        assert refused.value.code == 25
        assert client.get(key)[2] == {"b": b"small"}
        assert [row.result for row in client.batch_read([key]).batch_records] == [0]
        after = server_statistics(client)
    finally:
        client.close()

    assert after["compressed_requests"] - before["compressed_requests"] == 1


# --- raw protocol robustness ----------------------------------------------------------------


def raw_exchange(port: int, proto_type: int, body: bytes, replies: int = 1) -> list[tuple[int, bytes]]:
    """Send one request on a fresh connection and read ``replies`` proto messages back."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(frame(proto_type, body))
        return [read_proto(sock) for _ in range(replies)]


def raw_request(port: int, proto_type: int, body: bytes) -> tuple[int, bytes]:
    return raw_exchange(port, proto_type, body)[0]


def read_proto(sock: socket.socket) -> tuple[int, bytes]:
    def read_exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    version, proto_type, size = decode_proto_header(read_exactly(8))
    assert version == 2
    return proto_type, read_exactly(size)


def result_code(body: bytes) -> int:
    return int(MSG_HEADER.unpack_from(body)[5])


def single_record_fields(namespace: bytes) -> list[tuple[int, bytes]]:
    return [(FIELD_NAMESPACE, namespace), (FIELD_SET, b""), (FIELD_DIGEST, b"\x01" * 20)]


def test_info_handshake_is_answered_in_order(server: AerospikeServerProcess) -> None:
    proto_type, body = raw_request(
        server.port, PROTO_TYPE_INFO, b"node\npartition-generation\nbuild\nbogus:x=1\n"
    )

    lines = body.decode().split("\n")
    assert proto_type == PROTO_TYPE_INFO
    assert [line.split("\t")[0] for line in lines] == [
        "node",
        "partition-generation",
        "build",
        "bogus:x=1",
        "",
    ]
    assert lines[1:4] == [
        "partition-generation\t1",
        "build\t8.1.2.0",
        "bogus:x=1\tERROR:4:unrecognized command",
    ]
    _, agents = raw_request(
        server.port, PROTO_TYPE_INFO, b"user-agent-set:value=!!\nuser-agent-set:value=YWJj\nuser-agent-set:value=YWJj\n"
    )
    assert agents.decode().split("\n")[:3] == [
        "user-agent-set:value=!!\tERROR:4:'value' invalid base64",
        "user-agent-set:value=YWJj\tok",
        "user-agent-set:value=YWJj\tERROR:4:already set",  # once per connection
    ]
    _, replicas = raw_request(server.port, PROTO_TYPE_INFO, b"replicas\n")
    entries = replicas.decode().split("\t")[1].strip().split(";")
    assert [entry.split(":")[0] for entry in entries] == ["test", "bar"]
    assert all(len(entry.split(",")[2]) == 684 for entry in entries)


def test_malformed_requests_get_parameter_error_and_server_survives(
    server: AerospikeServerProcess, client: Any
) -> None:
    truncated = encode_message(info1=INFO1_READ | INFO1_GET_ALL)[:-4] + struct.pack(">HH", 3, 0)
    assert result_code(raw_request(server.port, PROTO_TYPE_MESSAGE, truncated)[1]) == 4
    assert result_code(raw_request(server.port, PROTO_TYPE_MESSAGE, b"\x16garbage")[1]) == 4
    assert result_code(raw_request(server.port, 4, b"\x00" * 8 + b"not zlib")[1]) == 25
    unknown_namespace = encode_message(info1=INFO1_READ | INFO1_GET_ALL, fields=single_record_fields(b"nope"))
    assert result_code(raw_request(server.port, PROTO_TYPE_MESSAGE, unknown_namespace)[1]) == 20

    batch_rows = struct.pack(">IB", 1, 0x0D) + struct.pack(">I", 0) + b"\x02" * 20 + bytes([0x0A, 0x03, 0, 0])
    batch_rows += struct.pack(">IHH", 0, 1, 0) + struct.pack(">IB", 5, FIELD_NAMESPACE) + b"nope"
    batch = encode_message(info1=INFO1_BATCH, fields=[(FIELD_BATCH_INDEX, batch_rows)])
    (_, row_reply), (_, trailer) = raw_exchange(server.port, PROTO_TYPE_MESSAGE, batch, replies=2)
    row = MSG_HEADER.unpack_from(row_reply)
    assert (row[5], row[8], row[3]) == (20, 0, 0)  # per-row NAMESPACE error, batch index 0, not LAST
    assert MSG_HEADER.unpack_from(trailer)[3:6] == (INFO3_LAST, 0, 0)

    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"\x07" * 8)  # wrong proto version: the server closes just this connection
        assert sock.recv(1) == b""

    client.put((NAMESPACE, "robust", 1), {"still": "alive"})
    assert client.get((NAMESPACE, "robust", 1))[2] == {"still": "alive"}


def test_cluster_name_must_match() -> None:
    with start_aerospike_server(cluster_name="segments", persist=False) as server:
        client = aerospike.client(server.client_config(**POLICIES)).connect()
        try:
            client.put((NAMESPACE, "cluster", 1), {"a": 1})
            assert client.get((NAMESPACE, "cluster", 1))[2] == {"a": 1}
        finally:
            client.close()
        with pytest.raises(aerospike_exception.ClientError):
            aerospike.client({"hosts": server.hosts, "cluster_name": "other"}).connect()


# --- outages and concurrency ----------------------------------------------------------------


def test_restart_keeps_data_and_client_reconnects() -> None:
    with start_aerospike_server(namespaces=("test",), nsup_period=120) as server:
        client = connect(server.port)
        try:
            key = (NAMESPACE, "outage", "k")
            client.put(key, {"segment": b"\x01\x02\x03"}, policy={"ttl": 3600})
            port = server.port

            assert server.stop() == 0
            with pytest.raises(aerospike_exception.AerospikeError):
                client.get(key)
            with pytest.raises(aerospike_exception.AerospikeError):
                client.put(key, {"segment": b"lost"})

            server.start()
            assert server.port == port

            def readable() -> bool:
                try:
                    return bool(client.get(key)[2] == {"segment": b"\x01\x02\x03"})
                except aerospike_exception.AerospikeError:
                    return False

            wait_until(readable, timeout=10, what="the client to reconnect")
            _, meta, _ = client.get(key)
            assert meta["gen"] == 1 and 3500 < meta["ttl"] <= 3600
            client.put(key, {"segment": b"after"})
            assert client.get(key)[2] == {"segment": b"after"}
        finally:
            client.close()


def test_restart_without_keeping_data() -> None:
    with start_aerospike_server(namespaces=("test",)) as server:
        client = connect(server.port)
        try:
            key = (NAMESPACE, "outage", "forgotten")
            client.put(key, {"a": 1})

            server.restart(keep_data=False)

            def forgotten() -> bool:
                try:
                    return client.exists(key)[1] is None
                except aerospike_exception.AerospikeError:
                    return False

            wait_until(forgotten, timeout=10, what="the client to reconnect")
        finally:
            client.close()


def test_a_kill_loses_only_the_writes_of_the_last_flush_interval() -> None:
    with start_aerospike_server(namespaces=("test",), flush_max_ms=60_000) as server:
        client = connect(server.port)
        try:
            flushed, buffered = (NAMESPACE, "crash", "flushed"), (NAMESPACE, "crash", "buffered")
            client.put(flushed, {"a": 1})
            server.restart()  # a clean stop writes everything
            wait_until(lambda: client.exists(flushed)[1] is not None, 10, "the client to reconnect")
            client.put(buffered, {"a": 2})
            client.put(flushed, {"a": 3})
            server.kill()  # within the minute: neither write reached the file
            server.start()
            wait_until(lambda: client.exists(flushed)[1] is not None, 10, "the client to reconnect")
            assert client.get(flushed)[1:] == ({"ttl": 4294967295, "gen": 1}, {"a": 1})
            assert client.exists(buffered)[1] is None
        finally:
            client.close()
    with start_aerospike_server(namespaces=("test",), flush_max_ms=50) as server:
        client = connect(server.port)
        try:
            key = (NAMESPACE, "crash", "k")
            client.put(key, {"a": 1})
            time.sleep(0.5)  # ten flush intervals
            server.kill()
            server.start()
            wait_until(lambda: client.exists(key)[1] is not None, 10, "the record after the crash")
            assert client.get(key)[2] == {"a": 1}
        finally:
            client.close()


def test_deletes_are_undone_by_a_restart_truncates_are_not() -> None:
    """Community Edition has no durable deletes: a restarted node reads every record its device
    still holds, so a deleted record comes back with its last written version."""
    with start_aerospike_server(namespaces=("test",)) as server:
        client = connect(server.port)
        try:
            keys = [(NAMESPACE, "undead", i) for i in range(3)]
            for key in keys:
                client.put(key, {"v": 1})
            client.put(keys[0], {"v": 2})
            client.remove(keys[0])
            client.remove(keys[1])
            client.put((NAMESPACE, "truncated", 1), {"v": 1})
            time.sleep(0.002)  # past the millisecond of the write
            client.truncate(NAMESPACE, "truncated", 0)
            assert [client.exists(key)[1] is None for key in keys] == [True, True, False]

            server.restart()

            wait_until(lambda: client.exists(keys[2])[1] is not None, 10, "the client to reconnect")
            assert [client.get(key)[2] for key in keys] == [{"v": 2}, {"v": 1}, {"v": 1}]
            assert client.exists((NAMESPACE, "truncated", 1))[1] is None
        finally:
            client.close()


def increment_with_generation_check(port: int, key: Key, count: int, barrier: Barrier, results: Any) -> None:
    """Read-modify-write ``count`` increments, retrying whenever the generation check fails."""
    client = connect(port)
    conflicts = 0
    barrier.wait()
    for _ in range(count):
        while True:
            _, meta, bins = client.get(key)
            try:
                client.put(
                    key,
                    {"n": bins["n"] + 1},
                    meta={"gen": meta["gen"]},
                    policy={"gen": aerospike.POLICY_GEN_EQ},
                )
                break
            except aerospike_exception.RecordGenerationError:
                conflicts += 1
    client.close()
    results.put(conflicts)


def test_two_processes_read_modify_write_lose_no_increment(
    server: AerospikeServerProcess, client: Any
) -> None:
    key = (NAMESPACE, "rmw", "counter")
    client.put(key, {"n": 0})
    per_process = 300
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    workers = [
        context.Process(
            target=increment_with_generation_check, args=(server.port, key, per_process, barrier, results)
        )
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    conflicts = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    results.close()
    results.join_thread()

    _, meta, bins = client.get(key)
    assert bins["n"] == 2 * per_process
    assert meta["gen"] == 1 + 2 * per_process
    print(f"generation conflicts retried: {conflicts}")


def test_concurrent_threads_on_many_connections(client: Any) -> None:
    key = (NAMESPACE, "threads", "counter")
    client.put(key, {"n": 0})
    errors: list[BaseException] = []

    def increment_many() -> None:
        try:
            for _ in range(200):
                client.operate(key, [operations.increment("n", 1)])
                client.batch_read([key, (NAMESPACE, "threads", "missing")])
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=increment_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert client.get(key)[2] == {"n": 1600}
