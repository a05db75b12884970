"""API keys: every ``/v1`` route needs a key with the right scope when ``SEGMENTS_API_KEYS`` is set."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.auth import find_key, parse_api_keys
from tests.api.conftest import seed_store
from tests.support.api_server import ApiServer, start_api_server

READER = "reader-7f3a9c1d"
WRITER = "writer-2b8e6f0a"
ADMIN = "admin-91c4d7e2"
KEYS = f"{READER}:read; {WRITER}:write;{ADMIN}:read,write;"

#: (method, path, JSON body, scope the route needs)
ROUTES: list[tuple[str, str, object, str]] = [
    ("GET", "/v1/segments", None, "read"),
    ("GET", "/v1/segments/even", None, "read"),
    ("GET", "/v1/segments/even/members/4", None, "read"),
    ("GET", "/v1/segments/even/export", None, "read"),
    ("GET", "/v1/users/4/segments", None, "read"),
    ("POST", "/v1/reach", {"expr": "even & triple"}, "read"),
    ("POST", "/v1/overlap", {"segments": ["even", "triple"]}, "read"),
    ("PUT", "/v1/segments/t_auth", {"ids": [1, 2]}, "write"),
    ("POST", "/v1/segments/t_auth/add", {"ids": [3]}, "write"),
    ("POST", "/v1/segments/t_auth/remove", {"ids": [1]}, "write"),
    ("DELETE", "/v1/segments/t_auth", None, "write"),
]
ROUTE_IDS = [f"{m} {p}" for m, p, _, _ in ROUTES]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('auth') / 'segments.db'}"
    seed_store(url)
    with start_api_server(url, {"SEGMENTS_API_KEYS": KEYS}) as server:
        yield server


@pytest.fixture(scope="module")
def http(secured: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secured.base_url, timeout=30) as c:
        yield c


def send(c: httpx.Client, method: str, path: str, body: object, headers: dict[str, str]) -> httpx.Response:
    return (
        c.request(method, path, json=body, headers=headers)
        if body is not None
        else c.request(method, path, headers=headers)
    )


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES, ids=ROUTE_IDS)
def test_missing_key_is_401(http: httpx.Client, method: str, path: str, body: object, scope: str) -> None:
    response = send(http, method, path, body, {})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {
        "error": {"code": "unauthorized", "message": "missing API key: send 'Authorization: Bearer <key>'"}
    }


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("header", ["Bearer nope-not-a-key", f"Bearer {READER}x", f"Basic {READER}", READER])
def test_wrong_key_is_401(
    http: httpx.Client, method: str, path: str, body: object, scope: str, header: str
) -> None:
    response = send(http, method, path, body, {"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert READER not in response.text


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES, ids=ROUTE_IDS)
def test_key_without_the_scope_is_403(
    http: httpx.Client, method: str, path: str, body: object, scope: str
) -> None:
    other = WRITER if scope == "read" else READER
    response = send(http, method, path, body, {"Authorization": f"Bearer {other}"})
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "forbidden"
    assert error["required_scope"] == scope
    assert scope in error["message"]


def test_keys_with_the_scope_are_admitted_in_order(http: httpx.Client) -> None:
    for key in (READER, WRITER, ADMIN):
        scopes = {"read"} if key == READER else {"write"} if key == WRITER else {"read", "write"}
        for method, path, body, scope in ROUTES:
            if scope not in scopes:
                continue
            response = send(http, method, path, body, {"Authorization": f"Bearer {key}"})
            assert response.status_code in (200, 204), (method, path, key, response.text)


def test_auth_is_checked_before_the_body(http: httpx.Client) -> None:
    headers = {"Content-Type": "application/json"}
    for method, path in [("POST", "/v1/reach"), ("POST", "/v1/overlap"), ("PUT", "/v1/segments/x")]:
        assert http.request(method, path, content=b"{broken", headers=headers).status_code == 401
        headers_bad_scope = {**headers, "Authorization": f"Bearer {WRITER if method == 'POST' else READER}"}
        assert http.request(method, path, content=b"{broken", headers=headers_bad_scope).status_code == 403


def test_operational_routes_and_the_page_stay_open(http: httpx.Client) -> None:
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/", "/static/app.js", "/docs"]:
        assert http.get(path).status_code == 200, path
    schema = http.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_open_server_needs_no_key(client: httpx.Client) -> None:
    assert client.get("/v1/segments").status_code == 200
    assert client.get("/v1/segments", headers={"Authorization": "Bearer whatever"}).status_code == 200


# -- SEGMENTS_API_KEYS parsing -------------------------------------------------------


def test_parse_api_keys() -> None:
    keys = parse_api_keys(KEYS)
    assert [sorted(k.scopes) for k in keys] == [["read"], ["write"], ["read", "write"]]
    assert find_key(keys, ADMIN) is keys[2]
    assert find_key(keys, READER) is keys[0]
    assert find_key(keys, "") is None
    assert find_key(keys, READER + " ") is None


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("k1", "entry 1 has no ':'"),
        (":read", "entry 1 has an empty key"),
        ("k1:admin", "unknown scope(s) admin"),
        ("k1:read;k2:", "entry 2 has an empty scope"),
        ("k1:read;;k2:write", "entry 2 is empty"),
        ("k1:read;k1:write", "entry 2 repeats a key"),
        ("changethis:read", "placeholder"),
        ("k 1:read", "cannot contain spaces"),
        (";", "entry 1 is empty"),
    ],
)
def test_invalid_api_keys_are_explained(value: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_api_keys(value)
    assert fragment in str(info.value)


def test_a_trailing_semicolon_is_fine() -> None:
    assert [sorted(k.scopes) for k in parse_api_keys("k1:write,read;")] == [["read", "write"]]


def test_serve_refuses_an_invalid_api_keys_value(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")}
    env["SEGMENTS_API_KEYS"] = "s3cret-value:read;other-key:superuser"
    result = subprocess.run(
        [sys.executable, "-m", "segments", "serve", "--store", f"sqlite:///{tmp_path}/x.db", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "SEGMENTS_API_KEYS" in result.stderr
    assert "entry 2 has unknown scope(s) superuser" in result.stderr
    assert "s3cret-value" not in result.stderr + result.stdout
