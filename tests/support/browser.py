"""Headless Chromium for page tests, driven by Playwright, with screenshots and traces kept as artifacts.

Playwright's Python package carries its own driver; the browser is Debian's
``chromium`` (``make chromium`` installs it), started through
``executable_path``, so nothing is downloaded. The fixtures that use this
live in ``tests/api/conftest.py``: ``browser`` (one Chromium per test module)
and ``browse`` (one :class:`BrowserTest` per test).

Artifacts go to ``test-artifacts/browser/<module>-<test>/`` in the
repository (git ignores ``test-artifacts/``), emptied when the test starts:

* ``<state>.png``: one screenshot for each page state the test names with
  :meth:`BrowserTest.snap`, kept when the test passes too;
* on failure, ``failure-<n>.png`` (each page still open) and ``trace.zip``,
  the Playwright trace of the whole test (DOM snapshots, screenshots, network,
  console) for Playwright's trace viewer (``playwright show-trace``, which
  needs a Playwright browser of its own; the zip also holds plain JSON and
  images). The failure report names the files.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Request, Response

__all__ = ["ARTIFACTS", "CHROMIUM_FLAGS", "BrowserTest", "artifact_folder", "find_chromium"]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
#: Headless, no sandbox (tests run as root), and none of Chromium's own calls to the outside.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
_CANDIDATES = ("/usr/bin/chromium", "/usr/lib/chromium/chromium")


def find_chromium() -> str | None:
    """The Debian Chromium binary, or ``None`` when it is not installed."""
    for path in _CANDIDATES:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


def artifact_folder(module: str, test: str) -> Path:
    """``test-artifacts/browser/<module>-<test>``, with characters unsafe in a file name replaced."""
    return ARTIFACTS / re.sub(r"[^\w.-]+", "_", f"{module}-{test}")


class BrowserTest:
    """One test's browser context: the pages it opened, what they requested and reported, its artifacts.

    ``requests`` lists every URL any page of the context asked for, in order.
    ``errors`` collects what a working page never produces: uncaught script
    exceptions and console errors (a CSP violation is one), except the
    browser's own console line for an HTTP error response, which tests check
    through the response itself (``error_responses``).
    """

    def __init__(self, context: BrowserContext, folder: Path) -> None:
        self.context = context
        self.folder = folder
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.error_responses: list[str] = []
        self._failed_urls: set[str] = set()
        #: Files written by :meth:`save_failure` (empty while nothing failed).
        self.saved: list[Path] = []
        self._pages: list[Page] = []
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        context.on("request", self._on_request)
        context.on("response", self._on_response)
        context.tracing.start(screenshots=True, snapshots=True)

    def open(self, url: str) -> Page:
        """A new page (tab) showing ``url``, loaded."""
        page = self.context.new_page()
        self._pages.append(page)
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught {error.name}: {error.message}"))
        page.goto(url, wait_until="load")
        return page

    def snap(self, page: Page, state: str) -> Path:
        """Save a screenshot of ``page`` as ``<state>.png`` (kept whatever the outcome)."""
        path = self.folder / f"{state}.png"
        page.screenshot(path=path, full_page=True)
        return path

    def save_failure(self) -> None:
        """Screenshot every open page and write the trace (into :attr:`saved`); once per test."""
        assert not self.saved, "save_failure runs once"
        for number, page in enumerate(self._pages, 1):
            if not page.is_closed():
                path = self.folder / f"failure-{number}.png"
                try:
                    page.screenshot(path=path, full_page=True)
                except Exception:  # a crashed page has no picture; the trace below is still written
                    continue
                self.saved.append(path)
        trace = self.folder / "trace.zip"
        self.context.tracing.stop(path=trace)
        self.saved.append(trace)

    def close(self) -> None:
        if not self.saved:
            self.context.tracing.stop()  # a passing test keeps its screenshots, not its trace
        self.context.close()

    def _on_request(self, request: Request) -> None:
        self.requests.append(request.url)

    def _on_response(self, response: Response) -> None:
        if response.status >= 400:
            self._failed_urls.add(response.url)
            self.error_responses.append(f"{response.status} {response.request.method} {response.url}")

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        source = message.location.get("url", "")
        if source in self._failed_urls and message.text.startswith("Failed to load resource"):
            return
        self.errors.append(f"console error at {source or '?'}: {message.text}")
