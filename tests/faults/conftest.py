"""Shared pieces of the fault, load and hostile-input tests.

Every test here runs real processes (``segments serve``, ``segments ingest``,
the tansu broker, the Aerospike test server, ``moto_server``) on loopback
ports and stops them at the end. ``SEGMENTS_TEST_HEAVY=1`` makes the runs
longer and the streams larger; the default keeps the whole directory within
a few minutes on two busy cores. No test asserts on wall-clock speed: time
limits here are only deadlines for "this never happened".
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from pyroaring import BitMap

from tests.support.require import missing

HEAVY = os.environ.get("SEGMENTS_TEST_HEAVY") == "1"

#: ``{name: (cardinality, version, members)}`` of every segment, as the API reports it
Snapshot = dict[str, tuple[int, int, BitMap]]


def api_snapshot(client: httpx.Client, headers: dict[str, str] | None = None) -> Snapshot:
    """Every segment's info and members, read through the API (members as one exported bitmap)."""
    listing = client.get("/v1/segments", headers=headers)
    assert listing.status_code == 200, listing.text
    out: Snapshot = {}
    for info in listing.json()["segments"]:
        name = info["name"]
        export = client.get(f"/v1/segments/{name}/export", params={"format": "roaring"}, headers=headers)
        assert export.status_code == 200, export.text
        members = BitMap.deserialize(export.content)
        assert len(members) == info["cardinality"], name
        out[name] = (info["cardinality"], info["version"], members)
    return out


def assert_same_snapshot(before: Snapshot, after: Snapshot) -> None:
    assert sorted(after) == sorted(before), "segments were created or deleted"
    for name, (cardinality, version, members) in before.items():
        assert after[name][0] == cardinality, f"cardinality of {name} changed"
        assert after[name][1] == version, f"version of {name} changed"
        assert after[name][2] == members, f"members of {name} changed"


def retry_after_ok(response: httpx.Response) -> bool:
    """A 503 must say when to come back."""
    value = response.headers.get("retry-after", "")
    return value.isdigit() and int(value) >= 0


@dataclass
class VersionWatch:
    """Polls ``GET /v1/segments`` in a thread and records every version each segment shows.

    A version that goes down, or a change of membership without a version bump, is a violation.
    """

    base_url: str
    interval: float = 0.02
    headers: dict[str, str] = field(default_factory=dict)
    seen: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # name -> [(version, cardinality)]
    errors: list[str] = field(default_factory=list)
    polls: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> VersionWatch:
        self._thread = threading.Thread(target=self._run, name="version-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30, headers=self.headers) as client:
            while not self._stop.is_set():
                try:
                    response = client.get("/v1/segments")
                except httpx.HTTPError as exc:
                    self.errors.append(f"poll failed: {exc!r}")
                    continue
                if response.status_code != 200:
                    self.errors.append(f"poll answered {response.status_code}: {response.text[:200]}")
                    continue
                self.polls += 1
                for info in response.json()["segments"]:
                    history = self.seen.setdefault(info["name"], [])
                    now = (int(info["version"]), int(info["cardinality"]))
                    if history and history[-1] != now:
                        last_version, last_cardinality = history[-1]
                        if now[0] < last_version:
                            self.errors.append(
                                f"{info['name']}: version went from {last_version} to {now[0]}"
                            )
                        elif now[0] == last_version and now[1] != last_cardinality:
                            self.errors.append(
                                f"{info['name']}: cardinality changed at version {now[0]} without a new version"
                            )
                    if not history or history[-1] != now:
                        history.append(now)
                self._stop.wait(self.interval)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ``condition()`` holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture()
def aerospike_server() -> Iterator[object]:
    """A private Aerospike server (this test stops it): the test server, or a real node from the kit."""
    try:
        import segments.storage.aerospike  # noqa: F401
        from tests.support.aerospike_fixture import private_aerospike_target
    except ImportError as exc:  # pragma: no cover - the backend is part of the project
        pytest.skip(missing(f"the Aerospike backend ({exc})"))
    with private_aerospike_target() as target:
        yield target
