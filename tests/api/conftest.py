"""Fixtures for the HTTP API tests: real ``segments serve`` processes on free loopback ports.

``api`` is one server per test module over a SQLite store seeded with
``SEED`` (tests that change data use their own, uniquely named segments);
``client`` is an ``httpx.Client`` pointed at it. Expected answers are computed
from the ``SEED`` sets with Python set operations, independently of the library.

Page tests use ``browser`` (one headless Chromium per module, driven by
Playwright; the tests skip when Chromium is not installed) and ``browse``
(a fresh browser context per test, see ``tests.support.browser``: screenshots
of named states are kept, and a failure saves a screenshot and a trace).
"""

from __future__ import annotations

import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

import segments
from tests.support.api_server import ApiServer, start_api_server
from tests.support.browser import CHROMIUM_FLAGS, BrowserTest, artifact_folder, find_chromium

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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, one per test module.

    Not one per session: while Playwright's sync API runs, its event loop is
    the thread's running loop, and other modules' tests call ``asyncio.run``.
    """
    executable = find_chromium()
    if executable is None:
        pytest.skip("missing: chromium (apt-get install chromium; `make test` installs it)")
    with sync_playwright() as playwright:
        started = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield started
        started.close()


_BROWSER_TEST = pytest.StashKey[BrowserTest]()


@pytest.fixture
def browse(browser: Browser, request: pytest.FixtureRequest) -> Iterator[BrowserTest]:
    """A fresh browser context for this test; at the end no page may have logged an error."""
    test = BrowserTest(browser.new_context(), artifact_folder(request.node.path.stem, request.node.name))
    request.node.stash[_BROWSER_TEST] = test
    yield test
    if test.errors and not test.saved:
        test.save_failure()
    test.close()
    assert test.errors == [], f"the pages reported errors: {test.errors}; artifacts: {test.saved}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """When a test that uses ``browse`` fails, save its screenshots and trace and name them in the report."""
    report = yield
    test = item.stash.get(_BROWSER_TEST, None)
    if test is not None and report.failed and report.when in ("setup", "call") and not test.saved:
        test.save_failure()
        report.sections.append(("browser artifacts", "\n".join(str(path) for path in test.saved)))
    return report
