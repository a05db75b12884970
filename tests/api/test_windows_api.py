"""Windowed segments, ``at`` on every write, ``as_of``, reach history and size history over a real uvicorn
(SQLite; the Aerospike test server at the end, or a real Aerospike with ``SEGMENTS_TEST_AEROSPIKE``).

Expected answers come from a per-day (per-hour) model: a dict from bucket to a Python set, updated
with every write the test sends. Writes name explicit days relative to today and queries pass an
explicit ``as_of``, so a test that crosses midnight UTC still expects the right buckets.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pyroaring import BitMap

import segments
from segments.writer import Change
from tests.api.conftest import SEED, UNIVERSE, seed_store
from tests.api.test_errors import error_of
from tests.support.aerospike_fixture import AerospikeTarget, aerospike_url
from tests.support.api_server import start_api_server

E, V = SEED["even"], SEED["vip"]
WINDOWED_KEYS = {
    "name",
    "windowed",
    "granularity",
    "retention",
    "buckets",
    "oldest",
    "newest",
    "cardinality",
    "created_at",
}
_REPO = Path(__file__).resolve().parents[2]


def unique(tag: str = "w") -> str:
    return f"{tag}_{uuid.uuid4().hex[:10]}"


def ok(response: httpx.Response, status: int = 200) -> dict[str, object]:
    assert response.status_code == status, response.text
    body: dict[str, object] = response.json()
    return body


def today() -> date:
    return datetime.now(UTC).date()


def reach(client: httpx.Client, expr: object, as_of: object | None = None) -> int:
    body: dict[str, object] = {"expr": expr}
    if as_of is not None:
        body["as_of"] = as_of
    answer = ok(client.post("/v1/reach", json=body))
    return int(answer["reach"])


class DayModel:
    """What a windowed segment with day buckets holds: bucket day -> members."""

    def __init__(self, retention: int) -> None:
        self.retention = retention
        self.days: dict[date, set[int]] = {}

    def window(
        self, as_of: date, last: int | None = None, start: date | None = None, end: date | None = None
    ) -> set[int]:
        if last is not None:
            first, final = as_of - timedelta(days=last - 1), as_of
        elif start is not None and end is not None:
            first, final = start, min(end, as_of)
        else:
            first, final = as_of - timedelta(days=self.retention - 1), as_of
        return set().union(*(ids for d, ids in self.days.items() if first <= d <= final))


def _write(client: httpx.Client, name: str, op: str, ids: list[int], at: str, form: str) -> httpx.Response:
    """One write in one of the forms a client may use: ``at`` in the JSON body, or ``?at=`` with a bitmap."""
    path = f"/v1/segments/{name}" if op == "replace" else f"/v1/segments/{name}/{op}"
    method = "PUT" if op == "replace" else "POST"
    if form == "json":
        return client.request(method, path, json={"ids": ids, "at": at})
    return client.request(
        method, path, params={"at": at}, content=BitMap(ids).serialize(),
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip


def test_windowed_writes_and_windows_against_a_per_day_model(client: httpx.Client) -> None:
    name = unique()
    created = ok(client.put(f"/v1/segments/{name}/window", json={"granularity": "day", "retention": 60}))
    assert set(created) == WINDOWED_KEYS
    assert (created["windowed"], created["granularity"], created["retention"], created["buckets"]) == (
        True,
        "day",
        60,
        0,
    )
    assert (created["oldest"], created["newest"], created["cardinality"]) == (None, None, 0)
    model = DayModel(60)
    buckets: set[date] = set()
    now = today()
    rng = random.Random(20261201)
    for step in range(40):
        day = now - timedelta(days=rng.randrange(0, 20))
        op = rng.choice(["add", "add", "remove", "replace"])
        ids = rng.sample(range(300_000), rng.randrange(1, 40))
        # a date, or a timestamp within that day: both go to the day's bucket
        hour, minute = rng.randrange(24), rng.randrange(60)
        if day == now:  # a time later today would be in the future: take the start of the day
            hour = minute = 0
        at = day.isoformat() if step % 3 else f"{day.isoformat()}T{hour:02d}:{minute:02d}:00Z"
        answer = ok(_write(client, name, op, ids, at, "json" if step % 2 else "binary"))
        assert answer["name"] == f"{name}::{day.strftime('%Y%m%d')}"  # the bucket written
        if op == "add":
            model.days.setdefault(day, set()).update(ids)
        elif op == "remove":
            model.days.setdefault(day, set()).difference_update(ids)
        else:
            model.days[day] = set(ids)
        if op != "remove":
            buckets.add(day)
        assert answer["cardinality"] == len(model.days[day])
    iso = now.isoformat()
    for last in (1, 2, 3, 7, 12, 20, 30):
        assert reach(client, f"{name}[{last}d]", iso) == len(model.window(now, last)), last
        assert reach(client, {"segment": name, "window": f"{last}d"}, iso) == len(model.window(now, last))
    for back in (1, 5, 9):
        past = now - timedelta(days=back)
        assert reach(client, f"{name}[4d]", past.isoformat()) == len(model.window(past, 4)), back
        assert reach(client, name, past.isoformat()) == len(model.window(past)), back  # whole, as of then
    for _ in range(8):
        start = now - timedelta(days=rng.randrange(0, 22))
        end = start + timedelta(days=rng.randrange(0, 6))
        text = start.isoformat() if start == end else f"{start.isoformat()}..{end.isoformat()}"
        expected = model.window(now, start=start, end=end)
        assert reach(client, f"{name}[{text}]", iso) == len(expected), text
        tree = {"segment": name, "from": start.isoformat(), "to": end.isoformat()}
        assert reach(client, tree, iso) == len(expected)
    whole = model.window(now)
    assert reach(client, name, iso) == reach(client, name) == len(whole)
    assert reach(client, f"{name}[7d] & even | vip", iso) == len((model.window(now, 7) & E) | V)
    assert reach(client, f"~{name}[3d]", iso) == len(UNIVERSE - model.window(now, 3))
    answer = ok(client.post("/v1/reach", json={"expr": f"{name}[2d]", "as_of": iso}))
    assert answer["as_of"] == datetime(now.year, now.month, now.day, tzinfo=UTC).isoformat()
    assert all(n.startswith(f"{name}::") for n in answer["segments"])

    # the reach over time, one point per day (windows slide with each step)
    start = now - timedelta(days=15)
    history = ok(
        client.post(
            "/v1/reach/history", json={"expr": f"{name}[3d] | vip", "from": start.isoformat(), "to": iso}
        )
    )
    points = history["points"]
    assert isinstance(points, list) and len(points) == 16
    for i, point in enumerate(points):
        day = start + timedelta(days=i)
        assert point == {"at": datetime(day.year, day.month, day.day, tzinfo=UTC).isoformat(),
                         "reach": len(model.window(day, 3) | V)}  # fmt: skip

    # what it is: settings, buckets, whole reach; listed apart, its buckets hidden
    info = ok(client.get(f"/v1/segments/{name}"))
    assert info == {
        **created, "buckets": len(buckets), "cardinality": len(whole),
        "oldest": datetime.combine(min(buckets), datetime.min.time(), UTC).isoformat(),
        "newest": datetime.combine(max(buckets), datetime.min.time(), UTC).isoformat(),
    }  # fmt: skip
    listing = ok(client.get("/v1/segments"))
    assert [w for w in listing["windowed"] if w["name"] == name] == [info]
    assert not [s for s in listing["segments"] if "::" in s["name"] or s["name"] == name]

    # size history of a windowed segment: one point per bucket, its current size
    per_bucket = ok(client.get(f"/v1/segments/{name}/history"))["points"]
    assert [(p["at"], p["cardinality"], p["op"]) for p in per_bucket] == [
        (datetime.combine(d, datetime.min.time(), UTC).isoformat(), len(model.days[d]), "bucket")
        for d in sorted(buckets)
    ]
    recent = ok(
        client.get(f"/v1/segments/{name}/history", params={"since": (now - timedelta(days=3)).isoformat()})
    )
    assert len(recent["points"]) == len([d for d in buckets if d >= now - timedelta(days=3)])

    # membership and export: the whole retention
    for uid in sorted(whole)[:5] + [299_999, 7]:
        assert ok(client.get(f"/v1/segments/{name}/members/{uid}")) == {"member": uid in whole}
    assert [int(x) for x in client.get(f"/v1/segments/{name}/export").text.split()] == sorted(whole)
    roaring = client.get(f"/v1/segments/{name}/export", params={"format": "roaring"})
    assert BitMap.deserialize(roaring.content) == BitMap(whole)


def test_writes_without_at_go_to_now(client: httpx.Client) -> None:
    name = unique()
    ok(client.put(f"/v1/segments/{name}/window", json={"retention": 10}))
    before = today()
    added = ok(client.post(f"/v1/segments/{name}/add", json={"ids": [1, 2, 3]}))
    removed = ok(client.post(f"/v1/segments/{name}/remove", json={"ids": [2]}))
    after = today()
    buckets = {f"{name}::{d.strftime('%Y%m%d')}" for d in (before, after)}
    assert added["name"] in buckets and removed["name"] == added["name"]
    assert removed["cardinality"] == 2
    replaced = ok(client.put(f"/v1/segments/{name}", json={"ids": [9]}))
    assert replaced["name"] in buckets and replaced["cardinality"] == 1
    assert reach(client, f"{name}[1d]") == 1
    assert (
        ok(client.post(f"/v1/segments/{name}/add", json={"ids": [5], "at": datetime.now(UTC).timestamp()}))[
            "name"
        ]
        in buckets
    )


def test_hour_buckets(client: httpx.Client) -> None:
    name = unique()
    created = ok(client.put(f"/v1/segments/{name}/window", json={"granularity": "hour", "retention": 48}))
    assert (created["granularity"], created["retention"]) == ("hour", 48)
    now = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
    if now > datetime.now(UTC):
        now -= timedelta(hours=1)  # half past the hour is still to come: take the last one
    hours = {now - timedelta(hours=h): set(range(h * 10, h * 10 + 5)) for h in (0, 1, 3, 30)}
    for moment, ids in hours.items():
        ok(client.post(f"/v1/segments/{name}/add", json={"ids": sorted(ids), "at": moment.isoformat()}))
    as_of = now.isoformat()

    def last(n: int) -> int:
        return len(set().union(*(ids for m, ids in hours.items() if m > now - timedelta(hours=n))))

    for n in (1, 2, 4, 24, 31, 48):
        assert reach(client, f"{name}[{n}h]", as_of) == last(n), n
    assert reach(client, f"{name}[1d]", as_of) == last(24)
    assert reach(client, f"{name}[2d]", as_of) == last(48)
    assert len(ok(client.get(f"/v1/segments/{name}/history"))["points"]) == 4


def test_bad_times_are_400_bad_time(client: httpx.Client) -> None:
    name = unique()
    ok(client.put(f"/v1/segments/{name}/window", json={"retention": 30}))
    even_version = ok(client.get("/v1/segments/even"))["version"]
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    old = (today() - timedelta(days=45)).isoformat()
    for at in ("bogus", "2026-13-01", future, old, True, {"day": 1}, [2026]):
        error = error_of(
            client.post(f"/v1/segments/{name}/add", json={"ids": [1], "at": at}), 400, "bad_time"
        )
        assert "at" in str(error["message"])
    for at in ("bogus", future, old):
        bitmap = BitMap([1]).serialize()
        headers = {"Content-Type": "application/octet-stream"}
        error_of(
            client.post(f"/v1/segments/{name}/add", params={"at": at}, content=bitmap, headers=headers),
            400,
            "bad_time",
        )
    assert "outside the retention" in str(
        error_of(client.put(f"/v1/segments/{name}", json={"ids": [1], "at": old}), 400, "bad_time")["message"]
    )
    assert "not windowed" in str(
        error_of(
            client.post("/v1/segments/even/add", json={"ids": [1], "at": today().isoformat()}),
            400,
            "bad_time",
        )["message"]
    )
    error_of(
        client.post("/v1/segments/even/remove", params={"at": today().isoformat()}, json={"ids": [1]}),
        400,
        "bad_time",
    )
    error = error_of(
        client.post(f"/v1/segments/{name}/add", params={"at": old}, json={"ids": [1], "at": old}),
        400,
        "invalid_request",
    )
    assert "once" in str(error["message"])
    assert ok(client.get(f"/v1/segments/{name}"))["buckets"] == 0  # nothing was written
    assert ok(client.get("/v1/segments/even"))["version"] == even_version
    # reads
    for as_of in ("yesterday", "0001-01-01", "9999-12-31", -1e12):
        error_of(client.post("/v1/reach", json={"expr": name, "as_of": as_of}), 400, "bad_time")
    assert "as_of" not in ok(client.post("/v1/reach", json={"expr": name, "as_of": None}))  # null: now
    error = error_of(client.post("/v1/reach", json={"expr": "vip | even[7d]"}), 400, "bad_time")
    assert "'even'" in str(error["message"])
    error_of(client.post("/v1/reach", json={"expr": f"{name}[7x]"}), 400, "invalid_expression")
    error_of(client.post("/v1/reach", json={"expr": f"{name}[5h]"}), 400, "invalid_input")  # day buckets
    error_of(client.get(f"/v1/segments/{name}/history", params={"since": "soon"}), 400, "bad_time")


def test_creating_windowed_segments(client: httpx.Client) -> None:
    name = unique()
    first = ok(client.put(f"/v1/segments/{name}/window", json={"granularity": "hour", "retention": 72}))
    assert (
        ok(client.put(f"/v1/segments/{name}/window", json={"granularity": "hour", "retention": 72})) == first
    )
    error_of(
        client.put(f"/v1/segments/{name}/window", json={"granularity": "day", "retention": 72}),
        409,
        "name_taken",
    )
    error_of(
        client.put(f"/v1/segments/{name}/window", json={"granularity": "hour", "retention": 7}),
        409,
        "name_taken",
    )
    error_of(client.put("/v1/segments/even/window", json={}), 409, "name_taken")
    other = unique()
    for body in ({"granularity": "week"}, {"retention": 0}, {"retention": 100_001}, {"retention": "5"},
                 {"retention": 5.5}, {"span": 3}):  # fmt: skip
        error_of(client.put(f"/v1/segments/{other}/window", json=body), 400, "invalid_request")
    error_of(client.put("/v1/segments/a::b/window", json={}), 400, "invalid_input")
    error_of(client.put("/v1/segments/bad-name/window", json={}), 400, "invalid_segment_name")
    error_of(client.get(f"/v1/segments/{other}"), 404, "segment_not_found")  # none of them created it
    error_of(client.post(f"/v1/segments/{name}::2026010100/add", json={"ids": [1]}), 400, "invalid_input")


def test_reach_history_refusals(client: httpx.Client) -> None:
    name = unique()
    ok(client.put(f"/v1/segments/{name}/window", json={}))
    body = {"expr": f"{name}[7d]", "from": "2026-01-01", "to": "2026-03-01"}
    assert len(ok(client.post("/v1/reach/history", json=body))["points"]) == 60
    six_hourly = ok(client.post("/v1/reach/history", json={**body, "to": "2026-01-02", "step": "6h"}))[
        "points"
    ]
    assert [p["at"][11:16] for p in six_hourly] == ["00:00", "06:00", "12:00", "18:00", "00:00"]
    error = error_of(
        client.post("/v1/reach/history", json={**body, "from": "2020-01-01"}), 400, "invalid_input"
    )
    assert "1000" in str(error["message"])
    error_of(client.post("/v1/reach/history", json={**body, "to": "2025-12-01"}), 400, "bad_time")
    error_of(client.post("/v1/reach/history", json={**body, "from": "0001-01-01"}), 400, "bad_time")
    for step in ("1w", "0d", "1.5d", ""):
        error_of(client.post("/v1/reach/history", json={**body, "step": step}), 400, "invalid_request")
    error_of(
        client.post("/v1/reach/history", json={"expr": name, "from": "2026-01-01"}), 400, "invalid_request"
    )
    error_of(client.post("/v1/reach/history", json={**body, "expr": "even[7d]"}), 400, "bad_time")


def test_size_history_of_a_plain_segment(client: httpx.Client, fresh_name: str, store_path: Path) -> None:
    members: set[int] = set()
    expected = []
    for op, ids in [
        ("replace", [1, 2, 3]),
        ("add", [3, 4, 70_000]),
        ("remove", [1, 99]),
        ("add", [4]),
        ("replace", [8]),
    ]:
        method, path = (
            ("PUT", f"/v1/segments/{fresh_name}")
            if op == "replace"
            else ("POST", f"/v1/segments/{fresh_name}/{op}")
        )
        ok(client.request(method, path, json={"ids": ids}))
        before = set(members)
        members = set(ids) if op == "replace" else members | set(ids) if op == "add" else members - set(ids)
        if members != before or op == "replace":  # add/remove publish a version only when membership changes
            added, removed = (
                (None, None) if op == "replace" else (len(members - before), len(before - members))
            )
            expected.append((op, len(members), added, removed))
    points = ok(client.get(f"/v1/segments/{fresh_name}/history"))["points"]
    assert isinstance(points, list)
    assert [(p["op"], p["cardinality"], p["added"], p["removed"]) for p in points] == expected
    assert [p["version"] for p in points] == list(range(1, len(expected) + 1))
    with segments.connect(f"sqlite:///{store_path}") as lib:
        assert [p["at"] for p in points] == [
            datetime.fromtimestamp(p.at_ms / 1000, UTC).isoformat() for p in lib.history(fresh_name)
        ]
    since = ok(client.get(f"/v1/segments/{fresh_name}/history", params={"since": points[2]["at"]}))["points"]
    until = ok(client.get(f"/v1/segments/{fresh_name}/history", params={"until": points[1]["at"]}))["points"]
    assert [p["version"] for p in since] == [p["version"] for p in points if p["at"] >= points[2]["at"]]
    assert [p["version"] for p in until] == [p["version"] for p in points if p["at"] <= points[1]["at"]]
    assert 1 in [p["version"] for p in until]
    assert client.delete(f"/v1/segments/{fresh_name}").status_code == 204
    error_of(client.get(f"/v1/segments/{fresh_name}/history"), 404, "segment_not_found")
    ok(client.put(f"/v1/segments/{fresh_name}", json={"ids": [5]}))
    again = ok(client.get(f"/v1/segments/{fresh_name}/history"))["points"]
    assert [(p["version"], p["cardinality"]) for p in again] == [(1, 1)]
    error_of(client.get(f"/v1/segments/{unique('missing')}/history"), 404, "segment_not_found")


def test_deleting_a_windowed_segment_and_the_audiences_on_it(client: httpx.Client) -> None:
    name, audience = unique(), unique("aud")
    ok(client.put(f"/v1/segments/{name}/window", json={"retention": 30}))
    ok(client.post(f"/v1/segments/{name}/add", json={"ids": [2, 3], "at": today().isoformat()}))
    defined = ok(client.put(f"/v1/audiences/{audience}", json={"expr": f"{name}[7d] & even"}))
    assert defined["reach"] == 1
    assert error_of(client.delete(f"/v1/segments/{name}"), 409, "in_use")["dependents"] == [audience]
    assert ok(client.delete(f"/v1/segments/{name}", params={"cascade": "true"})) == {
        "deleted": [name, audience]
    }
    error_of(client.get(f"/v1/segments/{name}"), 404, "segment_not_found")
    error_of(client.post("/v1/reach", json={"expr": name}), 404, "segment_not_found")
    assert [w for w in ok(client.get("/v1/segments"))["windowed"] if w["name"] == name] == []
    assert not any(s["name"].startswith(f"{name}::") for s in ok(client.get("/v1/segments"))["segments"])
    other = unique()
    ok(client.put(f"/v1/segments/{other}/window", json={}))
    response = client.delete(f"/v1/segments/{other}")
    assert response.status_code == 204


# -- segments admin expire --------------------------------------------------------------------------


def _expire(url: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "segments", "admin", "expire", "--store", url],
        cwd=_REPO, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_admin_expire_deletes_buckets_past_the_retention(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'expire.db'}"
    now = datetime.now(UTC)
    with segments.connect(url) as segs:
        segs.replace("all", range(100))
        config = segs.create_windowed("paid", retention=3)
        segs.add("paid", [1, 2], at=now)
        segs.add("paid", [3], at=now - timedelta(days=2))
        # buckets as time leaves them: written 5 and 9 days ago (registered), and 12 days ago by a writer
        # that raced an expiry (not registered); a write cannot make them today, retention refuses it
        old = [config.bucket_of(now - timedelta(days=d)) for d in (5, 9, 12)]
        for bucket in old:
            segs.writer.apply(config.segment(bucket), Change(add=BitMap([50 + len(bucket)])))
        for bucket in old[:2]:
            config = segs.windows.register(config, bucket)
    kept = sorted(config.bucket_of(now - timedelta(days=d)) for d in (0, 2))
    assert _expire(url) == {"expired": {"paid": sorted(old)}}
    assert _expire(url) == {"expired": {}}  # idempotent
    with segments.connect(url) as segs:
        assert segs.windows.config("paid") is not None
        assert list(segs.windows.config("paid").buckets) == kept
        assert [n for n in segs.names(buckets=True) if n.startswith("paid::2")] == [
            f"paid::{b}" for b in kept
        ]
        assert segs.reach("paid") == 3


# -- the same paths on Aerospike -----------------------------------------------------------------


@pytest.fixture(scope="module")
def aero(aerospike_target: AerospikeTarget) -> Iterator[httpx.Client]:
    url = aerospike_url(aerospike_target)
    seed_store(url, {"all": UNIVERSE, "even": E, "vip": V})
    with start_api_server(url) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as c:
            yield c


def test_windowed_paths_on_aerospike(aero: httpx.Client) -> None:
    client = aero
    name = unique()
    ok(client.put(f"/v1/segments/{name}/window", json={"granularity": "day", "retention": 40}))
    model = DayModel(40)
    now = today()
    writes = [(0, "add", [1, 2, 3], "json"), (1, "add", [4, 70_000], "binary"), (5, "add", [5, 6], "json"),
              (1, "remove", [4], "binary"), (5, "replace", [7, 140_000], "json"), (9, "add", [8], "binary")]  # fmt: skip
    for back, op, ids, form in writes:
        day = now - timedelta(days=back)
        ok(_write(client, name, op, ids, day.isoformat(), form))
        current = model.days.setdefault(day, set())
        model.days[day] = (
            current | set(ids) if op == "add" else current - set(ids) if op == "remove" else set(ids)
        )
    iso = now.isoformat()
    for last in (1, 2, 6, 10):
        assert reach(client, f"{name}[{last}d]", iso) == len(model.window(now, last))
    assert reach(client, f"{name}[3d]", (now - timedelta(days=5)).isoformat()) == len(
        model.window(now - timedelta(days=5), 3)
    )
    assert reach(client, f"{name}[6d] & even", iso) == len(model.window(now, 6) & E)
    start = now - timedelta(days=10)
    points = ok(
        client.post("/v1/reach/history", json={"expr": f"{name}[2d]", "from": start.isoformat(), "to": iso})
    )["points"]
    assert [p["reach"] for p in points] == [
        len(model.window(start + timedelta(days=i), 2)) for i in range(11)
    ]
    info = ok(client.get(f"/v1/segments/{name}"))
    assert (info["buckets"], info["cardinality"]) == (4, len(model.window(now)))
    assert [w["name"] for w in ok(client.get("/v1/segments"))["windowed"]] == [name]
    per_bucket = ok(client.get(f"/v1/segments/{name}/history"))["points"]
    assert [p["cardinality"] for p in per_bucket] == [len(model.days[d]) for d in sorted(model.days)]
    ok(client.put("/v1/segments/aero_plain", json={"ids": [1, 2]}))
    ok(client.post("/v1/segments/aero_plain/add", json={"ids": [3]}))
    plain = ok(client.get("/v1/segments/aero_plain/history"))["points"]
    assert [(p["version"], p["cardinality"], p["op"]) for p in plain] == [(1, 2, "replace"), (2, 3, "add")]
    error_of(client.post("/v1/segments/aero_plain/add", json={"ids": [1], "at": iso}), 400, "bad_time")
    assert [int(x) for x in client.get(f"/v1/segments/{name}/export").text.split()] == sorted(
        model.window(now)
    )
    assert client.delete(f"/v1/segments/{name}").status_code == 204
    error_of(client.get(f"/v1/segments/{name}"), 404, "segment_not_found")
