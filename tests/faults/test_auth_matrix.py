"""Every ``/v1`` operation of the served OpenAPI spec x {missing, wrong, insufficient key}: refused.

The operations are read from the running server's own ``/openapi.json``, so a
route added later is covered without editing this test. Each is sent with a
*valid* request (a real segment, a real user ID, a body that would change data
if it were accepted) and without a key, with wrong keys, and with a key that
lacks the scope the operation needs (``read`` for GETs and the ``queries``
tag, ``write`` for the rest). Expected: 401 + ``WWW-Authenticate: Bearer`` /
401 / 403 + ``required_scope``, the key never echoed, and no stored data
changed. Finally the right key is admitted on every operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

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
PATH_VALUES = {"name": "even", "user_id": "4"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('auth-matrix') / 'segments.db'}"
    seed_store(url)
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
    path = template
    for name, value in PATH_VALUES.items():
        path = path.replace(f"{{{name}}}", value)
    assert "{" not in path, f"no value for a path parameter of {template}"
    body: Any = None
    if "requestBody" in operation:
        if path.endswith("/reach"):
            body = {"expr": "even & triple"}
        elif path.endswith("/overlap"):
            body = {"segments": ["even", "triple"]}
        else:
            body = {"ids": [199_999, 123_457]}  # would change "even" if accepted
    return path, body


def scope_of(method: str, operation: dict[str, Any]) -> str:
    return "read" if method == "GET" or "queries" in operation.get("tags", []) else "write"


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
            scope = scope_of(method, operation)

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
            ops, key=lambda op: (scope_of(op[0], op[2]) == "write", op[0] == "DELETE")
        ):
            path, body = request_for(method, template, operation)
            response = client.request(method, path, json=body, headers=admin)
            assert response.status_code in (200, 204), (
                f"{method} {template}: {response.status_code} {response.text}"
            )
