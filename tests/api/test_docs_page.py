"""``/docs`` works with no internet: Swagger UI comes from the app itself (``api.routes.docs``), not a CDN.

The page is loaded in headless Chromium against a real uvicorn process; every
request it makes is recorded, and each must go to the app's own origin.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import Page, expect

from api.routes.docs import ASSETS, ASSETS_DIR, ASSETS_URL
from tests.support.api_server import ApiServer
from tests.support.browser import BrowserTest


def operations(schema: dict[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation the schema lists."""
    return {
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch", "head", "options"}
    }


def listings(schema: dict[str, Any]) -> int:
    """How many operation blocks Swagger UI shows: one per tag of each operation (untagged: one)."""
    return sum(
        len(item[method].get("tags") or ["default"])
        for path, item in schema["paths"].items()
        for method in item
        if (method.upper(), path) in operations(schema)
    )


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def open_docs(browse: BrowserTest, api: ApiServer, schema: dict[str, Any]) -> Page:
    page = browse.open(f"{api.base_url}/docs")
    expect(page.locator(".opblock")).to_have_count(listings(schema))
    return page


def test_docs_render_every_operation_from_the_apps_own_origin(
    api: ApiServer, browse: BrowserTest, client: httpx.Client
) -> None:
    schema = client.get("/openapi.json").json()
    page = open_docs(browse, api, schema)
    shown = page.locator(".opblock").evaluate_all(
        "blocks => blocks.map(b => [b.querySelector('.opblock-summary-method').textContent,"
        " b.querySelector('.opblock-summary-path').dataset.path])"
    )
    assert len(operations(schema)) > 10
    assert {(method, path) for method, path in shown} == operations(schema)
    tags = {tag for item in schema["paths"].values() for op in item.values() for tag in op.get("tags", [])}
    assert set(page.locator(".opblock-tag").all_text_contents()) == tags
    expect(page.get_by_role("heading", level=1)).to_contain_text(schema["info"]["title"])
    expect(page).to_have_title(re.compile(re.escape(schema["info"]["title"])))
    browse.snap(page, "operations")

    asked = {urlsplit(url).path for url in browse.requests}
    assert asked >= {"/docs", "/openapi.json", *(f"{ASSETS_URL}/{name}" for name in ASSETS)}
    assert [url for url in browse.requests if origin(url) != api.base_url] == []
    assert browse.error_responses == []


def test_try_it_out_calls_the_app(api: ApiServer, browse: BrowserTest, client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    page = open_docs(browse, api, schema)
    block = page.locator(".opblock", has=page.locator(".opblock-summary-path[data-path='/healthz']"))
    block.locator(".opblock-summary-control").click()
    block.locator("button.try-out__btn").click()
    block.locator("button.execute").click()
    status = block.locator(".live-responses-table .response .response-col_status")
    expect(status).to_have_text("200")
    body = block.locator(".live-responses-table .response-col_description pre").first
    expect(body).to_contain_text('"status": "ok"')
    browse.snap(page, "healthz-executed")
    assert f"{api.base_url}/healthz" in browse.requests
    assert [url for url in browse.requests if origin(url) != api.base_url] == []


def test_docs_html_names_only_the_apps_own_assets(client: httpx.Client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text
    referenced = set(re.findall(r'(?:href|src)="([^"]+)"', page.text))
    assert referenced == {f"{ASSETS_URL}/{name}" for name in ASSETS}


def test_assets_are_the_installed_package_files(client: httpx.Client) -> None:
    for name, media_type in ASSETS.items():
        response = client.get(f"{ASSETS_URL}/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == media_type
        assert response.content == (ASSETS_DIR / name).read_bytes()
        assert len(response.content) > 1000
    assert b"SwaggerUIBundle" in client.get(f"{ASSETS_URL}/swagger-ui-bundle.js").content


def test_other_asset_names_are_not_found(client: httpx.Client) -> None:
    for name in ["redoc.standalone.js", "..%2Fcore.py", "swagger-ui.css.map", "nothing"]:
        response = client.get(f"{ASSETS_URL}/{name}")
        assert response.status_code == 404, name
        assert response.json()["error"]["code"] == "not_found"
