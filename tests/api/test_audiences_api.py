"""Audiences, per-user match and insights over a real uvicorn process (SQLite; the Aerospike test server
at the end, or a real Aerospike with ``SEGMENTS_TEST_AEROSPIKE``).

Expected reaches come from the ``SEED`` sets with Python set operations; match and insights answers
are also checked against the library (``segments.connect`` on the same store, in this process), and
the insight numbers are computed here from the library's bitmaps.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pyroaring import BitMap

import segments
from tests.api.conftest import SEED, UNIVERSE, seed_store
from tests.api.test_errors import error_of
from tests.support.aerospike_fixture import AerospikeTarget, aerospike_url
from tests.support.api_server import ApiServer, start_api_server

E, T, R, V = SEED["even"], SEED["triple"], SEED["recent"], SEED["vip"]

AUDIENCE_KEYS = {
    "name", "expr", "description", "version", "created_at", "updated_at", "reach", "segments", "audiences",
}  # fmt: skip
SUMMARY_KEYS = {"name", "expr", "description", "version", "updated_at"}


def unique(tag: str = "a") -> str:
    return f"{tag}_{uuid.uuid4().hex[:10]}"


def ok(response: httpx.Response, status: int = 200) -> dict[str, object]:
    assert response.status_code == status, response.text
    body: dict[str, object] = response.json()
    return body


def define(client: httpx.Client, name: str, expr: object, description: str = "") -> dict[str, object]:
    return ok(client.put(f"/v1/audiences/{name}", json={"expr": expr, "description": description}))


def versions(client: httpx.Client, *names: str) -> dict[str, int]:
    return {n: int(ok(client.get(f"/v1/segments/{n}"))["version"]) for n in names}


@pytest.fixture(scope="module")
def lib(api: ApiServer, store_path: Path) -> Iterator[segments.Segments]:
    """The library on the server's store, for the answers the API must agree with."""
    with segments.connect(f"sqlite:///{store_path}") as segs:
        yield segs


# -- define, read, list, history --------------------------------------------------------------


def test_define_answers_the_definition_its_reach_and_what_it_read(client: httpx.Client) -> None:
    name = unique()
    body = define(client, name, "even & triple", "divisible by six")
    assert set(body) == AUDIENCE_KEYS
    assert body["name"] == name and body["expr"] == "even & triple"
    assert body["description"] == "divisible by six" and body["version"] == 1
    assert body["reach"] == len(E & T)
    assert body["segments"] == versions(client, "even", "triple")
    assert body["audiences"] == {}
    assert body["created_at"] == body["updated_at"]
    datetime.fromisoformat(str(body["created_at"]))
    assert ok(client.get(f"/v1/audiences/{name}")) == body  # nothing changed: the same answer


def test_a_json_tree_is_stored_as_canonical_text(client: httpx.Client) -> None:
    name = unique()
    tree = {"diff": [{"or": [{"segment": "recent"}, {"segment": "vip"}]}, {"segment": "even"}]}
    body = define(client, name, tree)
    assert body["expr"] == "(recent | vip) - even"
    assert body["reach"] == len((R | V) - E)


def test_redefining_makes_a_new_version_and_history_lists_every_definition(client: httpx.Client) -> None:
    name = unique()
    first = define(client, name, "even", "v1")
    second = define(client, name, "triple - vip", "v2")
    assert second["version"] == 2 and second["reach"] == len(T - V)
    assert second["created_at"] == first["created_at"]
    assert str(second["updated_at"]) >= str(first["updated_at"])
    history = ok(client.get(f"/v1/audiences/{name}/history"))
    assert [(d["version"], d["expr"], d["description"]) for d in history["definitions"]] == [
        (1, "even", "v1"),
        (2, "triple - vip", "v2"),
    ]
    assert history["definitions"][1]["at"] == second["updated_at"]


def test_the_list_is_cheap_summaries_of_every_audience(client: httpx.Client) -> None:
    names = sorted(unique("l") for _ in range(3))
    for i, name in enumerate(names):
        define(client, name, "vip" if i else "recent", f"number {i}")
    listed = ok(client.get("/v1/audiences"))["audiences"]
    assert isinstance(listed, list)
    assert [a["name"] for a in listed] == sorted(a["name"] for a in listed)
    mine = {a["name"]: a for a in listed if a["name"] in names}
    assert set(mine) == set(names)
    for i, name in enumerate(names):
        assert set(mine[name]) == SUMMARY_KEYS
        assert (mine[name]["expr"], mine[name]["description"], mine[name]["version"]) == (
            "vip" if i else "recent", f"number {i}", 1,
        )  # fmt: skip


# -- audiences of audiences; segments changing underneath ------------------------------------


def test_audiences_of_audiences_expand_everywhere(client: httpx.Client) -> None:
    inner, outer = unique("inner"), unique("outer")
    define(client, inner, "even & triple")
    body = define(client, outer, f"{inner} | vip")
    assert body["reach"] == len((E & T) | V)
    assert body["audiences"] == {inner: 1}
    assert body["segments"] == versions(client, "even", "triple", "vip")
    reach = ok(client.post("/v1/reach", json={"expr": f"{outer} - recent"}))
    assert reach["reach"] == len(((E & T) | V) - R)
    assert reach["audiences"] == {outer: 1, inner: 1}
    assert ok(client.post("/v1/reach", json={"expr": {"not": {"segment": outer}}}))["reach"] == len(
        UNIVERSE - ((E & T) | V)
    )


def test_an_audience_follows_its_segments_while_a_frozen_snapshot_does_not(
    client: httpx.Client, fresh_name: str
) -> None:
    live, frozen = unique("live"), unique("frozen")
    ok(client.put(f"/v1/segments/{fresh_name}", json={"ids": [1, 2, 3]}))
    first = define(client, live, f"{fresh_name} | vip")
    ok(client.put(f"/v1/segments/{frozen}", json={"expr": f"{fresh_name} | vip"}))
    assert first["reach"] == len({1, 2, 3} | V)
    added = ok(client.post(f"/v1/segments/{fresh_name}/add", json={"ids": [10, 11, 70_000]}))
    now = ok(client.get(f"/v1/audiences/{live}"))
    assert now["reach"] == len({1, 2, 3, 10, 11, 70_000} | V)
    assert now["segments"][fresh_name] == added["version"] > first["segments"][fresh_name]
    assert now["version"] == 1  # the definition did not change, only what it reads
    assert ok(client.get(f"/v1/segments/{frozen}"))["cardinality"] == len({1, 2, 3} | V)
    assert ok(client.post("/v1/reach", json={"expr": f"{live} - {frozen}"}))["reach"] == 3


# -- refusals: cycles, names, unknown inputs ----------------------------------------------------


def test_a_cycle_is_refused_naming_it(client: httpx.Client) -> None:
    a, b, c = unique("ca"), unique("cb"), unique("cc")
    define(client, a, "even")
    define(client, b, f"{a} & triple")
    define(client, c, f"{b} | vip")
    error = error_of(client.put(f"/v1/audiences/{a}", json={"expr": f"recent | {c}"}), 400, "audience_cycle")
    assert error["cycle"] == [a, c, b, a]
    assert " -> ".join([a, c, b, a]) in str(error["message"])
    assert ok(client.get(f"/v1/audiences/{a}"))["expr"] == "even"  # nothing was stored
    selfish = unique("self")
    error = error_of(
        client.put(f"/v1/audiences/{selfish}", json={"expr": f"{selfish} | even"}), 400, "audience_cycle"
    )
    assert error["cycle"] == [selfish, selfish]
    error_of(client.get(f"/v1/audiences/{selfish}"), 404, "segment_not_found")


def test_one_namespace_with_segments(client: httpx.Client, fresh_name: str) -> None:
    error_of(client.put("/v1/audiences/even", json={"expr": "triple"}), 409, "name_taken")
    error_of(client.put("/v1/audiences/all", json={"expr": "triple"}), 409, "name_taken")
    define(client, fresh_name, "even")
    error_of(client.put(f"/v1/segments/{fresh_name}", json={"ids": [1]}), 409, "name_taken")
    error_of(client.post(f"/v1/segments/{fresh_name}/add", json={"ids": [1]}), 409, "name_taken")
    error_of(client.put(f"/v1/segments/{fresh_name}/window", json={}), 409, "name_taken")
    error_of(client.get(f"/v1/segments/{fresh_name}"), 404, "segment_not_found")


def test_bad_definitions_are_refused_precisely(client: httpx.Client) -> None:
    name = unique()
    missing = unique("missing")
    error = error_of(
        client.put(f"/v1/audiences/{name}", json={"expr": f"even | {missing}"}), 404, "segment_not_found"
    )
    assert error["segments"] == [missing]
    error = error_of(client.put(f"/v1/audiences/{name}", json={"expr": "even &"}), 400, "invalid_expression")
    assert error["position"] == 6
    error_of(client.put("/v1/audiences/bad-name", json={"expr": "even"}), 400, "invalid_segment_name")
    error_of(
        client.put(f"/v1/audiences/{name}", json={"expr": "even", "description": "x" * 1001}),
        400,
        "invalid_request",
    )
    error_of(
        client.put(f"/v1/audiences/{name}", json={"expr": "even", "owner": "me"}), 400, "invalid_request"
    )
    error_of(client.put(f"/v1/audiences/{name}", json={"description": "no expr"}), 400, "invalid_request")
    error_of(
        client.put(f"/v1/audiences/{name}", content=b"{", headers={"Content-Type": "application/json"}),
        400,
        "invalid_json",
    )
    error_of(
        client.put(f"/v1/audiences/{name}", content=b"even", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    error_of(client.get(f"/v1/audiences/{name}"), 404, "segment_not_found")  # none of them stored anything
    error_of(client.get(f"/v1/audiences/{name}/history"), 404, "segment_not_found")
    error_of(client.delete(f"/v1/audiences/{name}"), 404, "segment_not_found")


# -- deleting what audiences use ----------------------------------------------------------------


def test_deleting_a_segment_in_use_is_409_listing_every_dependent(
    client: httpx.Client, fresh_name: str
) -> None:
    ok(client.put(f"/v1/segments/{fresh_name}", json={"ids": [5, 6]}))
    direct, indirect, other = unique("d"), unique("i"), unique("o")
    define(client, direct, f"{fresh_name} | vip")
    define(client, indirect, f"{direct} - even")
    define(client, other, "vip")
    for params in ({}, {"cascade": "false"}):
        error = error_of(client.delete(f"/v1/segments/{fresh_name}", params=params), 409, "in_use")
        assert error["dependents"] == sorted([direct, indirect])
    ok(client.get(f"/v1/segments/{fresh_name}"))  # still there
    deleted = ok(client.delete(f"/v1/segments/{fresh_name}", params={"cascade": "true"}))
    assert deleted == {"deleted": [fresh_name, *sorted([direct, indirect])]}
    for name in (direct, indirect):
        error_of(client.get(f"/v1/audiences/{name}"), 404, "segment_not_found")
    error_of(client.get(f"/v1/segments/{fresh_name}"), 404, "segment_not_found")
    assert ok(client.get(f"/v1/audiences/{other}"))["reach"] == len(V)


def test_deleting_an_audience_in_use_and_cascading(client: httpx.Client) -> None:
    base, user, leaf = unique("b"), unique("u"), unique("leaf")
    define(client, base, "recent")
    define(client, user, f"{base} & even")
    define(client, leaf, "vip")
    error = error_of(client.delete(f"/v1/audiences/{base}"), 409, "in_use")
    assert error["dependents"] == [user]
    assert ok(client.delete(f"/v1/audiences/{leaf}")) == {"deleted": [leaf]}
    assert ok(client.delete(f"/v1/audiences/{base}", params={"cascade": "true"})) == {"deleted": [base, user]}
    error_of(client.get(f"/v1/audiences/{user}"), 404, "segment_not_found")


def test_a_plain_delete_still_answers_204(client: httpx.Client, fresh_name: str) -> None:
    ok(client.put(f"/v1/segments/{fresh_name}", json={"ids": [1]}))
    response = client.delete(f"/v1/segments/{fresh_name}")
    assert response.status_code == 204 and response.content == b""


# -- an audience wherever a segment is --------------------------------------------------------


def test_overlap_export_and_membership_take_audiences(client: httpx.Client) -> None:
    name = unique()
    define(client, name, "triple & recent | vip")
    members = (T & R) | V
    overlap = ok(client.post("/v1/overlap", json={"segments": [name, "even"]}))
    assert overlap["sizes"] == [len(members), len(E)]
    assert overlap["matrix"] == [[len(members), len(members & E)], [len(members & E), len(E)]]
    assert overlap["versions"][name] == 1
    lines = client.get(f"/v1/segments/{name}/export", params={"format": "ndjson"}).text.split()
    assert [int(x) for x in lines] == sorted(members)
    csv_lines = client.get(f"/v1/segments/{name}/export", params={"format": "csv"}).text.split()
    assert csv_lines[0] == "user_id" and [int(x) for x in csv_lines[1:]] == sorted(members)
    roaring = client.get(f"/v1/segments/{name}/export", params={"format": "roaring"})
    assert roaring.status_code == 200 and BitMap.deserialize(roaring.content) == BitMap(members)
    for uid in (7, 150_000, 150_001, 3, 199_998):
        assert ok(client.get(f"/v1/segments/{name}/members/{uid}")) == {"member": uid in members}


# -- per-user checks ---------------------------------------------------------------------------


def test_match_one_user_against_the_library_and_the_sets(
    client: httpx.Client, lib: segments.Segments
) -> None:
    name = unique()
    define(client, name, "even & ~recent | vip")
    members = (E & (UNIVERSE - R)) | V
    expr = "triple ^ vip"
    for uid in [0, 7, 65_536, 150_000, 150_003, 199_999, 200_000, 4_000_000_000]:
        by_expr = ok(client.post(f"/v1/users/{uid}/match", json={"expr": expr}))
        assert by_expr == {"user": uid, "match": lib.matches(uid, expr)}
        assert by_expr["match"] == (uid in (T ^ V))
        by_name = ok(client.post(f"/v1/users/{uid}/match", json={"audiences": [name, name, "vip"]}))
        assert by_name == {"user": uid, "audiences": {name: uid in members, "vip": uid in V}}
        assert by_name["audiences"][name] == lib.matches(uid, name)


def test_batch_match_against_the_library_and_the_sets(client: httpx.Client, lib: segments.Segments) -> None:
    name = unique()
    define(client, name, "recent - triple")
    rng = random.Random(1313)
    users = [rng.randrange(0, 260_000) for _ in range(3000)] + [4_294_967_295, 0, 0]
    expr = f"{name} | (vip & even)"
    answer = ok(client.post("/v1/match", json={"users": users, "expr": expr}))
    assert answer == {"matches": lib.match_many(users, expr)}
    assert answer["matches"] == [u in ((R - T) | (V & E)) for u in users]
    assert ok(client.post("/v1/match", json={"users": [], "expr": expr})) == {"matches": []}


def test_the_users_audiences_in_the_lookup(client: httpx.Client, lib: segments.Segments) -> None:
    mine = {unique("m"): ("vip", V), unique("m"): ("even & recent", E & R)}
    for name, (expr, _) in mine.items():
        define(client, name, expr)
    for uid in (7, 150_000, 150_001, 199_999):
        body = ok(client.get(f"/v1/users/{uid}/segments", params={"audiences": "true"}))
        assert set(body) == {"user_id", "segments", "audiences"}
        assert body["segments"] == lib.segments_of(uid)
        assert {n for n in SEED if n in body["segments"]} == {n for n, ids in SEED.items() if uid in ids}
        assert body["audiences"] == lib.audiences_of(uid)
        assert {n for n in mine if n in body["audiences"]} == {
            n for n, (_, ids) in mine.items() if uid in ids
        }
        assert "audiences" not in ok(client.get(f"/v1/users/{uid}/segments"))
        assert "audiences" not in ok(client.get(f"/v1/users/{uid}/segments", params={"audiences": "0"}))
    error_of(client.get("/v1/users/7/segments", params={"audiences": "perhaps"}), 400, "invalid_request")


def test_match_refusals(client: httpx.Client) -> None:
    missing = unique("missing")
    too_many = list(range(10_001))
    error = error_of(
        client.post("/v1/match", json={"users": too_many, "expr": "even"}), 400, "invalid_request"
    )
    assert error["limit"] == 10_000 and "10000" in str(error["message"]) and "10001" in str(error["message"])
    assert ok(client.post("/v1/match", json={"users": too_many[:10_000], "expr": "even"}))["matches"][:3] == [
        True, False, True,
    ]  # fmt: skip
    error_of(client.post("/v1/match", json={"users": [1, -1], "expr": "even"}), 400, "invalid_user_id")
    error_of(client.post("/v1/match", json={"users": [1, 2**32], "expr": "even"}), 400, "invalid_user_id")
    error_of(client.post("/v1/match", json={"users": [1, "2"], "expr": "even"}), 400, "invalid_request")
    error_of(
        client.post("/v1/match", json={"users": [1], "expr": f"even | {missing}"}), 404, "segment_not_found"
    )
    error_of(client.post("/v1/match", json={"users": [1]}), 400, "invalid_request")
    error_of(
        client.post("/v1/users/1/match", json={"expr": "even", "audiences": ["even"]}), 400, "invalid_request"
    )
    error_of(client.post("/v1/users/1/match", json={}), 400, "invalid_request")
    error_of(client.post("/v1/users/1/match", json={"audiences": []}), 400, "invalid_request")
    error_of(client.post("/v1/users/1/match", json={"audiences": [missing]}), 404, "segment_not_found")
    error_of(client.post("/v1/users/1/match", json={"audiences": ["bad-name"]}), 400, "invalid_segment_name")
    error_of(client.post("/v1/users/x/match", json={"expr": "even"}), 400, "invalid_user_id")
    error_of(client.post("/v1/users/1/match", json={"expr": "even &"}), 400, "invalid_expression")


# -- insights ----------------------------------------------------------------------------------


def _expected_insights(
    lib: segments.Segments, expr: str, names: list[str]
) -> tuple[int, int, list[dict[str, object]]]:
    """The insight numbers, computed here from the library's bitmaps."""
    audience = lib.evaluate(expr)
    universe = lib.evaluate("all")
    rows = []
    for name in names:
        members = lib.evaluate(name)
        both = len(audience & members)
        share_a = both / len(audience) if audience else 0.0
        share_u = len(members & universe) / len(universe)
        rows.append({
            "segment": name, "both": both, "share_of_audience": share_a, "share_of_universe": share_u,
            "index": share_a / share_u * 100 if share_u else None,
        })  # fmt: skip
    rows.sort(key=lambda r: (r["index"] is None, -(r["index"] or 0.0), r["segment"]))
    return len(audience), len(universe), rows


def test_insights_against_the_library_bitmaps(client: httpx.Client, lib: segments.Segments) -> None:
    name = unique()
    define(client, name, "even & recent")
    names = ["triple", "vip", "recent", "empty_one", "even", "edge.case:name"]
    body = ok(client.post("/v1/insights", json={"expr": name, "segments": names}))
    reach, universe, rows = _expected_insights(lib, name, names)
    assert (body["reach"], body["universe"]) == (reach, universe) == (len(E & R), len(UNIVERSE))
    assert body["rows"] == [{**r, "index": pytest.approx(r["index"])} for r in rows]
    assert [r["segment"] for r in body["rows"]][-1] == "empty_one"  # no index: last
    assert body["audiences"] == {name: 1}
    assert body["segments"] == versions(client, "all", *names)
    assert isinstance(body["took_ms"], float)
    by_segment = {r["segment"]: r for r in body["rows"]}
    assert by_segment["recent"]["share_of_audience"] == 1.0  # the audience is inside recent
    assert by_segment["recent"]["index"] == pytest.approx(100 * len(UNIVERSE) / len(R))


def test_insights_over_every_segment_by_default(client: httpx.Client, lib: segments.Segments) -> None:
    body = ok(client.post("/v1/insights", json={"expr": "vip | triple & recent"}))
    names = [n for n in lib.names() if n != "all"]
    reach, universe, rows = _expected_insights(lib, "vip | triple & recent", names)
    assert (body["reach"], body["universe"]) == (reach, universe)
    assert body["rows"] == [{**r, "index": pytest.approx(r["index"])} for r in rows]
    indexes = [r["index"] for r in body["rows"] if r["index"] is not None]
    assert indexes == sorted(indexes, reverse=True)


def test_insights_refusals(client: httpx.Client) -> None:
    missing = unique("missing")
    error = error_of(
        client.post("/v1/insights", json={"expr": "even", "segments": [missing]}), 404, "segment_not_found"
    )
    assert error["segments"] == [missing]
    error_of(client.post("/v1/insights", json={"expr": "even", "segments": []}), 400, "invalid_request")
    error_of(client.post("/v1/insights", json={"expr": "(even"}), 400, "invalid_expression")
    error_of(client.post("/v1/insights", json={"segments": ["even"]}), 400, "invalid_request")


# -- auth ----------------------------------------------------------------------------------------

READER, WRITER = "aud-reader-5c1e", "aud-writer-8d2f"
#: (method, path, JSON body, scope) of every new route; the audiences ``au`` and ``t_auth_gone`` and the
#: windowed segment ``t_auth_window`` exist on the secured server
ROUTES: list[tuple[str, str, object, str]] = [
    ("GET", "/v1/audiences", None, "read"),
    ("GET", "/v1/audiences/au", None, "read"),
    ("GET", "/v1/audiences/au/history", None, "read"),
    ("POST", "/v1/users/4/match", {"expr": "even"}, "read"),
    ("POST", "/v1/users/4/match", {"audiences": ["au"]}, "read"),
    ("POST", "/v1/match", {"users": [1, 2], "expr": "au"}, "read"),
    ("POST", "/v1/insights", {"expr": "au", "segments": ["even"]}, "read"),
    ("GET", "/v1/users/4/segments?audiences=true", None, "read"),
    ("GET", "/v1/segments/even/history", None, "read"),
    ("POST", "/v1/reach/history", {"expr": "even", "from": "2026-01-01", "to": "2026-01-03"}, "read"),
    ("POST", "/v1/reach", {"expr": "even", "as_of": "2026-01-01"}, "read"),
    ("PUT", "/v1/audiences/au", {"expr": "even & triple"}, "write"),
    ("PUT", "/v1/segments/t_auth_window/window", {"granularity": "day", "retention": 30}, "write"),
    ("POST", "/v1/segments/t_auth_window/add", {"ids": [1], "at": datetime.now(UTC).date().isoformat()}, "write"),
    ("PUT", "/v1/audiences/t_auth_new", {"expr": "vip"}, "write"),
    ("DELETE", "/v1/audiences/t_auth_gone", None, "write"),
]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    url = f"sqlite:///{tmp_path_factory.mktemp('aud-auth') / 'segments.db'}"
    seed_store(url)
    with segments.connect(url) as segs:
        segs.define_audience("au", "even & triple")
        segs.define_audience("t_auth_gone", "vip")
        segs.create_windowed("t_auth_window", granularity="day", retention=30)
    with start_api_server(url, {"SEGMENTS_API_KEYS": f"{READER}:read;{WRITER}:write"}) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as c:
            yield c


@pytest.mark.parametrize(
    ("method", "path", "body", "scope"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES]
)
def test_every_route_needs_a_key_with_its_scope(
    secured: httpx.Client, method: str, path: str, body: object, scope: str
) -> None:
    def send(key: str | None) -> httpx.Response:
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        return secured.request(method, path, json=body, headers=headers)

    error_of(send(None), 401, "unauthorized")
    error_of(send("not-a-key"), 401, "unauthorized")
    assert error_of(send(WRITER if scope == "read" else READER), 403, "forbidden")["required_scope"] == scope
    assert send(READER if scope == "read" else WRITER).status_code == 200


# -- the same paths on Aerospike -----------------------------------------------------------------


@pytest.fixture(scope="module")
def aero(aerospike_target: AerospikeTarget) -> Iterator[tuple[httpx.Client, segments.Segments]]:
    url = aerospike_url(aerospike_target)
    seed_store(url)
    with start_api_server(url) as server, segments.connect(url) as segs:
        with httpx.Client(base_url=server.base_url, timeout=30) as c:
            yield c, segs


def test_audience_paths_on_aerospike(aero: tuple[httpx.Client, segments.Segments]) -> None:
    client, lib = aero
    inner, outer = unique("inner"), unique("outer")
    assert define(client, inner, "even & triple", "six")["reach"] == len(E & T)
    body = define(client, outer, f"{inner} | vip")
    assert (body["reach"], body["audiences"]) == (len((E & T) | V), {inner: 1})
    assert define(client, inner, "even & recent")["version"] == 2
    assert ok(client.get(f"/v1/audiences/{outer}"))["reach"] == len((E & R) | V)
    ok(client.put("/v1/segments/aero_base", json={"ids": [1, 3]}))
    user = unique("user")
    define(client, user, f"aero_base | {outer}")
    ok(client.post("/v1/segments/aero_base/add", json={"ids": [5]}))
    assert ok(client.get(f"/v1/audiences/{user}"))["reach"] == len({1, 3, 5} | (E & R) | V)
    history = ok(client.get(f"/v1/audiences/{inner}/history"))["definitions"]
    assert [d["expr"] for d in history] == ["even & triple", "even & recent"]
    assert {a["name"] for a in ok(client.get("/v1/audiences"))["audiences"]} >= {inner, outer, user}
    assert error_of(client.put(f"/v1/audiences/{inner}", json={"expr": user}), 400, "audience_cycle")["cycle"] == [
        inner, user, outer, inner,
    ]  # fmt: skip
    assert error_of(client.delete("/v1/segments/aero_base"), 409, "in_use")["dependents"] == [user]
    users = [1, 3, 5, 7, 150_000, 150_002, 199_999]
    assert ok(client.post("/v1/match", json={"users": users, "expr": user}))["matches"] == lib.match_many(
        users, user
    )
    assert ok(client.post("/v1/users/5/match", json={"audiences": [user, inner]}))["audiences"] == {
        user: True, inner: False,
    }  # fmt: skip
    insight = ok(
        client.post("/v1/insights", json={"expr": outer, "segments": ["recent", "vip", "empty_one"]})
    )
    _, _, rows = _expected_insights(lib, outer, ["recent", "vip", "empty_one"])
    assert insight["rows"] == [{**r, "index": pytest.approx(r["index"])} for r in rows]
    exported = client.get(f"/v1/segments/{outer}/export").text.split()
    assert [int(x) for x in exported] == sorted((E & R) | V)
    assert ok(client.delete("/v1/segments/aero_base", params={"cascade": "true"})) == {
        "deleted": ["aero_base", user]
    }
    assert ok(client.delete(f"/v1/audiences/{inner}", params={"cascade": "true"})) == {
        "deleted": [inner, outer]
    }
    assert ok(client.get("/v1/audiences"))["audiences"] == []
