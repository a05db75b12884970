"""Hostile input over HTTP and Kafka: refused with a 4xx / a dead letter, no 5xx, no crash, no change.

One ``segments serve`` process on a seeded SQLite store (body limit 1 MiB),
and for the Kafka part one ``segments ingest`` process on the same store.
Every test takes a snapshot of all segments (info and members, read through
the API) before and after its barrage and requires them to be identical,
requires every answer to be a 4xx in the JSON error shape, and finally checks
that the server is still healthy and never logged a traceback.

What is sent: oversized bodies (announced, chunked, binary); deeply nested
and huge expressions as text and as JSON trees (reach and overlap bodies
over the 64 KiB query limit are 413, smaller ones 400); segment names with path
separators, dots, unicode, control characters, empty and over-long, in paths
and in bodies; corrupt and truncated roaring bitmaps (HTTP bodies and Kafka
messages); user IDs out of range or of the wrong type (paths, JSON bodies,
Kafka messages); and schemathesis's negative mode (schema-violating
requests) over every operation of the OpenAPI spec.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from pyroaring import BitMap

from segments.bitmap import deserialize
from segments.errors import InvalidBitmap
from tests.api.conftest import seed_store
from tests.api.test_schemathesis import CONFIG as SCHEMATHESIS_CONFIG
from tests.api.test_schemathesis import operation_count
from tests.faults.conftest import HEAVY, Snapshot, api_snapshot, assert_same_snapshot
from tests.ingest.harness import (
    IngestProcess,
    Raw,
    committed,
    new_topics,
    produce,
    read_topic,
    wait_caught_up,
)
from tests.support.api_server import ApiServer, start_api_server
from tests.support.kafka_broker import KafkaBroker

pytestmark = pytest.mark.timeout(240)

LIMIT = 1 << 20
QUERY_LIMIT = 64 << 10  # SEGMENTS_MAX_QUERY_BODY_BYTES, default
OCTET = {"Content-Type": "application/octet-stream"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'segments.db'}"
    seed_store(url)
    return url


@pytest.fixture(scope="module")
def api(store_url: str) -> Iterator[ApiServer]:
    with start_api_server(store_url, {"SEGMENTS_MAX_BODY_BYTES": str(LIMIT)}) as server:
        yield server
        assert "Traceback" not in server.output()


@pytest.fixture(scope="module")
def client(api: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.base_url, timeout=60) as c:
        yield c


@pytest.fixture()
def unchanged(client: httpx.Client, api: ApiServer) -> Iterator[Snapshot]:
    """Snapshot before the test; after it the store must be identical and the server healthy."""
    before = api_snapshot(client)
    yield before
    assert_same_snapshot(before, api_snapshot(client))
    assert client.get("/healthz").status_code == 200
    assert api.process.poll() is None
    assert "Traceback" not in api.output()


def refused(response: httpx.Response, *statuses: int) -> str:
    """A 4xx in the error shape (one of ``statuses`` if given); returns the error code."""
    context = f"{response.request.method} {str(response.request.url)[:120]} -> {response.status_code}"
    assert 400 <= response.status_code < 500, f"{context}: {response.text[:300]}"
    if statuses:
        assert response.status_code in statuses, f"{context}: {response.text[:300]}"
    if response.request.method != "HEAD":
        body = response.json()
        assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"], context
    code: str = response.json()["error"]["code"] if response.request.method != "HEAD" else ""
    return code


# -- oversized bodies ---------------------------------------------------------------


def test_oversized_bodies_are_413(client: httpx.Client, api: ApiServer, unchanged: Snapshot) -> None:
    big_ids = json.dumps({"ids": list(range(0, 400_000))}).encode()
    assert len(big_ids) > LIMIT
    assert refused(client.put("/v1/segments/even", content=big_ids, headers={"Content-Type": "application/json"}),
                   413) == "body_too_large"  # fmt: skip
    big_bitmap = BitMap(range(0, 40_000_000, 7)).serialize()
    assert len(big_bitmap) > LIMIT
    for path in ["/v1/segments/even", "/v1/segments/even/add", "/v1/segments/fresh_big/add"]:
        method = "PUT" if path.count("/") == 3 else "POST"
        refused(client.request(method, path, content=big_bitmap, headers=OCTET), 413)
    refused(client.post("/v1/reach", json={"expr": " | ".join(["even"] * 300_000)}), 413)

    def chunks() -> Iterator[bytes]:
        yield b'{"ids": ['
        for start in range(0, 600_000, 1000):
            yield (",".join(str(i) for i in range(start, start + 1000)) + ",").encode()
        yield b"1]}"

    refused(
        client.put("/v1/segments/even", content=chunks(), headers={"Content-Type": "application/json"}), 413
    )

    # a body announced as huge is refused before it is sent
    with socket.create_connection(("127.0.0.1", api.port), timeout=30) as sock:
        sock.sendall(
            b"PUT /v1/segments/even HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000000000000\r\n\r\n{"ids": [1'
        )
        received = b""
        while chunk := sock.recv(65536):  # the server closes the connection after the 413
            received += chunk
        reply = received.decode("latin-1")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert "body_too_large" in reply


# -- expressions ---------------------------------------------------------------------


def nested_tree_json(depth: int) -> str:
    """An expression tree ``depth`` levels deep, as JSON text (too deep for ``json.dumps`` to write)."""
    text = '{"segment": "even"}'
    for i in range(depth):
        text = f'{{"not": {text}}}' if i % 2 else f'{{"and": [{text}, {{"segment": "triple"}}]}}'
    return text


HUGE_TEXT = [
    "(" * 65 + "even" + ")" * 65,
    "(" * 5_000 + "even" + ")" * 5_000,
    "(" * 200_000 + "even" + ")" * 200_000,
    "~" * 100_000 + "even",
    "NOT " * 50_000 + "even",
    " | ".join(["even"] * 257),
    " & ".join(f"s{i}" for i in range(30_000)),
    "even " + "& " * 100_000,
    "(" * 300_000,
    "even" + "\x00" * 1000,
    "e" * 500_000,
]


def query_refused(response: httpx.Response) -> str:
    """A reach or overlap refused: 400/404 for what fits the 64 KiB query body limit, 413 beyond it."""
    sent = len(response.request.content)
    code = refused(response, 413) if sent > QUERY_LIMIT else refused(response, 400, 404)
    assert (code == "body_too_large") == (sent > QUERY_LIMIT), (code, sent)
    return code


def test_deep_and_huge_expressions_are_400(client: httpx.Client, unchanged: Snapshot) -> None:
    for expr in HUGE_TEXT:
        code = query_refused(client.post("/v1/reach", json={"expr": expr}))
        expected = {"invalid_expression", "segment_not_found", "invalid_segment_name", "body_too_large"}
        assert code in expected, (code, expr[:40])
        refused(client.put("/v1/segments/made_by_expr", json={"expr": expr}), 400, 404)
    for depth in (65, 1_000, 30_000):
        text = nested_tree_json(depth)
        query_refused(client.post("/v1/reach", content=f'{{"expr": {text}}}', headers=JSON))
        refused(client.put("/v1/segments/made_by_expr", content=f'{{"expr": {text}}}', headers=JSON), 400)
    for width in (300, 3_000, 40_000):  # 40,000 is over the query limit but under the general one
        wide = {"or": [{"segment": "even"}] * width}
        query_refused(client.post("/v1/reach", json={"expr": wide}))
        refused(client.put("/v1/segments/made_by_expr", json={"expr": wide}), 400)
    # JSON nested deeper than any parser's recursion limit, raw
    for depth in (5_000, 100_000):
        deep_json = '{"expr": ' + '{"not": ' * depth + '{"segment": "even"}' + "}" * (depth + 1)
        query_refused(client.post("/v1/reach", content=deep_json.encode(), headers=JSON))
        refused(client.put("/v1/segments/made_by_expr", content=deep_json.encode(), headers=JSON), 400)
    deep_list = '{"ids": ' + "[" * 100_000 + "]" * 100_000 + "}"
    refused(client.post("/v1/segments/even/add", content=deep_list.encode(),
                        headers={"Content-Type": "application/json"}), 400)  # fmt: skip
    query_refused(client.post("/v1/overlap", json={"segments": [f"s{i}" for i in range(10_000)]}))
    query_refused(client.post("/v1/overlap", json={"segments": [f"s{i}" for i in range(1_000)]}))
    refused(client.post("/v1/overlap", json={"segments": [["even"]] * 3}), 400)


# -- segment names -----------------------------------------------------------------------

HOSTILE_NAMES = [
    "a/b", "../even", "..%2Feven", "%2e%2e", "a\\b", "café", "名前", "😀", "",
    " ", "a b", "a-b", "x" * 129, "x" * 5000, "a\x00b", "a\nb", "a\tb", "even;drop",
    "AND", "not", "Or", "xor", "except", "a|b", "(even)", "~even", "a\u202eb", "\ufeffeven",
]  # fmt: skip


def test_hostile_segment_names_are_refused_everywhere(client: httpx.Client, unchanged: Snapshot) -> None:
    for name in HOSTILE_NAMES:
        encoded = quote(name, safe="")
        for method, path, body in [
            ("GET", f"/v1/segments/{encoded}", None),
            ("PUT", f"/v1/segments/{encoded}", {"ids": [1, 2]}),
            ("PUT", f"/v1/segments/{encoded}", {"expr": "even"}),
            ("POST", f"/v1/segments/{encoded}/add", {"ids": [1]}),
            ("POST", f"/v1/segments/{encoded}/remove", {"ids": [0]}),
            ("DELETE", f"/v1/segments/{encoded}", None),
            ("GET", f"/v1/segments/{encoded}/members/1", None),
            ("GET", f"/v1/segments/{encoded}/export", None),
        ]:
            response = (
                client.request(method, path, json=body) if body is not None else client.request(method, path)
            )
            refused(response, 400, 404, 405)
        refused(client.post("/v1/reach", json={"expr": {"segment": name}}), 400, 404)
        refused(
            client.post("/v1/reach", json={"expr": {"or": [{"segment": "even"}, {"segment": name}]}}),
            400,
            404,
        )
        refused(client.post("/v1/overlap", json={"segments": ["even", name]}), 400, 404)
        refused(client.put("/v1/segments/copy_target", json={"expr": {"segment": name}}), 400, 404)
    # unencoded separators and dot segments reach no segment route that changes anything
    for path in ["/v1/segments/a/b", "/v1/segments/../segments/even", "/v1/segments/even/../all",
                 "/v1/segments//add", "/v1/segments/%2F/add"]:  # fmt: skip
        refused(client.post(path, json={"ids": [1]}), 400, 404, 405)


# -- corrupt bitmaps over HTTP ------------------------------------------------------------


def corrupt_bitmaps() -> list[bytes]:
    """Truncations, bit flips, garbage and forged headers; only those the library refuses are kept."""
    rng = random.Random(20240701)
    valid = (
        BitMap(range(0, 300_000, 3)) | BitMap([4_000_000_000, 4_294_967_295]) | BitMap(range(70_000, 90_000))
    )
    valid.run_optimize()
    raw = valid.serialize()
    candidates = [
        raw[:n] for n in sorted({1, 2, 3, 4, 7, 8, 9, 15, 16, 17, *rng.sample(range(18, len(raw) - 1), 40)})
    ]
    candidates += [raw[:-1], raw[:-2], raw + b"\x00", raw + raw[:100]]
    for _ in range(30):
        flipped = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            flipped[rng.randrange(min(len(raw), 64))] ^= 1 << rng.randrange(8)
        candidates.append(bytes(flipped))
    candidates += [bytes(rng.randrange(256) for _ in range(rng.randint(1, 5000))) for _ in range(30)]
    candidates += [
        b"\x3a\x30\x00\x00" + (0xFFFFFFFF).to_bytes(4, "little"),  # cookie + 4 billion containers
        b"\x3b\x30\xff\xff" + b"\x00" * 64,  # run cookie with 65536 containers and no data
        b"\x3a\x30\x00\x00\x01\x00\x00\x00" + b"\x00\x00\xff\xff" + (16).to_bytes(4, "little"),
        b"",
    ]
    out = []
    for candidate in candidates:
        try:
            deserialize(candidate)
        except InvalidBitmap:
            out.append(candidate)
    return out


def test_corrupt_and_truncated_bitmaps_over_http(client: httpx.Client, unchanged: Snapshot) -> None:
    payloads = corrupt_bitmaps()
    assert len(payloads) >= 60
    codes = set()
    for payload in payloads:
        for method, path in [("PUT", "/v1/segments/even"), ("POST", "/v1/segments/even/add"),
                             ("POST", "/v1/segments/vip/remove"), ("POST", "/v1/segments/new_from_bits/add")]:  # fmt: skip
            codes.add(refused(client.request(method, path, content=payload, headers=OCTET), 400))
    assert codes == {"invalid_bitmap"}, codes


# -- user IDs ---------------------------------------------------------------------------

BAD_ID_LISTS: list[object] = [
    [-1], [2**32], [2**64], [10**100], [1.5], ["1"], [True], [None], [[1]], [{"id": 1}], [1e10],
    [1, 2, -5], [4_294_967_295, 4_294_967_296],
]  # fmt: skip
BAD_ID_BODIES: list[object] = [{"ids": v} for v in BAD_ID_LISTS] + [
    {"ids": "1,2"}, {"ids": 5}, {"ids": None}, {"ids": {"0": 1}}, {"id": [1]}, {}, [], "ids", 7,
]  # fmt: skip
BAD_PATH_IDS = ["-1", "4294967296", "99999999999999999999999", "0x10", "1e3", " 1", "+1", "١٢", "1.0", "", "%00",
                "18446744073709551616", "1 OR 1=1"]  # fmt: skip


def test_user_ids_out_of_range_are_400(client: httpx.Client, unchanged: Snapshot) -> None:
    for body in BAD_ID_BODIES:
        for method, path in [("PUT", "/v1/segments/even"), ("POST", "/v1/segments/even/add"),
                             ("POST", "/v1/segments/vip/remove"), ("POST", "/v1/segments/new_from_ids/add")]:  # fmt: skip
            refused(client.request(method, path, json=body), 400)
    for uid in BAD_PATH_IDS:
        encoded = quote(uid, safe="")
        refused(client.get(f"/v1/segments/even/members/{encoded}"), 400, 404)
        refused(client.get(f"/v1/users/{encoded}/segments"), 400, 404)


# -- the same over Kafka ---------------------------------------------------------------------


def reason_of(headers: dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None) -> str:
    value = (headers if isinstance(headers, dict) else dict(headers or [])).get("error.reason")
    return value.decode() if isinstance(value, bytes) else str(value)


def test_hostile_kafka_messages_go_to_dead_letters_and_change_nothing(
    broker: KafkaBroker,  # noqa: F811
    client: httpx.Client,
    store_url: str,
    tmp_path: Path,
    unchanged: Snapshot,
) -> None:
    bad: list[Raw] = []
    for payload in corrupt_bitmaps()[:40]:
        bad.append((b"even", payload, [("op", b"add"), ("segment", b"even"), ("encoding", b"roaring")]))
    for ids in BAD_ID_LISTS:
        bad.append((b"even", json.dumps({"op": "add", "segment": "even", "ids": ids}).encode(), []))
    for name in ["a/b", "café", "", "x" * 129, "a-b", "../even"]:
        bad.append((name.encode(), json.dumps({"op": "add", "segment": name, "ids": [1]}).encode(), []))
    bad += [
        (b"even", b"{not json", []),
        (b"even", b'{"op": "drop", "segment": "even", "ids": [1]}', []),
        (b"vip", json.dumps({"op": "add", "segment": "even", "ids": [1]}).encode(), []),  # key mismatch
        (
            b"even",
            json.dumps(
                {"op": "replace", "segment": "even", "batch": "b/1", "part": 0, "parts": 1, "ids": [1]}
            ).encode(),
            [],
        ),  # fmt: skip
        (
            b"even",
            json.dumps(
                {"op": "replace", "segment": "even", "batch": "b1", "part": 5, "parts": 2, "ids": [1]}
            ).encode(),
            [],
        ),  # fmt: skip
        (None, None, []),
        (b"even", b"\x00" * 10, [("op", b"add"), ("segment", b"even")]),  # binary without encoding
        (
            b"even",
            BitMap([1]).serialize(),
            [("op", b"explode"), ("segment", b"even"), ("encoding", b"roaring")],
        ),
    ]
    sentinel: Raw = (
        b"sentinel_k",
        json.dumps({"op": "add", "segment": "sentinel_k", "ids": [42]}).encode(),
        [],
    )
    topics = new_topics(broker)
    delivered = produce(broker, topics.updates, [*bad, sentinel])
    consumer = IngestProcess(broker, topics, store_url, tmp_path / "ingest.log")
    try:
        wait_caught_up(broker, topics, delivered.ends(), consumer, timeout=90)
        assert consumer.alive
    finally:
        assert consumer.stop() == 0
    assert committed(broker, topics.group, topics.updates, 1)[0] == len(bad) + 1
    dead = read_topic(broker, topics.dlq, len(bad), timeout=30)
    assert len(dead) == len(bad), "every bad message is a dead letter"
    reasons = {reason_of(m.headers()) for m in dead}
    assert {
        "corrupt_bitmap",
        "invalid_user_id",
        "invalid_segment_name",
        "bad_json",
        "key_mismatch",
    } <= reasons
    assert client.get("/v1/segments/sentinel_k/members/42").json() == {"member": True}
    assert "Traceback" not in consumer.log()
    # the sentinel is the only change; remove it so the snapshot comparison covers everything else
    assert client.delete("/v1/segments/sentinel_k").status_code == 204


# -- schemathesis, negative mode, over the whole spec ---------------------------------------


def test_schema_violating_requests_are_refused_and_change_nothing(
    api: ApiServer, tmp_path: Path, unchanged: Snapshot
) -> None:
    """Every request schemathesis builds to violate the spec must be refused, and nothing stored may change."""
    examples = "60" if HEAVY else "25"
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(SCHEMATHESIS_CONFIG),
        "run", f"{api.base_url}/openapi.json", "--mode", "negative", "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", examples, "--seed", "20240702", "--workers", "1", "--request-timeout", "30",
        "--suppress-health-check", "all", "--phases", "examples,coverage,fuzzing",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert f"Tested: {operation_count(api.base_url)}" in result.stdout
    assert "Server error" not in result.stdout


def test_deeply_nested_json_message_is_a_dead_letter(
    broker: KafkaBroker,  # noqa: F811
    store_url: str,
    tmp_path: Path,
    unchanged: Snapshot,
) -> None:
    """A poison pill: ``json.loads`` raises RecursionError (not ValueError) on it."""
    poison: Raw = (b"even", b"[" * 100_000 + b"]" * 100_000, [])
    topics = new_topics(broker)
    delivered = produce(broker, topics.updates, [poison])
    consumer = IngestProcess(broker, topics, store_url, tmp_path / "ingest.log")
    try:
        wait_caught_up(broker, topics, delivered.ends(), consumer, timeout=60)
    finally:
        code = consumer.stop()
    assert code == 0
    dead = read_topic(broker, topics.dlq, 1, timeout=30)
    assert [reason_of(m.headers()) for m in dead] == ["bad_json"]
