"""``api.fastpath``: the hot routes answer exactly as their FastAPI routes did, around the edges too.

``GET /v1/users/{user_id}/segments``, ``POST /v1/reach``, the two match routes
and ``GET /healthz`` are served by plain Starlette routes put first; their ``APIRoute`` stays
for the schema. Methods, near-miss paths, errors, auth, the route template
in the metrics and in the access log must not change.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api import fastpath
from api.main import create_app
from api.routes import queries
from api.settings import Settings
from tests.api.conftest import SEED, seed_store
from tests.api.test_errors import error_of
from tests.support.api_server import start_api_server

HOT = [
    ("GET", "/v1/users/{user_id}/segments"),
    ("POST", "/v1/reach"),
    ("POST", "/v1/users/{user_id}/match"),
    ("POST", "/v1/match"),
    ("GET", "/healthz"),
]


def _expected(uid: int) -> list[str]:
    return sorted(name for name, ids in SEED.items() if uid in ids)


def test_hot_routes_come_first_and_stand_for_their_api_routes() -> None:
    app = create_app(Settings(store="memory://fastpath-test"))
    fast = [r for r in app.router.routes if isinstance(r, fastpath.FastRoute)]
    assert app.router.routes[: len(fast)] == fast
    assert sorted((m, r.path) for r in fast for m in (r.methods or ())) == sorted(HOT)
    for route in fast:
        assert route.methods == route.api_route.methods  # no implicit HEAD
        assert route.path == route.api_route.path


def test_install_names_an_endpoint_without_a_route() -> None:
    async def nowhere(request: object) -> None:
        raise AssertionError("never called")

    with pytest.raises(RuntimeError, match="nowhere"):
        fastpath.install(FastAPI(), queries.router.routes, {nowhere: queries.reach})


def test_lookup_answers_and_errors(client: httpx.Client) -> None:
    for uid in (0, 7, 65_536, 150_001, 199_999, 200_000, 4_294_967_295):
        response = client.get(f"/v1/users/{uid}/segments")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"user_id": uid, "segments": _expected(uid)}
    for bad in ("x1", "-1", "4294967296", "1.5", "%201"):
        error_of(client.get(f"/v1/users/{bad}/segments"), 400, "invalid_user_id")
    error_of(client.get("/v1/users/1/segments/"), 404, "not_found")
    error_of(client.get("/v1/users//segments"), 404, "not_found")
    error_of(client.get("/v1/users/1/2/segments"), 404, "not_found")


def test_other_methods_on_hot_paths_get_405_as_before(client: httpx.Client) -> None:
    for method, path in [("POST", "/v1/users/1/segments"), ("GET", "/v1/reach"), ("POST", "/healthz")]:
        response = client.request(method, path)
        error_of(response, 405, "method_not_allowed")
        wanted = {m for m, p in HOT if re.fullmatch(p.replace("{user_id}", "[^/]+"), path)}
        wanted |= {"HEAD"} if "GET" in wanted else set()
        assert set(response.headers["allow"].replace(" ", "").split(",")) == wanted
    for path in ("/v1/users/7/segments", "/healthz"):  # HEAD is a GET without the body (api.protocol)
        head = client.head(path)
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-length"] == client.get(path).headers["content-length"]


def test_reach_over_the_fast_route(client: httpx.Client) -> None:
    body = client.post("/v1/reach", json={"expr": "even & triple"}).json()
    assert body["reach"] == len(SEED["even"] & SEED["triple"])
    assert set(body["segments"]) == {"even", "triple"}
    error_of(client.post("/v1/reach", json={"expr": "even &"}), 400, "invalid_expression")
    error_of(client.post("/v1/reach", json={"expr": "nope"}), 404, "segment_not_found")
    error_of(
        client.post("/v1/reach", content=b"{", headers={"Content-Type": "application/json"}),
        400,
        "invalid_json",
    )


def test_schema_still_documents_the_hot_routes(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    lookup = paths["/v1/users/{user_id}/segments"]["get"]
    assert [p["name"] for p in lookup["parameters"]] == ["user_id", "audiences"]
    assert "200" in lookup["responses"] and "400" in lookup["responses"]
    assert "post" in paths["/v1/reach"] and "get" in paths["/healthz"]


def test_auth_applies_to_the_fast_routes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'auth.db'}"
    seed_store(url, {"vip": SEED["vip"]})
    with start_api_server(url, env={"SEGMENTS_API_KEYS": "reader1:read;writer1:write"}) as api:
        with httpx.Client(base_url=api.base_url, timeout=30) as c:
            error_of(c.get("/v1/users/7/segments"), 401, "unauthorized")
            error_of(c.post("/v1/reach", json={"expr": "vip"}), 401, "unauthorized")
            writer = {"Authorization": "Bearer writer1"}
            error_of(c.get("/v1/users/7/segments", headers=writer), 403, "forbidden")
            reader = {"Authorization": "Bearer reader1"}
            assert c.get("/v1/users/7/segments", headers=reader).json()["segments"] == ["vip"]
            assert c.post("/v1/reach", json={"expr": "vip"}, headers=reader).json()["reach"] == 4
            assert c.get("/healthz").status_code == 200  # open, as before


def test_metrics_and_access_log_name_the_route_template(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    seed_store(url, {"vip": SEED["vip"]})
    with start_api_server(url, args=["--log-level", "info"]) as api:
        with httpx.Client(base_url=api.base_url, timeout=30) as c:
            for uid in (7, 8):
                assert c.get(f"/v1/users/{uid}/segments", headers={"X-Request-ID": f"probe-{uid}"}).is_success
            assert c.get("/v1/users/x/segments", headers={"X-Request-ID": "probe-bad"}).status_code == 400
            metrics = c.get("/metrics").text
        api.stop()
        lines = [json.loads(line) for line in api.output().splitlines() if line.startswith("{")]
    route = "/v1/users/{user_id}/segments"
    assert f'segments_http_requests_total{{method="GET",route="{route}",status="200"}} 2.0' in metrics
    assert f'segments_http_requests_total{{method="GET",route="{route}",status="400"}} 1.0' in metrics
    access = {e["request_id"]: e for e in lines if e.get("logger") == "api.access"}
    for request_id, path, status in [
        ("probe-7", "/v1/users/7/segments", 200),
        ("probe-8", "/v1/users/8/segments", 200),
        ("probe-bad", "/v1/users/x/segments", 400),
    ]:
        entry = access[request_id]
        assert (entry["route"], entry["path"], entry["status"], entry["method"]) == (
            route,
            path,
            status,
            "GET",
        )
        assert entry["msg"] == f"GET {route} {status}"
