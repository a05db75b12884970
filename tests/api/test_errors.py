"""Every error the API answers: status, code and body, over a real uvicorn process.

The error body is always ``{"error": {"code", "message", ...}}``. A 500 is
``corrupt_data`` (damaged stored data) or ``internal_error`` (a bug); the
statuses that need a store misbehaving on cue (409, 413 ``record_too_large``,
503 ``storage_misconfigured`` ...) are checked in-process through
``app.dependency_overrides``, and the table of ``api.errors`` is checked
against the fault of every class of ``segments.errors``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import segments
import segments.errors
from api.deps import get_segments
from api.errors import ERRORS, status_and_code
from api.main import create_app
from api.settings import Settings
from segments.errors import (
    Conflict,
    CorruptSegment,
    Fault,
    RecordTooLarge,
    SegmentsError,
    StorageFull,
    StorageMisconfigured,
    StorageTimeout,
)
from segments.types import UserSet
from tests.support.api_server import ApiServer, start_api_server

OCTET = {"Content-Type": "application/octet-stream"}


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, object] = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error


# -- 400 invalid_expression -----------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "position"),
    [
        ("even &", 6),
        ("(even | triple", 14),
        ("even triple", 5),
        ("", 0),
        ("even & & triple", 7),
        ("even | )", 7),
        ("even @ triple", 5),
    ],
)
def test_syntax_errors_carry_the_position(client: httpx.Client, expr: str, position: int) -> None:
    error = error_of(client.post("/v1/reach", json={"expr": expr}), 400, "invalid_expression")
    assert error["position"] == position
    assert isinstance(error["expected"], str) and error["expected"]


def test_expression_too_deep_or_too_long(client: httpx.Client) -> None:
    deep = "(" * 100 + "even" + ")" * 100
    error_of(client.post("/v1/reach", json={"expr": deep}), 400, "invalid_expression")
    wide = " | ".join(["even"] * 300)
    error_of(client.post("/v1/reach", json={"expr": wide}), 400, "invalid_expression")
    # text over the length limit: a reach body that large is refused before it is read
    huge = client.post("/v1/reach", json={"expr": "a" * 70_000})
    assert "SEGMENTS_MAX_QUERY_BODY_BYTES" in str(error_of(huge, 413, "body_too_large")["message"])
    saved = client.put("/v1/segments/t_too_long", json={"expr": "a" * 70_000})
    assert str(error_of(saved, 400, "invalid_expression")["message"]).startswith("expression text is 70000")


@pytest.mark.parametrize(
    "tree",
    [
        {"and": []},
        {"segment": 5},
        {"nope": "x"},
        {"segment": "even", "and": []},
        {"not": [{"segment": "even"}]},
    ],
)
def test_invalid_json_trees(client: httpx.Client, tree: dict[str, object]) -> None:
    error = error_of(client.post("/v1/reach", json={"expr": tree}), 400, "invalid_expression")
    assert "position" in error


def test_deeply_nested_json_tree_is_rejected_not_crashed(client: httpx.Client) -> None:
    for depth in (200, 5000):
        body = b'{"expr": ' + b'{"not": ' * depth + b'{"segment": "even"}' + b"}" * (depth + 1)
        response = client.post("/v1/reach", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400
        assert response.json()["error"]["code"] in {"invalid_expression", "invalid_json"}


def test_put_with_an_invalid_expression(client: httpx.Client, fresh_name: str) -> None:
    error = error_of(
        client.put(f"/v1/segments/{fresh_name}", json={"expr": "even |"}), 400, "invalid_expression"
    )
    assert error["position"] == 6
    assert client.get(f"/v1/segments/{fresh_name}").status_code == 404  # nothing was written


# -- 404 segment_not_found ------------------------------------------------------


def test_unknown_segments_are_all_named(client: httpx.Client) -> None:
    error = error_of(
        client.post("/v1/reach", json={"expr": "even & zz_missing | aa_missing"}), 404, "segment_not_found"
    )
    assert error["segments"] == ["aa_missing", "zz_missing"]
    assert "aa_missing" in str(error["message"])


def test_unknown_segment_everywhere(client: httpx.Client) -> None:
    missing = "zz_missing"
    for response in [
        client.get(f"/v1/segments/{missing}"),
        client.get(f"/v1/segments/{missing}/members/1"),
        client.get(f"/v1/segments/{missing}/export"),
        client.delete(f"/v1/segments/{missing}"),
        client.post(f"/v1/segments/{missing}/remove", json={"ids": [1]}),
        client.post("/v1/overlap", json={"segments": ["even", missing]}),
        client.put("/v1/segments/t_target", json={"expr": f"even | {missing}"}),
    ]:
        assert error_of(response, 404, "segment_not_found")["segments"] == [missing]


# -- 400 invalid_segment_name / invalid_user_id ---------------------------------


@pytest.mark.parametrize("name", ["bad-name", "and", "x" * 129, "sp%20ace", "%F0%9F%98%80", "a%00b"])
def test_invalid_segment_names(client: httpx.Client, name: str) -> None:
    for response in [
        client.get(f"/v1/segments/{name}"),
        client.put(f"/v1/segments/{name}", json={"ids": [1]}),
        client.post(f"/v1/segments/{name}/add", json={"ids": [1]}),
        client.post(f"/v1/segments/{name}/remove", json={"ids": [1]}),
        client.delete(f"/v1/segments/{name}"),
        client.get(f"/v1/segments/{name}/members/1"),
        client.get(f"/v1/segments/{name}/export"),
    ]:
        error_of(response, 400, "invalid_segment_name")


def test_invalid_segment_name_in_overlap(client: httpx.Client) -> None:
    error = error_of(
        client.post("/v1/overlap", json={"segments": ["even", "no-dash"]}), 400, "invalid_segment_name"
    )
    assert "no-dash" in str(error["message"])


@pytest.mark.parametrize(
    "uid", ["abc", "-1", "4294967296", "1.5", "99999999999999999999999", "%D9%A3", "1e3", "+5"]
)
def test_invalid_user_ids_in_the_path(client: httpx.Client, uid: str) -> None:
    error_of(client.get(f"/v1/users/{uid}/segments"), 400, "invalid_user_id")
    error_of(client.get(f"/v1/segments/even/members/{uid}"), 400, "invalid_user_id")


@pytest.mark.parametrize(
    ("ids", "named"),
    [
        ([1, -1], "-1"),
        ([4294967296], "4294967296"),
        (["7"], "'7'"),
        ([1.5], "1.5"),
        ([True], "True"),
        ([None], "None"),
        (5, "int"),
        ("1,2", "str"),
        ({"a": 1}, "dict"),
        (None, "NoneType"),
    ],
)
def test_invalid_user_ids_in_bodies(client: httpx.Client, fresh_name: str, ids: object, named: str) -> None:
    for response in [
        client.put(f"/v1/segments/{fresh_name}", json={"ids": ids}),
        client.post(f"/v1/segments/{fresh_name}/add", json={"ids": ids}),
    ]:
        error = error_of(response, 400, "invalid_user_id")
        assert named in str(error["message"])
    assert client.get(f"/v1/segments/{fresh_name}").status_code == 404  # nothing was written


# -- 400 invalid_bitmap / invalid_json / invalid_request, 415 ---------------------


@pytest.mark.parametrize(
    "payload", [b"", b"\x00", b"not a bitmap at all", b"\x3b\x30\x00\x00" + b"\xff" * 40]
)
def test_invalid_bitmaps(client: httpx.Client, fresh_name: str, payload: bytes) -> None:
    for path in (f"/v1/segments/{fresh_name}", f"/v1/segments/{fresh_name}/add"):
        method = "PUT" if path.endswith(fresh_name) else "POST"
        response = client.request(method, path, content=payload, headers=OCTET)
        error_of(response, 400, "invalid_bitmap")


@pytest.mark.parametrize(
    "body", [b"{", b"[" * 60_000, b'{"ids": [1,]}', b"\xff\xfe", b'{"ids": [' + b"1" * 5000 + b"]}'"]
)
def test_invalid_json_bodies(client: httpx.Client, fresh_name: str, body: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    error_of(client.put(f"/v1/segments/{fresh_name}", content=body, headers=headers), 400, "invalid_json")
    error_of(client.post("/v1/reach", content=body, headers=headers), 400, "invalid_json")


def test_json_error_position(client: httpx.Client, fresh_name: str) -> None:
    response = client.put(
        f"/v1/segments/{fresh_name}", content=b'{"ids": [1, 2', headers={"Content-Type": "application/json"}
    )
    assert error_of(response, 400, "invalid_json")["position"] == 13


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"ids": [1], "expr": "even"}, "not both"),
        ({}, "needs"),
        ({"members": [1]}, "unknown field 'members'"),
        ([1, 2], "JSON object"),
    ],
)
def test_invalid_write_bodies(client: httpx.Client, fresh_name: str, body: object, fragment: str) -> None:
    error = error_of(client.put(f"/v1/segments/{fresh_name}", json=body), 400, "invalid_request")
    assert fragment in str(error["message"])


def test_add_and_remove_take_no_expression(client: httpx.Client, fresh_name: str) -> None:
    for op in ("add", "remove"):
        response = client.post(f"/v1/segments/{fresh_name}/{op}", json={"expr": "even"})
        assert "unknown field 'expr'" in str(error_of(response, 400, "invalid_request")["message"])


def test_unsupported_media_type(client: httpx.Client, fresh_name: str) -> None:
    response = client.put(
        f"/v1/segments/{fresh_name}", content=b"1,2,3", headers={"Content-Type": "text/csv"}
    )
    error = error_of(response, 415, "unsupported_media_type")
    assert "application/json" in str(error["message"])


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/reach", {}),
        ("/v1/reach", {"expr": 5}),
        ("/v1/reach", {"expr": "even", "extra": 1}),
        ("/v1/overlap", {"segments": []}),
        ("/v1/overlap", {"segments": [f"s{i}" for i in range(33)]}),
        ("/v1/overlap", {"segments": "even"}),
    ],
)
def test_request_validation_errors_are_400(client: httpx.Client, path: str, body: object) -> None:
    error = error_of(client.post(path, json=body), 400, "invalid_request")
    assert isinstance(error["details"], list) and error["details"]


def test_invalid_export_format(client: httpx.Client) -> None:
    error = error_of(client.get("/v1/segments/even/export", params={"format": "xml"}), 400, "invalid_request")
    assert "format" in str(error["message"])


# -- 404 / 405 routes -----------------------------------------------------------


def test_unknown_route_and_method(client: httpx.Client) -> None:
    error_of(client.get("/v2/nothing"), 404, "not_found")
    error_of(client.get("/v1/segments/"), 404, "not_found")
    error_of(client.get("/static/missing.js"), 404, "not_found")
    response = client.patch("/v1/segments/even", json={})
    error_of(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "PUT", "DELETE"}


# -- 413 body_too_large ---------------------------------------------------------


@pytest.fixture(scope="module")
def small_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A server with a 4 KiB body limit and a universe segment that does not exist."""
    url = f"sqlite:///{tmp_path_factory.mktemp('small') / 'segments.db'}"
    with segments.connect(url) as segs:
        segs.replace("even", range(0, 100, 2))
    env = {"SEGMENTS_MAX_BODY_BYTES": "4096", "SEGMENTS_UNIVERSE": "people"}
    with start_api_server(url, env) as server:
        yield server


def test_body_over_the_limit_is_413(small_api: ApiServer) -> None:
    with httpx.Client(base_url=small_api.base_url, timeout=30) as c:
        big = {"ids": list(range(2000))}
        error = error_of(c.put("/v1/segments/big", json=big), 413, "body_too_large")
        assert error["limit"] == 4096
        error_of(c.post("/v1/reach", json={"expr": "even | " * 1000 + "even"}), 413, "body_too_large")
        assert c.get("/v1/segments/big").status_code == 404
        assert c.put("/v1/segments/small", json={"ids": list(range(100))}).status_code == 200


def test_chunked_body_over_the_limit_is_413(small_api: ApiServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"ids": ['
        for _ in range(200):
            yield b"1," * 50
        yield b"1]}"

    with httpx.Client(base_url=small_api.base_url, timeout=30) as c:
        response = c.put(
            "/v1/segments/chunked", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in response.request.headers
        error_of(response, 413, "body_too_large")
        assert c.get("/v1/segments/chunked").status_code == 404


def test_missing_universe_is_named(small_api: ApiServer) -> None:
    with httpx.Client(base_url=small_api.base_url, timeout=30) as c:
        error = error_of(c.post("/v1/reach", json={"expr": "~even"}), 404, "segment_not_found")
        assert error["segments"] == ["people"]
        assert "universe" in str(error["message"])


# -- 503 storage unavailable (and recovery) ---------------------------------------


def test_store_unavailable_is_503_with_retry_after_and_recovers(tmp_path: Path) -> None:
    blocked = tmp_path / "store.db"
    blocked.mkdir()  # a directory where the database file should be: SQLite cannot open it
    with start_api_server(f"sqlite:///{blocked}") as server, httpx.Client(base_url=server.base_url) as c:
        assert c.get("/healthz").status_code == 200
        ready = c.get("/readyz")
        error_of(ready, 503, "storage_unavailable")
        assert ready.headers["retry-after"] == "1"
        for response in [
            c.get("/v1/segments"),
            c.post("/v1/reach", json={"expr": "a"}),
            c.get("/v1/users/1/segments"),
            c.put("/v1/segments/a", json={"ids": [1]}),
        ]:
            error_of(response, 503, "storage_unavailable")
            assert response.headers["retry-after"] == "1"
        blocked.rmdir()  # the store comes back
        assert c.get("/readyz").json() == {"status": "ready"}
        assert c.put("/v1/segments/a", json={"ids": [1, 2]}).json()["cardinality"] == 2


# -- 500 corrupt_data: damaged stored data ---------------------------------------------


def test_damaged_stored_data_is_500_corrupt_data(
    client: httpx.Client, store_path: Path, fresh_name: str
) -> None:
    with segments.connect(f"sqlite:///{store_path}") as segs:
        segs.replace(fresh_name, [1, 2, 70_000])
    with sqlite3.connect(store_path) as db:
        changed = db.execute(
            "UPDATE records SET bins = X'FFFF01' WHERE set_name = 'segshard' AND key LIKE ?",
            (f"{fresh_name}/%",),
        ).rowcount
    assert changed == 2
    error = error_of(client.post("/v1/reach", json={"expr": f"{fresh_name} | vip"}), 500, "corrupt_data")
    assert "decode" in str(error["message"])
    error_of(client.get(f"/v1/segments/{fresh_name}/export"), 500, "corrupt_data")
    assert client.get("/healthz").status_code == 200


# -- statuses that need a store failing on cue (in-process) ------------------------


class _Failing(segments.Segments):
    def __init__(self, exc: Exception) -> None:
        super().__init__(segments.open_store("memory://"))
        self.exc = exc

    def replace(self, name: str, ids: UserSet) -> segments.SegmentInfo:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "status", "code", "retry_after"),
    [
        (Conflict("segment 'a' kept changing; retry"), 409, "conflict", False),
        (RecordTooLarge("record of 2 MiB over the 1 MiB limit"), 413, "record_too_large", False),
        (StorageTimeout("the store did not answer within 300 ms"), 503, "storage_timeout", True),
        (StorageFull("namespace test is at stop-writes"), 503, "storage_full", True),
        (StorageMisconfigured("namespace nope is not configured"), 503, "storage_misconfigured", False),
        (CorruptSegment("shard 3 of segment 'a' cannot be decoded", "a"), 500, "corrupt_data", False),
    ],
)
def test_mapping_table_through_the_app(exc: Exception, status: int, code: str, retry_after: bool) -> None:
    response = _put_failing(exc)
    assert response.status_code == status
    assert response.json() == {"error": {"code": code, "message": str(exc)}}
    assert ("retry-after" in response.headers) == retry_after


def test_an_unexpected_error_is_500_internal_error_without_details() -> None:
    for exc in [SegmentsError("something new"), ValueError("a bug")]:
        response = _put_failing(exc)
        assert response.status_code == 500
        assert response.json() == {
            "error": {"code": "internal_error", "message": "internal error; the server log has the details"}
        }


def _put_failing(exc: Exception) -> httpx.Response:
    app = create_app(Settings(store="memory://"))
    failing = _Failing(exc)
    app.dependency_overrides[get_segments] = lambda: failing

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
            return await c.put("/v1/segments/a", json={"ids": [1]})

    return asyncio.run(call())


CORE_ERRORS = [
    cls
    for _, cls in inspect.getmembers(segments.errors, inspect.isclass)
    if issubclass(cls, SegmentsError) and cls is not SegmentsError
]


@pytest.mark.parametrize("cls", CORE_ERRORS, ids=[c.__name__ for c in CORE_ERRORS])
def test_every_core_error_class_has_a_row_that_fits_its_fault(cls: type[SegmentsError]) -> None:
    assert cls in ERRORS, f"api.errors.ERRORS has no row for {cls.__name__}"
    status, code = ERRORS[cls]
    assert code == cls.code
    if cls.fault is Fault.CALLER:
        assert 400 <= status < 500
    elif cls.fault in (Fault.TRANSIENT, Fault.CAPACITY):
        assert status == (409 if issubclass(cls, Conflict) else 503)
    elif cls.fault is Fault.OPERATOR:
        assert (status, code) == (503, "storage_misconfigured")
    else:
        assert cls.fault is Fault.DATA and (status, code) == (500, "corrupt_data")


def test_a_new_subclass_answers_like_its_parent_until_it_has_a_row() -> None:
    class Newer(StorageTimeout):
        code = "storage_newer"

    class Unknown(SegmentsError):
        code = "unknown_thing"

    assert status_and_code(Newer("x")) == (503, "storage_timeout")
    assert status_and_code(Unknown("x")) == (500, "internal_error")
    assert status_and_code(KeyError("x")) == (500, "internal_error")


def test_error_bodies_are_json_even_for_odd_requests(client: httpx.Client) -> None:
    odd = [
        client.request(
            "PUT", "/v1/segments/x", content=b"\x00" * 10, headers={"Content-Type": "application/json"}
        ),
        client.request("POST", "/v1/reach", content=b"null", headers={"Content-Type": "application/json"}),
        client.request(
            "POST",
            "/v1/overlap",
            content=b'{"segments": [null]}',
            headers={"Content-Type": "application/json"},
        ),
        client.request("GET", "/v1/segments/even/members/"),
        client.request("DELETE", "/v1/segments"),
    ]
    for response in odd:
        assert 400 <= response.status_code < 500, response.text
        assert json.loads(response.text)["error"]["code"]
