"""String user keys over HTTP, through a real ``segments serve`` process (uvicorn) on SQLite.

Every path that takes keys: writes with ``{"keys": [...]}``, lookups by key, the per-user match
by key, translation both ways, and the export as keys. Bad keys get 400 ``invalid_user_key`` and
write nothing (the segment's version and the key table are compared before and after); keys never
seen answer empty and allocate nothing. Expected answers come from sets built here.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import segments
from tests.support.api_server import ApiServer, start_api_server

READER = "reader-k3y5-0a1b"
WRITER = "writer-k3y5-2c3d"
API_KEYS = f"{READER}:read;{WRITER}:read,write"
BAD_KEYS: list[object] = ["", "tab\tkey", "nul\x00", "x" * 257, "é" * 129, 42, None, ["nested"], {"k": 1}]


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('keys') / 'segments.db'}"


@pytest.fixture(scope="module")
def api(store_url: str) -> Iterator[ApiServer]:
    with segments.connect(store_url) as segs:
        segs.add("all", range(0, 1000))
        segs.add("raw_ids", [3_999_999_999, 4_000_000_000])  # raw IDs that no key has
    with start_api_server(store_url, {"SEGMENTS_LOOKUP_STALENESS": "0"}) as server:
        yield server


@pytest.fixture(scope="module")
def client(api: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.base_url, timeout=60) as c:
        yield c


def table(store_url: str) -> tuple[int, int]:
    """(keys, next ID) of the key table, read from the store by this process."""
    with segments.connect(store_url) as segs:
        report = segs.keys.check()
        assert report.ok, report
        return report.keys, report.next_id


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code, body
    message: str = body["message"]
    return message


def path_key(key: str) -> str:
    return urllib.parse.quote(key, safe="")


def members(client: httpx.Client, name: str) -> list[str | None]:
    lines = client.get(f"/v1/segments/{name}/export", params={"as": "keys"}).text.splitlines()
    return [json.loads(line) for line in lines]


# -- writes by key ----------------------------------------------------------------------------------


def test_replace_add_remove_by_key(client: httpx.Client, store_url: str) -> None:
    first = ok(client.put("/v1/segments/k_prem", json={"keys": ["cust_1", "cust/2", "é ü", "cust_1"]}))
    assert first["cardinality"] == 3
    assert ok(client.post("/v1/segments/k_prem/add", json={"keys": ["cust_3", "cust_1"]}))["cardinality"] == 4
    keys_before = table(store_url)[0]
    after = ok(client.post("/v1/segments/k_prem/remove", json={"keys": ["cust_1", "never_seen_1"]}))
    assert after["cardinality"] == 3
    assert table(store_url)[0] == keys_before  # the unknown key was not given an ID
    assert sorted(k for k in members(client, "k_prem") if k) == sorted(["cust/2", "é ü", "cust_3"])
    # IDs that came from the translator mix with keys
    ids = ok(client.post("/v1/keys/translate", json={"keys": ["cust_1"]}))["ids"]
    assert ok(client.post("/v1/segments/k_prem/add", json={"ids": ids}))["cardinality"] == 4
    assert "cust_1" in members(client, "k_prem")


def test_a_remove_of_only_unknown_keys_changes_nothing(client: httpx.Client, store_url: str) -> None:
    ok(client.put("/v1/segments/k_stable", json={"keys": ["s1"]}))
    version = ok(client.get("/v1/segments/k_stable"))["version"]
    before = table(store_url)
    ok(client.post("/v1/segments/k_stable/remove", json={"keys": ["never_a", "never_b"]}))
    assert ok(client.get("/v1/segments/k_stable"))["version"] == version
    assert table(store_url) == before
    error(client.post("/v1/segments/k_missing/remove", json={"keys": ["never_a"]}), 404, "segment_not_found")


@pytest.mark.parametrize("bad", BAD_KEYS, ids=repr)
@pytest.mark.parametrize("route", ["PUT", "add", "remove"])
def test_a_bad_key_writes_nothing(client: httpx.Client, store_url: str, route: str, bad: object) -> None:
    ok(client.put("/v1/segments/k_guard", json={"keys": ["g1", "g2"]}))
    version = ok(client.get("/v1/segments/k_guard"))["version"]
    before = table(store_url)
    body = {"keys": ["brand_new_good_key", bad]}
    response = (client.put("/v1/segments/k_guard", json=body) if route == "PUT"
                else client.post(f"/v1/segments/k_guard/{route}", json=body))
    message = error(response, 400, "invalid_user_key")
    assert "key" in message
    assert ok(client.get("/v1/segments/k_guard"))["version"] == version
    assert table(store_url) == before  # not even the good key of the batch got an ID
    error(client.put("/v1/segments/k_guard", json={"keys": "g1"}), 400, "invalid_user_key")


def test_too_many_keys_is_413_naming_the_limit(client: httpx.Client) -> None:
    many = [f"m{i}" for i in range(100_001)]
    for response in (
        client.post("/v1/segments/k_many/add", json={"keys": many}),
        client.post("/v1/keys/translate", json={"keys": many}),
        client.post("/v1/keys/reverse", json={"ids": list(range(100_001))}),
    ):
        assert "100000" in error(response, 413, "too_many_keys")
        assert response.json()["error"]["limit"] == 100_000
    error(client.get("/v1/segments/k_many"), 404, "segment_not_found")


# -- lookups by key -----------------------------------------------------------------------------------


def test_lookups_by_key(client: httpx.Client, store_url: str) -> None:
    ok(client.put("/v1/segments/k_a", json={"keys": ["look/up", "other"]}))
    ok(client.put("/v1/segments/k_b", json={"keys": ["look/up"]}))
    uid = ok(client.post("/v1/keys/translate", json={"keys": ["look/up"]}))["ids"][0]
    assert isinstance(uid, int)
    by_id = ok(client.get(f"/v1/users/{uid}/segments"))["segments"]
    for spelled in (path_key("look/up"), "look/up"):  # the slash percent-encoded or not
        answer = ok(client.get(f"/v1/users/by-key/{spelled}/segments"))
        assert answer == {"key": "look/up", "user_id": uid, "segments": by_id}
        assert {"k_a", "k_b"} <= set(by_id)
        assert ok(client.get(f"/v1/segments/k_b/members/by-key/{spelled}")) == {
            "key": "look/up", "user_id": uid, "member": True}
    assert ok(client.get("/v1/segments/k_b/members/by-key/other"))["member"] is False
    match = ok(client.post(f"/v1/users/by-key/{path_key('look/up')}/match", json={"expr": "k_a & k_b"}))
    assert match == {"key": "look/up", "user": uid, "match": True}
    by_id_match = ok(client.post(f"/v1/users/{uid}/match", json={"expr": "k_a & k_b"}))
    assert {k: v for k, v in match.items() if k != "key"} == by_id_match
    other = ok(client.post("/v1/users/by-key/other/match", json={"expr": "k_a - k_b"}))
    assert other["match"] is True


def test_keys_never_seen_answer_empty_and_allocate_nothing(client: httpx.Client, store_url: str) -> None:
    ok(client.put("/v1/segments/k_c", json={"keys": ["somebody"]}))
    before = table(store_url)
    assert ok(client.get("/v1/users/by-key/nobody_1/segments")) == {
        "key": "nobody_1", "user_id": None, "segments": []}
    assert ok(client.get("/v1/segments/k_c/members/by-key/nobody_2"))["member"] is False
    assert ok(client.post("/v1/users/by-key/nobody_3/match", json={"expr": "~k_c"}))["match"] is False
    assert ok(client.post("/v1/keys/translate", json={"keys": ["nobody_4", "somebody"]}))["ids"][0] is None
    assert ok(client.get("/v1/segments/k_c/members/by-key/nobody_5"))["user_id"] is None
    assert table(store_url) == before
    # the name and the expression are still checked for a key never seen
    error(client.get("/v1/segments/k_nope/members/by-key/nobody"), 404, "segment_not_found")
    error(client.post("/v1/users/by-key/nobody/match", json={"expr": "k_nope"}), 404, "segment_not_found")
    error(client.post("/v1/users/by-key/nobody/match", json={"expr": "k_c &"}), 400, "invalid_expression")
    error(client.post("/v1/users/by-key/nobody/match", json={"expr": "k_c", "audiences": ["k_c"]}), 400,
          "invalid_request")


@pytest.mark.parametrize("bad", ["tab%09key", "nul%00", "x" * 257, "%FF"], ids=repr)
def test_bad_keys_in_paths(client: httpx.Client, bad: str) -> None:
    for response in (
        client.get(f"/v1/users/by-key/{bad}/segments"),
        client.get(f"/v1/segments/k_c/members/by-key/{bad}"),
        client.post(f"/v1/users/by-key/{bad}/match", json={"expr": "k_c"}),
    ):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] in ("invalid_user_key", "invalid_request"), response.text
    error(client.get("/v1/users/by-key/tab%09key/segments"), 400, "invalid_user_key")
    error(client.get("/v1/segments/k_c/members/by-key/"), 400, "invalid_user_key")


# -- translation -----------------------------------------------------------------------------------------


def test_translate_and_reverse(client: httpx.Client, store_url: str) -> None:
    created = ok(client.post("/v1/keys/translate", json={"keys": ["t1", "t2", "t1"], "create": True}))["ids"]
    assert isinstance(created, list) and created[0] == created[2] != created[1]
    assert ok(client.post("/v1/keys/translate", json={"keys": ["t2", "t_unknown"]}))["ids"] == [created[1], None]
    reverse = ok(client.post("/v1/keys/reverse", json={"ids": [created[1], created[0], 4_000_000_000]}))
    assert reverse == {"keys": ["t2", "t1", None]}
    before = table(store_url)
    error(client.post("/v1/keys/translate", json={"keys": ["t3", "bad\n"], "create": True}), 400, "invalid_user_key")
    assert table(store_url) == before
    for bad in ([-1], [2**32], ["7"], [1.5], [True]):
        error(client.post("/v1/keys/reverse", json={"ids": bad}), 400, "invalid_user_id")
    error(client.post("/v1/keys/translate", json={"keys": ["t1"], "create": "yes"}), 400, "invalid_request")
    error(client.post("/v1/keys/translate", json={"keys": ["t1"], "extra": 1}), 400, "invalid_request")
    error(client.post("/v1/keys/translate", content=b"{", headers={"Content-Type": "application/json"}), 400,
          "invalid_json")


# -- export as keys ---------------------------------------------------------------------------------------


def test_export_as_keys(client: httpx.Client) -> None:
    keys = ["e,1", 'e"2', "e 3", "é4"]
    ok(client.put("/v1/segments/k_export", json={"keys": keys}))
    ndjson = client.get("/v1/segments/k_export/export", params={"as": "keys"})
    assert ndjson.status_code == 200 and ndjson.headers["content-type"] == "application/x-ndjson"
    assert sorted(json.loads(line) for line in ndjson.text.splitlines()) == sorted(keys)
    as_csv = client.get("/v1/segments/k_export/export", params={"as": "keys", "format": "csv"})
    rows = list(csv.reader(io.StringIO(as_csv.text)))
    assert rows[0] == ["user_key"] and sorted(r[0] for r in rows[1:]) == sorted(keys)
    # members that are no key's ID: null / an empty field
    assert members(client, "raw_ids") == [None, None]
    raw = client.get("/v1/segments/raw_ids/export", params={"as": "keys", "format": "csv"}).text
    assert raw == 'user_key\n""\n""\n'
    error(client.get("/v1/segments/k_export/export", params={"as": "keys", "format": "roaring"}), 400,
          "invalid_request")
    error(client.get("/v1/segments/k_export/export", params={"as": "names"}), 400, "invalid_request")
    error(client.get("/v1/segments/k_none/export", params={"as": "keys"}), 404, "segment_not_found")
    # the default is unchanged: IDs
    ids = client.get("/v1/segments/k_export/export").text.split()
    assert all(i.isdigit() for i in ids) and len(ids) == 4


# -- scopes ------------------------------------------------------------------------------------------------


def test_scopes_of_the_key_routes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'secured.db'}"
    with segments.connect(url) as segs:
        segs.add_keys("sec", ["a", "b"])
    with start_api_server(url, {"SEGMENTS_API_KEYS": API_KEYS}) as server, httpx.Client(
        base_url=server.base_url, timeout=30
    ) as c:
        read = {"Authorization": f"Bearer {READER}"}
        write = {"Authorization": f"Bearer {WRITER}"}
        reads = [
            ("GET", "/v1/users/by-key/a/segments", None),
            ("GET", "/v1/segments/sec/members/by-key/a", None),
            ("POST", "/v1/users/by-key/a/match", {"expr": "sec"}),
            ("POST", "/v1/keys/translate", {"keys": ["a"]}),
            ("POST", "/v1/keys/reverse", {"ids": [0]}),
            ("GET", "/v1/segments/sec/export?as=keys", None),
        ]
        for method, path, body in reads:
            assert c.request(method, path, json=body).status_code == 401, path
            assert c.request(method, path, json=body, headers=read).status_code == 200, path
        creating = {"keys": ["c_new"], "create": True}
        assert error(c.post("/v1/keys/translate", json=creating, headers=read), 403, "forbidden")
        assert c.post("/v1/keys/translate", json=creating, headers=write).json()["ids"][0] is not None
        error(c.post("/v1/segments/sec/add", json={"keys": ["d"]}, headers=read), 403, "forbidden")
        assert c.post("/v1/segments/sec/add", json={"keys": ["d"]}, headers=write).status_code == 200
    with segments.connect(url) as segs:
        ids = segs.keys.translate(["c_new", "d"])
        assert None not in ids and segs.keys.reverse([i for i in ids if i is not None]) == ["c_new", "d"]
        assert segs.keys.check().ok and set(segs.keys.reverse(list(segs.evaluate("sec")))) == {"a", "b", "d"}


# -- memory of a large export --------------------------------------------------------------------------------


def _rss_sampler(server: ApiServer, stop: threading.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], server.memory().rss)
        time.sleep(0.01)


def test_exporting_a_million_members_as_keys_streams_in_constant_memory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'big.db'}"
    count = 1_000_000
    pad = "p" * 90  # long keys: a million of them held at once would take well over 200 MB
    with segments.connect(url) as segs:
        for start in range(0, count, 100_000):
            ids = segs.keys.create([f"user-{i:07d}-{pad}" for i in range(start, start + 100_000)])
            segs.add("big", ids)
        assert segs.info("big").cardinality == count
    # 64 MiB of cache: the translation cache may hold 16 MiB of it
    with start_api_server(url, {"SEGMENTS_CACHE_BYTES": str(64 << 20)}) as server:
        with httpx.Client(base_url=server.base_url, timeout=300) as c:
            assert c.get("/v1/segments/big").status_code == 200
            before = server.memory()
            stop, peak = threading.Event(), [before.rss]
            sampler = threading.Thread(target=_rss_sampler, args=(server, stop, peak))
            sampler.start()
            lines = 0
            size = 0
            last = ""
            started = time.perf_counter()
            try:
                with c.stream("GET", "/v1/segments/big/export", params={"as": "keys"}) as response:
                    assert response.status_code == 200
                    for line in response.iter_lines():
                        lines += 1
                        size += len(line) + 1
                        last = line
            finally:
                stop.set()
                sampler.join()
            took = time.perf_counter() - started
            after = server.memory()
    growth = max(peak[0], after.rss) - before.rss
    print(f"\nexport of {count:,} members as keys: {size / 1e6:.0f} MB in {took:.1f} s; API RSS {before.rss >> 20} MiB "
          f"before, peak {max(peak[0], after.rss) >> 20} MiB (+{growth >> 20} MiB), VmHWM {after.peak >> 20} MiB")
    assert lines == count and json.loads(last) == f"user-{count - 1:07d}-{pad}"
    assert growth < 80 << 20, f"RSS grew by {growth >> 20} MiB while streaming {size >> 20} MiB of keys"
