"""Every ``/v1`` operation of the served OpenAPI spec x {missing, wrong, insufficient key}: refused.

The operations are read from the running server's own ``/openapi.json``, so a
route added later is covered without editing this test. Each is sent with a
*valid* request (a real segment, a real user ID, a body that would change data
if it were accepted; one table below, which must name every operation of the
spec) and without a key, with wrong keys, and with a key that lacks the scope
the operation needs (the table says which: ``read`` for every GET and for the
POSTs that only ask questions, ``write`` for the rest). Expected: 401 + ``WWW-Authenticate: Bearer`` /
401 / 403 + ``required_scope``, the key never echoed, and no stored data
changed. Finally the right key is admitted on every operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import segments
from tests.api.conftest import seed_store
from tests.faults.conftest import api_snapshot, assert_same_snapshot
from tests.support.api_server import ApiServer, start_api_server

READER = "matrix-reader-5d1e"
WRITER = "matrix-writer-a9c3"
ADMIN = "matrix-admin-0f72"
KEYS = f"{READER}:read;{WRITER}:write;{ADMIN}:read,write"
WRONG = [
    "Bearer not-a-key",
    f"Bearer {READER}0",
    f"Bearer {READER[:-1]}",
    f"Basic {READER}",
    READER,
    "Bearer",
]
PATH_VALUES = {"name": "even", "user_id": "4", "key": "cust_1"}
#: operations on an audience address this one (created first, deleted last)
AUDIENCE = "matrix_audience"
#: (method, path template) -> (scope, body); every operation of the spec must have a row
REQUESTS: dict[tuple[str, str], tuple[str, Any]] = {
    ("PUT", "/v1/segments/{name}"): ("write", {"ids": [199_999, 123_457]}),
    ("GET", "/v1/segments/{name}"): ("read", None),
    ("DELETE", "/v1/segments/{name}"): ("write", None),
    ("POST", "/v1/segments/{name}/add"): ("write", {"ids": [199_999, 123_457]}),
    ("POST", "/v1/segments/{name}/remove"): ("write", {"ids": [199_999, 123_457]}),
    ("GET", "/v1/segments"): ("read", None),
    ("GET", "/v1/segments/{name}/members/{user_id}"): ("read", None),
    ("GET", "/v1/segments/{name}/export"): ("read", None),
    ("PUT", "/v1/segments/{name}/window"): ("write", {"granularity": "day", "retention": 30}),
    ("GET", "/v1/segments/{name}/history"): ("read", None),
    ("POST", "/v1/reach/history"): ("read", {"expr": "even & triple", "from": "2026-11-01", "to": "2026-11-03"}),
    ("POST", "/v1/reach"): ("read", {"expr": "even & triple"}),
    ("POST", "/v1/overlap"): ("read", {"segments": ["even", "triple"]}),
    ("GET", "/v1/users/{user_id}/segments"): ("read", None),
    ("PUT", "/v1/audiences/{name}"): ("write", {"expr": "even - triple", "description": "matrix"}),
    ("GET", "/v1/audiences/{name}"): ("read", None),
    ("DELETE", "/v1/audiences/{name}"): ("write", None),
    ("GET", "/v1/audiences"): ("read", None),
    ("GET", "/v1/audiences/{name}/history"): ("read", None),
    ("POST", "/v1/users/{user_id}/match"): ("read", {"expr": "even & triple"}),
    ("POST", "/v1/match"): ("read", {"users": [1, 2, 6], "expr": "even & triple"}),
    ("POST", "/v1/insights"): ("read", {"expr": "even", "segments": ["triple"]}),
    ("GET", "/v1/users/by-key/{key}/segments"): ("read", None),
    ("GET", "/v1/segments/{name}/members/by-key/{key}"): ("read", None),
    ("POST", "/v1/users/by-key/{key}/match"): ("read", {"expr": "even & triple"}),
    ("POST", "/v1/keys/translate"): ("write", {"keys": ["cust_1"], "create": True}),
    ("POST", "/v1/keys/reverse"): ("read", {"ids": [1, 2]}),
}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('auth-matrix') / 'segments.db'}"
    seed_store(url)
    with segments.connect(url) as segs:
        segs.define_audience(AUDIENCE, "even - triple", "the audience the matrix reads")
    with start_api_server(url, {"SEGMENTS_API_KEYS": KEYS}) as server:
        yield server


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for path, item in spec["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method, operation in item.items():
            if method in {"get", "put", "post", "delete", "patch"}:
                out.append((method.upper(), path, operation))
    return out


def request_for(method: str, template: str, operation: dict[str, Any]) -> tuple[str, Any]:
    values = dict(PATH_VALUES, name=AUDIENCE) if template.startswith("/v1/audiences/") else PATH_VALUES
    path = template
    for name, value in values.items():
        path = path.replace(f"{{{name}}}", value)
    assert "{" not in path, f"no value for a path parameter of {template}"
    if template.endswith("/window"):
        path = path.replace("/segments/even/", "/segments/matrix_window/")  # a new windowed segment
    return path, REQUESTS[(method, template)][1]


def scope_of(method: str, template: str) -> str:
    return REQUESTS[(method, template)][0]


def test_the_table_names_every_operation_of_the_spec(secured: ApiServer) -> None:
    with httpx.Client(base_url=secured.base_url, timeout=30) as client:
        served = {(m, p) for m, p, _ in operations(client.get("/openapi.json").json())}
    assert served == set(REQUESTS), f"missing rows: {sorted(served - set(REQUESTS))}; stale: {sorted(set(REQUESTS) - served)}"


def test_every_v1_operation_refuses_missing_wrong_and_insufficient_keys(secured: ApiServer) -> None:
    with httpx.Client(base_url=secured.base_url, timeout=30) as client:
        spec = client.get("/openapi.json").json()
        ops = operations(spec)
        assert len(ops) >= 11
        admin = {"Authorization": f"Bearer {ADMIN}"}
        before = api_snapshot(client, admin)
        failures: list[str] = []
        for method, template, operation in ops:
            where = f"{method} {template}"
            if operation.get("security") != [{"HTTPBearer": []}]:
                failures.append(f"{where}: the spec does not list the bearer requirement")
            path, body = request_for(method, template, operation)
            scope = scope_of(method, template)

            def send(
                headers: dict[str, str], path: str = path, body: Any = body, method: str = method
            ) -> httpx.Response:
                return client.request(method, path, json=body, headers=headers)

            response = send({})
            if response.status_code != 401 or response.headers.get("www-authenticate") != "Bearer":
                failures.append(f"{where} without a key: {response.status_code}")
            for header in WRONG:
                response = send({"Authorization": header})
                if response.status_code != 401 or response.json()["error"]["code"] != "unauthorized":
                    failures.append(f"{where} with {header!r}: {response.status_code}")
                if READER in response.text:
                    failures.append(f"{where}: the key was echoed")
            other = WRITER if scope == "read" else READER
            response = send({"Authorization": f"Bearer {other}"})
            if response.status_code != 403 or response.json()["error"].get("required_scope") != scope:
                failures.append(
                    f"{where} with a key lacking {scope!r}: {response.status_code} {response.text[:100]}"
                )
        assert failures == [], "\n".join(failures)
        assert_same_snapshot(before, api_snapshot(client, admin))

        # and the right key is admitted everywhere (writes last as they change data, the delete at the very end)
        for method, template, operation in sorted(
            ops, key=lambda op: (scope_of(op[0], op[1]) == "write", op[0] == "DELETE",
                                 op[1].startswith("/v1/segments/{name}") and op[0] == "DELETE")
        ):
            path, body = request_for(method, template, operation)
            response = client.request(method, path, json=body, headers=admin)
            assert 200 <= response.status_code < 300, (
                f"{method} {template}: {response.status_code} {response.text}"
            )
