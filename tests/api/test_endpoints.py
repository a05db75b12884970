"""Every endpoint of the HTTP API, over a real uvicorn process, with precise expectations."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import httpx
import pytest
from pyroaring import BitMap

from tests.api.conftest import SEED, UNIVERSE

E, T, R, V = SEED["even"], SEED["triple"], SEED["recent"], SEED["vip"]


def info(client: httpx.Client, name: str) -> dict[str, object]:
    response = client.get(f"/v1/segments/{name}")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


# -- writes ---------------------------------------------------------------------


def test_put_ids_creates_then_replaces(client: httpx.Client, fresh_name: str) -> None:
    first = client.put(f"/v1/segments/{fresh_name}", json={"ids": [5, 1, 3, 3]})
    assert first.status_code == 200
    body = first.json()
    assert body["name"] == fresh_name
    assert body["cardinality"] == 3
    assert set(body) == {"name", "cardinality", "version", "updated_at"}
    datetime.fromisoformat(body["updated_at"])
    second = client.put(f"/v1/segments/{fresh_name}", json={"ids": [70_000, 4_000_000_000]})
    assert second.status_code == 200
    assert second.json()["cardinality"] == 2
    assert second.json()["version"] > body["version"]
    assert client.get(f"/v1/segments/{fresh_name}/members/1").json() == {"member": False}
    assert client.get(f"/v1/segments/{fresh_name}/members/4000000000").json() == {"member": True}


def test_put_empty_list_makes_an_empty_segment(client: httpx.Client, fresh_name: str) -> None:
    response = client.put(f"/v1/segments/{fresh_name}", json={"ids": []})
    assert response.status_code == 200
    assert response.json()["cardinality"] == 0
    assert info(client, fresh_name)["cardinality"] == 0


def test_put_expression_saves_its_result(client: httpx.Client, fresh_name: str) -> None:
    response = client.put(f"/v1/segments/{fresh_name}", json={"expr": "(even & triple) | vip"})
    assert response.status_code == 200
    assert response.json()["cardinality"] == len((E & T) | V)
    reach = client.post("/v1/reach", json={"expr": f"{fresh_name} ^ ((even & triple) | vip)"})
    assert reach.json()["reach"] == 0


def test_put_expression_as_json_tree(client: httpx.Client, fresh_name: str) -> None:
    tree = {"diff": [{"segment": "recent"}, {"segment": "even"}]}
    response = client.put(f"/v1/segments/{fresh_name}", json={"expr": tree})
    assert response.status_code == 200
    assert response.json()["cardinality"] == len(R - E)


def test_put_portable_roaring_bitmap(client: httpx.Client, fresh_name: str) -> None:
    members = BitMap([1, 2, 3, 100_000, 3_000_000_000])
    response = client.put(
        f"/v1/segments/{fresh_name}",
        content=members.serialize(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200
    assert response.json()["cardinality"] == 5
    exported = client.get(f"/v1/segments/{fresh_name}/export", params={"format": "roaring"})
    assert BitMap.deserialize(exported.content) == members


def test_add_creates_a_missing_segment_and_adds(client: httpx.Client, fresh_name: str) -> None:
    created = client.post(f"/v1/segments/{fresh_name}/add", json={"ids": [10, 20]})
    assert created.status_code == 200
    assert created.json()["cardinality"] == 2
    added = client.post(
        f"/v1/segments/{fresh_name}/add",
        content=BitMap([20, 30, 70_000]).serialize(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert added.status_code == 200
    assert added.json()["cardinality"] == 4
    assert added.json()["version"] > created.json()["version"]


def test_remove_members(client: httpx.Client, fresh_name: str) -> None:
    client.put(f"/v1/segments/{fresh_name}", json={"ids": [1, 2, 3, 4]})
    removed = client.post(f"/v1/segments/{fresh_name}/remove", json={"ids": [2, 4, 99]})
    assert removed.status_code == 200
    assert removed.json()["cardinality"] == 2
    by_bitmap = client.post(
        f"/v1/segments/{fresh_name}/remove",
        content=BitMap([1]).serialize(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert by_bitmap.json()["cardinality"] == 1
    assert client.get(f"/v1/segments/{fresh_name}/members/3").json() == {"member": True}


def test_remove_on_a_missing_segment_is_404(client: httpx.Client, fresh_name: str) -> None:
    response = client.post(f"/v1/segments/{fresh_name}/remove", json={"ids": [1]})
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "segment_not_found",
            "message": f"unknown segment: {fresh_name!r}",
            "segments": [fresh_name],
        }
    }


def test_delete(client: httpx.Client, fresh_name: str) -> None:
    client.put(f"/v1/segments/{fresh_name}", json={"ids": [1]})
    response = client.delete(f"/v1/segments/{fresh_name}")
    assert response.status_code == 204
    assert response.content == b""
    assert client.get(f"/v1/segments/{fresh_name}").status_code == 404
    again = client.delete(f"/v1/segments/{fresh_name}")
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "segment_not_found"


# -- reads ----------------------------------------------------------------------


def test_get_segment_info(client: httpx.Client) -> None:
    body = info(client, "even")
    assert body["name"] == "even"
    assert body["cardinality"] == len(E)
    assert isinstance(body["version"], int) and body["version"] >= 1


def test_list_segments_holds_every_seeded_segment(client: httpx.Client) -> None:
    response = client.get("/v1/segments")
    assert response.status_code == 200
    listed = {s["name"]: s for s in response.json()["segments"]}
    for name, ids in SEED.items():
        assert listed[name]["cardinality"] == len(ids)
    names = [s["name"] for s in response.json()["segments"]]
    assert names == sorted(names)


@pytest.mark.parametrize("uid", [0, 7, 8, 65_536, 150_000, 199_999, 200_000, 4_294_967_295])
def test_membership(client: httpx.Client, uid: int) -> None:
    for name in ("even", "vip", "recent"):
        response = client.get(f"/v1/segments/{name}/members/{uid}")
        assert response.status_code == 200
        assert response.json() == {"member": uid in SEED[name]}


@pytest.mark.parametrize("uid", [0, 3, 7, 131_072, 150_001, 4_294_967_295])
def test_segments_of_a_user(client: httpx.Client, uid: int) -> None:
    response = client.get(f"/v1/users/{uid}/segments")
    assert response.status_code == 200
    body = response.json()
    expected = sorted(name for name, ids in SEED.items() if uid in ids)
    assert body["user_id"] == uid
    # Other tests add their own t_* segments to this server; the seeded ones must match exactly.
    assert [n for n in body["segments"] if not n.startswith("t_")] == expected


# -- queries --------------------------------------------------------------------

REACH_CASES = [
    ("even", len(E)),
    ("even & triple", len(E & T)),
    ("even | triple", len(E | T)),
    ("even - triple", len(E - T)),
    ("even ^ triple", len(E ^ T)),
    ("~even", len(UNIVERSE - E)),
    ("even & triple - recent | vip", len(((E & T) - R) | V)),
    ("even | triple & recent", len(E | (T & R))),
    ("even ^ triple | vip", len((E ^ T) | V)),
    ("(even | triple) & ~recent", len((E | T) & (UNIVERSE - R))),
    ("even AND NOT triple", len(E - T)),
    ("even EXCEPT recent OR vip", len((E - R) | V)),
    ("empty_one | vip", len(V)),
    ("edge.case:name & even", len(SEED["edge.case:name"] & E)),
]


@pytest.mark.parametrize(("expr", "expected"), REACH_CASES)
def test_reach(client: httpx.Client, expr: str, expected: int) -> None:
    response = client.post("/v1/reach", json={"expr": expr})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reach"] == expected
    assert isinstance(body["took_ms"], float) and body["took_ms"] >= 0
    assert set(body["segments"]) <= set(SEED) and body["segments"]
    assert all(isinstance(v, int) and v >= 1 for v in body["segments"].values())


def test_reach_json_tree(client: httpx.Client) -> None:
    tree = {"and": [{"segment": "even"}, {"not": {"segment": "triple"}}]}
    response = client.post("/v1/reach", json={"expr": tree})
    assert response.status_code == 200
    assert response.json()["reach"] == len(E - T)
    assert set(response.json()["segments"]) == {"even", "triple", "all"}


def test_reach_reports_the_versions_it_read(client: httpx.Client, fresh_name: str) -> None:
    v1 = client.put(f"/v1/segments/{fresh_name}", json={"ids": [1, 2]}).json()["version"]
    first = client.post("/v1/reach", json={"expr": f"{fresh_name} | vip"}).json()
    assert first["segments"][fresh_name] == v1
    v2 = client.post(f"/v1/segments/{fresh_name}/add", json={"ids": [3]}).json()["version"]
    second = client.post("/v1/reach", json={"expr": f"{fresh_name} | vip"}).json()
    assert second["segments"][fresh_name] == v2
    assert second["reach"] == first["reach"] + 1


def test_overlap(client: httpx.Client) -> None:
    names = ["even", "triple", "recent", "vip"]
    response = client.post("/v1/overlap", json={"segments": names})
    assert response.status_code == 200
    body = response.json()
    assert body["segments"] == names
    assert body["sizes"] == [len(SEED[n]) for n in names]
    assert body["matrix"] == [[len(SEED[a] & SEED[b]) for b in names] for a in names]
    assert set(body["versions"]) == set(names)
    assert body["took_ms"] >= 0


def test_overlap_drops_duplicates_and_accepts_32(client: httpx.Client) -> None:
    response = client.post("/v1/overlap", json={"segments": ["even", "even", "vip"]})
    assert response.json()["segments"] == ["even", "vip"]
    many = client.post("/v1/overlap", json={"segments": ["even"] * 32})
    assert many.status_code == 200


# -- export ---------------------------------------------------------------------


def test_export_ndjson_streams_every_member_in_order(client: httpx.Client) -> None:
    with client.stream("GET", "/v1/segments/triple/export") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        assert "triple.ndjson" in response.headers["content-disposition"]
        values = [json.loads(line) for line in response.iter_lines() if line]
    assert values == sorted(T)


def test_export_csv(client: httpx.Client) -> None:
    response = client.get("/v1/segments/vip/export", params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["user_id"]
    assert [int(r[0]) for r in rows[1:]] == sorted(V)


def test_export_roaring_is_one_portable_bitmap(client: httpx.Client) -> None:
    response = client.get("/v1/segments/even/export", params={"format": "roaring"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert BitMap.deserialize(response.content) == BitMap(E)


def test_export_of_an_empty_segment(client: httpx.Client) -> None:
    assert client.get("/v1/segments/empty_one/export").content == b""
    assert client.get("/v1/segments/empty_one/export", params={"format": "csv"}).text == "user_id\n"
    roaring = client.get("/v1/segments/empty_one/export", params={"format": "roaring"})
    assert len(BitMap.deserialize(roaring.content)) == 0


def test_export_of_a_missing_segment_is_404_not_a_cut_stream(client: httpx.Client) -> None:
    for fmt in ("ndjson", "csv", "roaring"):
        response = client.get("/v1/segments/no_such_segment/export", params={"format": fmt})
        assert response.status_code == 404
        assert response.json()["error"]["segments"] == ["no_such_segment"]


# -- operations -----------------------------------------------------------------


def test_healthz_and_readyz(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_metrics_in_prometheus_format(client: httpx.Client) -> None:
    client.post("/v1/reach", json={"expr": "even & triple"})
    client.post("/v1/reach", json={"expr": "even &"})
    client.get("/v1/segments/even")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    assert samples['segments_http_requests_total{method="POST",route="/v1/reach",status="200"}'] >= 1
    assert samples['segments_http_requests_total{method="POST",route="/v1/reach",status="400"}'] >= 1
    assert samples['segments_http_requests_total{method="GET",route="/v1/segments/{name}",status="200"}'] >= 1
    assert samples['segments_http_request_duration_seconds_count{method="POST",route="/v1/reach"}'] >= 2
    assert samples["segments_reach_seconds_count"] >= 1
    assert samples['segments_reach_total{outcome="ok"}'] >= 1
    assert samples['segments_reach_total{outcome="error"}'] >= 1
    assert samples["segments_cache_hits_total"] + samples["segments_cache_misses_total"] >= 1
    assert samples["segments_segments"] >= len(SEED)
    assert "segments_cache_bytes" in samples


def test_openapi_and_docs(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) >= {
        "/v1/segments",
        "/v1/segments/{name}",
        "/v1/segments/{name}/add",
        "/v1/segments/{name}/remove",
        "/v1/segments/{name}/members/{user_id}",
        "/v1/segments/{name}/export",
        "/v1/users/{user_id}/segments",
        "/v1/reach",
        "/v1/overlap",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    assert set(paths["/v1/segments/{name}"]) == {"get", "put", "delete"}
    assert "422" not in json.dumps(paths)  # validation errors answer 400
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_page_and_its_assets_are_served_by_the_app(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'src="/static/app.js"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    for asset, kind in [("/static/app.js", "javascript"), ("/static/app.css", "text/css")]:
        response = client.get(asset)
        assert response.status_code == 200
        assert kind in response.headers["content-type"]
        assert "https://" not in response.text
