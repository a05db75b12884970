"""The audience-builder page, driven in headless Chromium (Playwright) against a real uvicorn process.

A person's actions (typing an expression one key at a time, clicking segment
names and operators, ticking boxes for the heatmap) and what the page then
shows are compared with the API's own answers. Each test has a fresh browser
context (``browse``); the screenshots of the states it reaches are kept in
``test-artifacts/browser/`` and a failure adds a trace (``tests.support.browser``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.api.conftest import SEED, seed_store
from tests.support.api_server import ApiServer, start_api_server
from tests.support.browser import BrowserTest


def open_builder(browse: BrowserTest, base_url: str) -> Page:
    """The page at ``base_url``, once it lists every seeded segment."""
    page = browse.open(f"{base_url}/")
    expect(page.locator("#segments-body tr")).to_have_count(len(SEED))
    return page


@pytest.fixture
def page(api: ApiServer, browse: BrowserTest) -> Page:
    return open_builder(browse, api.base_url)


def api_reach(client: httpx.Client, expr: str) -> dict[str, Any]:
    response = client.post("/v1/reach", json={"expr": expr})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def settled(page: Page, expr: str) -> dict[str, str]:
    """Wait until the page shows the result for exactly ``expr``; return the reach element's text and data."""
    page.wait_for_function(
        "expr => { const r = document.getElementById('reach');"
        " return r.dataset.expr === expr && ['ok', 'error'].includes(r.dataset.state); }",
        arg=expr,
    )
    data: dict[str, str] = page.locator("#reach").evaluate("r => ({text: r.textContent, ...r.dataset})")
    return data


def test_segment_list_shows_sizes_and_freshness(
    page: Page, browse: BrowserTest, client: httpx.Client
) -> None:
    listed = client.get("/v1/segments").json()["segments"]
    rows = page.locator("#segments-body tr").evaluate_all(
        "rows => rows.map(tr => [tr.dataset.name, tr.cells[2].textContent, tr.cells[4].textContent])"
    )
    assert [r[0] for r in rows] == [s["name"] for s in listed]
    shown = {name: size for name, size, _ in rows}
    assert shown == {s["name"]: f"{s['cardinality']:,}" for s in listed}
    assert shown == {name: f"{len(ids):,}" for name, ids in SEED.items()}
    assert all(fresh == "just now" or fresh.endswith("ago") for _, _, fresh in rows)
    expect(page.locator("#segment-count")).to_have_text(f"({len(listed)})")
    expect(page.locator("#status")).to_have_text(f"{len(listed)} segments")
    browse.snap(page, "segment-list")


def test_typing_an_expression_shows_the_api_reach(
    page: Page, browse: BrowserTest, client: httpx.Client
) -> None:
    expr = "(even | vip) & triple - recent"
    page.locator("#expr").press_sequentially(expr)
    data = settled(page, expr)
    expected = api_reach(client, expr)
    assert data["state"] == "ok"
    assert int(data["reach"]) == expected["reach"]
    assert data["text"] == f"{expected['reach']:,}"
    detail = page.locator("#reach-detail").text_content() or ""
    assert f"{100 * expected['reach'] / len(SEED['all']):.2f}% of all" in detail
    assert f"{len(expected['segments'])} segment(s) read" in detail
    expect(page.locator("#error")).to_be_hidden()
    browse.snap(page, "reach")


def test_clicking_segments_and_operators_composes_the_expression(
    page: Page, browse: BrowserTest, client: httpx.Client
) -> None:
    page.locator("#segments-body button[data-insert='even']").click()
    page.locator("#operators button[data-insert=' - ']").click()
    page.locator("#operators button[data-insert='~']").click()
    page.locator("#segments-body button[data-insert='triple']").click()
    expect(page.locator("#expr")).to_have_value("even - ~triple")
    data = settled(page, "even - ~triple")
    assert (
        int(data["reach"])
        == api_reach(client, "even - ~triple")["reach"]
        == len(SEED["even"] & SEED["triple"])
    )
    browse.snap(page, "composed")


def test_syntax_errors_point_at_the_position(page: Page, browse: BrowserTest, client: httpx.Client) -> None:
    expr = "even & (triple | "
    page.locator("#expr").press_sequentially(expr)
    data = settled(page, expr)
    assert data["state"] == "error"
    assert data["error"] == "invalid_expression"
    answer = client.post("/v1/reach", json={"expr": expr})
    assert answer.status_code == 400
    position = answer.json()["error"]["position"]
    pointer = page.locator("#error-pointer").text_content() or ""
    line, caret = pointer.split("\n")
    assert line == expr
    assert caret.index("^") == position
    assert f"position {position}" in caret
    expect(page.locator("#error")).to_be_visible()
    assert any(e.startswith("400 POST ") and e.endswith("/v1/reach") for e in browse.error_responses)
    browse.snap(page, "syntax-error")


def test_unknown_segments_are_named(page: Page, browse: BrowserTest) -> None:
    expr = "even | nobody_here"
    page.locator("#expr").press_sequentially(expr)
    data = settled(page, expr)
    assert data["error"] == "segment_not_found"
    expect(page.locator("#error-message")).to_have_text("Unknown segment: nobody_here")
    browse.snap(page, "unknown-segment")


def test_fixing_an_error_brings_the_reach_back(page: Page, browse: BrowserTest, client: httpx.Client) -> None:
    page.locator("#expr").press_sequentially("even &")
    assert settled(page, "even &")["state"] == "error"
    page.locator("#expr").press_sequentially(" vip")
    data = settled(page, "even & vip")
    assert int(data["reach"]) == api_reach(client, "even & vip")["reach"]
    expect(page.locator("#error")).to_be_hidden()
    page.locator("#clear").click()
    expect(page.locator("#expr")).to_have_value("")
    expect(page.locator("#reach")).to_have_attribute("data-state", "empty")
    browse.snap(page, "cleared")


def test_overlap_heatmap(page: Page, browse: BrowserTest, client: httpx.Client) -> None:
    names = ["even", "triple", "vip"]
    for name in names:
        page.locator(f"#segments-body input.pick[value='{name}']").check()
    page.locator("#overlap-run").click()
    expect(page.locator("#heatmap td.cell")).to_have_count(len(names) ** 2)
    shown = page.locator("#heatmap tr").evaluate_all(
        "rows => rows.slice(1).map(tr => [...tr.querySelectorAll('td.cell')].map(td => Number(td.dataset.value)))"
    )
    expected = client.post("/v1/overlap", json={"segments": names}).json()
    assert shown == expected["matrix"]
    assert shown[0][1] == len(SEED["even"] & SEED["triple"])  # the API's matrix is right, too
    expect(page.locator("#heatmap th.col-name")).to_have_text(names)
    sizes = [f"{name} ({size:,})" for name, size in zip(expected["segments"], expected["sizes"])]
    expect(page.locator("#heatmap th[scope=row]")).to_have_text(sizes)
    expect(page.locator("#heatmap-legend")).to_be_visible()
    browse.snap(page, "heatmap")


def test_the_page_asks_for_an_api_key_when_the_api_needs_one(browse: BrowserTest, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'secured.db'}"
    seed_store(url)
    key, writer = "page-reader-5d1e", "page-writer-9e07"
    with start_api_server(url, {"SEGMENTS_API_KEYS": f"{key}:read;{writer}:read,write"}) as server:
        secured = browse.open(f"{server.base_url}/")
        expect(secured.locator("#auth")).to_be_visible()
        expect(secured.locator("#status")).to_have_text("an API key is required")
        expect(secured.locator("#segments-body tr")).to_have_count(0)
        assert any(e.startswith("401 GET ") for e in browse.error_responses)
        browse.snap(secured, "key-required")
        secured.locator("#api-key").press_sequentially(key)
        secured.locator("#auth button[type=submit]").click()
        expect(secured.locator("#segments-body tr")).to_have_count(len(SEED))
        secured.locator("#expr").press_sequentially("even & vip")
        data = settled(secured, "even & vip")
        assert int(data["reach"]) == len(SEED["even"] & SEED["vip"])
        browse.snap(secured, "key-accepted")

        # saving needs the write scope: the page says so and asks for another key
        secured.locator("#save-name").fill("even_vip")
        secured.locator("#save-segment").click()
        expect(secured.locator("#status")).to_have_text("this API key lacks the write scope")
        expect(secured.locator("#auth")).to_be_visible()
        expect(secured.locator("#save-error strong")).to_have_text(
            "Not saved: saving needs an API key with the write scope"
        )
        assert any(e.startswith("403 PUT ") for e in browse.error_responses)
        browse.snap(secured, "write-scope-needed")
        secured.locator("#api-key").fill(writer)
        secured.locator("#auth button[type=submit]").click()
        secured.locator("#save-segment").click()
        size = len(SEED["even"] & SEED["vip"])
        expect(secured.locator("#save-result")).to_have_text(
            f"Saved the frozen segment even_vip · {size} users · version 1"
        )
        saved = httpx.get(
            f"{server.base_url}/v1/segments/even_vip", headers={"Authorization": f"Bearer {key}"}
        )
        assert saved.status_code == 200 and saved.json()["cardinality"] == size
        browse.snap(secured, "write-key-accepted")
