"""The audience-builder page, driven in headless Chromium against a real uvicorn process.

A person's actions (typing an expression one key at a time, clicking segment
names and operators, ticking boxes for the heatmap) and what the page then
shows are compared with the API's own answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.browser import Browser, Page, find_chromium, start_browser
from tests.api.conftest import SEED, seed_store
from tests.support.api_server import ApiServer, start_api_server

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium binary (apt-get install chromium; `make test` installs it)"
)

REACH = "document.getElementById('reach')"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None
    with start_browser(CHROMIUM) as started:
        yield started


@pytest.fixture(scope="module")
def page(api: ApiServer, browser: Browser) -> Iterator[Page]:
    opened = browser.open(f"{api.base_url}/")
    opened.wait_for("document.querySelectorAll('#segments-body tr').length > 0")
    yield opened
    assert browser.console_errors() == []


def api_reach(client: httpx.Client, expr: str) -> int:
    response = client.post("/v1/reach", json={"expr": expr})
    assert response.status_code == 200, response.text
    reach: int = response.json()["reach"]
    return reach


def clear(page: Page) -> None:
    page.click("#clear")
    page.wait_for(f"{REACH}.dataset.state === 'empty'")


def settled(page: Page, expr: str) -> dict[str, str]:
    """Wait until the page shows the result for exactly ``expr``; return the reach element's data."""
    page.wait_for(
        f"{REACH}.dataset.expr === {json.dumps(expr)} && ['ok', 'error'].includes({REACH}.dataset.state)"
    )
    data: dict[str, str] = page.evaluate(f"Object.assign({{text: {REACH}.textContent}}, {REACH}.dataset)")
    return data


def test_segment_list_shows_sizes_and_freshness(page: Page, client: httpx.Client) -> None:
    listed = client.get("/v1/segments").json()["segments"]
    rows = page.evaluate(
        "[...document.querySelectorAll('#segments-body tr')].map(tr => "
        "[tr.dataset.name, tr.cells[2].textContent, tr.cells[3].textContent])"
    )
    assert [r[0] for r in rows] == [s["name"] for s in listed]
    shown = {name: size for name, size, _ in rows}
    for name, ids in SEED.items():
        assert shown[name] == f"{len(ids):,}"
    assert all(fresh in ("just now",) or fresh.endswith("ago") for _, _, fresh in rows)


def test_typing_an_expression_shows_the_api_reach(page: Page, client: httpx.Client) -> None:
    clear(page)
    expr = "(even | vip) & triple - recent"
    page.type_text("#expr", expr)
    data = settled(page, expr)
    expected = api_reach(client, expr)
    assert data["state"] == "ok"
    assert int(data["reach"]) == expected
    assert data["text"] == f"{expected:,}"
    detail = page.evaluate("document.getElementById('reach-detail').textContent")
    assert f"{100 * expected / len(SEED['all']):.2f}% of all" in detail
    assert page.evaluate("document.getElementById('error').hidden") is True


def test_clicking_segments_and_operators_composes_the_expression(page: Page, client: httpx.Client) -> None:
    clear(page)
    page.click("#segments-body button[data-insert='even']")
    page.click("#operators button[data-insert=' - ']")
    page.click("#operators button[data-insert='~']")
    page.click("#segments-body button[data-insert='triple']")
    expr = page.evaluate("document.getElementById('expr').value")
    assert expr == "even - ~triple"
    data = settled(page, expr)
    assert int(data["reach"]) == api_reach(client, expr) == len(SEED["even"] & SEED["triple"])


def test_syntax_errors_point_at_the_position(page: Page, client: httpx.Client) -> None:
    clear(page)
    expr = "even & (triple | "
    page.type_text("#expr", expr)
    data = settled(page, expr)
    assert data["state"] == "error"
    assert data["error"] == "invalid_expression"
    position = client.post("/v1/reach", json={"expr": expr}).json()["error"]["position"]
    pointer = page.evaluate("document.getElementById('error-pointer').textContent")
    line, caret = pointer.split("\n")
    assert line == expr
    assert caret.index("^") == position
    assert f"position {position}" in caret
    assert page.evaluate("document.getElementById('error').hidden") is False


def test_unknown_segments_are_named(page: Page) -> None:
    clear(page)
    expr = "even | nobody_here"
    page.type_text("#expr", expr)
    data = settled(page, expr)
    assert data["error"] == "segment_not_found"
    message = page.evaluate("document.getElementById('error-message').textContent")
    assert message == "Unknown segment: nobody_here"


def test_fixing_an_error_brings_the_reach_back(page: Page, client: httpx.Client) -> None:
    clear(page)
    page.type_text("#expr", "even &")
    assert settled(page, "even &")["state"] == "error"
    page.type_text("#expr", " vip")
    data = settled(page, "even & vip")
    assert int(data["reach"]) == api_reach(client, "even & vip")
    assert page.evaluate("document.getElementById('error').hidden") is True


def test_overlap_heatmap(page: Page, client: httpx.Client) -> None:
    names = ["even", "triple", "vip"]
    page.click("#overlap-clear")
    for name in names:
        page.click(f"#segments-body input.pick[value='{name}']")
    page.click("#overlap-run")
    page.wait_for("document.querySelectorAll('#heatmap td.cell').length === 9")
    shown = page.evaluate(
        "[...document.querySelectorAll('#heatmap tr')].slice(1).map(tr => "
        "[...tr.querySelectorAll('td.cell')].map(td => Number(td.dataset.value)))"
    )
    expected = client.post("/v1/overlap", json={"segments": names}).json()
    assert shown == expected["matrix"]
    headers = page.evaluate(
        "[...document.querySelectorAll('#heatmap th.col-name')].map(th => th.textContent)"
    )
    assert headers == names


def test_the_page_asks_for_an_api_key_when_the_api_needs_one(browser: Browser, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'secured.db'}"
    seed_store(url)
    key = "page-reader-5d1e"
    with start_api_server(url, {"SEGMENTS_API_KEYS": f"{key}:read"}) as server:
        secured = browser.open(f"{server.base_url}/")
        secured.wait_for("!document.getElementById('auth').hidden")
        assert secured.evaluate("document.getElementById('status').textContent") == "an API key is required"
        assert secured.evaluate("document.querySelectorAll('#segments-body tr').length") == 0
        secured.type_text("#api-key", key)
        secured.click("#auth button[type=submit]")
        secured.wait_for(f"document.querySelectorAll('#segments-body tr').length === {len(SEED)}")
        secured.type_text("#expr", "even & vip")
        data = settled(secured, "even & vip")
        assert int(data["reach"]) == len(SEED["even"] & SEED["vip"])
