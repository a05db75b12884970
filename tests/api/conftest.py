"""Fixtures for the HTTP API tests: real ``segments serve`` processes on free loopback ports.

``api`` is one server per test module over a SQLite store seeded with
``SEED`` (tests that change data use their own, uniquely named segments);
``client`` is an ``httpx.Client`` pointed at it. Expected answers are computed
from the ``SEED`` sets with Python set operations, independently of the library.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import segments
from tests.support.api_server import ApiServer, start_api_server

UNIVERSE = set(range(200_000))
#: Segments every module-scoped server starts with (several shards each, some sparse).
SEED: dict[str, set[int]] = {
    "all": UNIVERSE,
    "even": {i for i in UNIVERSE if i % 2 == 0},
    "triple": {i for i in UNIVERSE if i % 3 == 0},
    "recent": set(range(150_000, 200_000)),
    "vip": {7, 65_536, 131_072, 199_999},
    "empty_one": set(),
    "edge.case:name": {0, 1, 2},
}


def seed_store(url: str, data: dict[str, set[int]] | None = None) -> None:
    with segments.connect(url) as segs:
        for name, ids in (data or SEED).items():
            segs.replace(name, sorted(ids))


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-store") / "segments.db"


@pytest.fixture(scope="module")
def api(store_path: Path) -> Iterator[ApiServer]:
    url = f"sqlite:///{store_path}"
    seed_store(url)
    with start_api_server(url) as server:
        yield server


@pytest.fixture(scope="module")
def client(api: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.base_url, timeout=30) as c:
        yield c


@pytest.fixture
def fresh_name() -> str:
    """A segment name no other test uses."""
    return f"t_{uuid.uuid4().hex[:12]}"
