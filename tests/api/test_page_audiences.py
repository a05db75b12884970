"""The page's audience and time features, in headless Chromium against a real ``segments serve``.

The store is filled through the library: plain segments (``active`` with three
versions, so it has a size history), a windowed segment ``paid_bill`` with
buckets on several days (``create_windowed`` + ``add(at=...)``), and two
audiences. The tests drive the page as a person would (clicking names and the
window menu, typing, saving, opening detail views) and compare what it draws,
read back from the charts' data attributes and tooltips, with the API's
answers, and with answers computed from the sets the store was filled with.
Screenshots of each state go to ``test-artifacts/browser/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Page, expect
from pyroaring import BitMap

import segments
from tests.api.test_page import settled
from tests.support.api_server import ApiServer, start_api_server
from tests.support.browser import BrowserTest

UNIVERSE = set(range(60_000))
PLAIN: dict[str, set[int]] = {
    "all": UNIVERSE,
    "card_gold": {i for i in UNIVERSE if i % 5 == 0},
    "crypto_interest": {i for i in UNIVERSE if i % 7 == 0 or i % 15 == 0},
    "churned": {i for i in UNIVERSE if i % 11 == 0 and i % 5 != 0},
    **{f"interest_{k:02d}": {i for i in UNIVERSE if i % (k + 17) == 0} for k in range(12)},
}
#: ``active`` is written three times: its history is these sizes, oldest first.
ACTIVE_STEPS = [set(range(30_000)), set(range(40_000)), set(range(5_000, 40_000))]
#: paid_bill's buckets: days before today -> the users who paid a bill that day.
PAID_DAYS: dict[int, set[int]] = {d: set(range(d * 150, d * 150 + 2_000)) for d in (0, 2, 5, 20, 45, 120)}
AUDIENCES = {
    "gold_crypto": ("card_gold & crypto_interest", "gold card holders into crypto"),
    "gold_active": ("card_gold & active", "gold card holders still active"),
}


#: The UTC day the buckets count back from (a run across midnight UTC could see two different days).
TODAY = datetime.now(UTC).date()


def fill(url: str) -> None:
    """Write the store through the library (and fix TODAY then, not when the module was collected)."""
    global TODAY
    now = datetime.now(UTC)
    TODAY = now.date()
    with segments.connect(url) as segs:
        for name, ids in PLAIN.items():
            segs.replace(name, sorted(ids))
        segs.replace("active", sorted(ACTIVE_STEPS[0]))
        segs.add("active", sorted(ACTIVE_STEPS[1] - ACTIVE_STEPS[0]))
        segs.remove("active", sorted(ACTIVE_STEPS[1] - ACTIVE_STEPS[2]))
        segs.create_windowed("paid_bill", granularity="day", retention=400)
        for days, ids in PAID_DAYS.items():
            segs.add("paid_bill", sorted(ids), at=now - timedelta(days=days))
        for name, (expr, description) in AUDIENCES.items():
            segs.define_audience(name, expr, description)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('page-audiences') / 'segments.db'}"
    fill(url)
    with start_api_server(url) as server:
        yield server


def open_page(browse: BrowserTest, url: str) -> Page:
    """The page at ``url`` once both lists are shown (tests that save add to them)."""
    page = browse.open(url)
    expect(page.locator("#segments-body tr[data-name=paid_bill]")).to_have_count(1)
    expect(page.locator("#audiences-body tr[data-name=gold_active]")).to_have_count(1)
    return page


@pytest.fixture
def page(api: ApiServer, browse: BrowserTest) -> Page:
    return open_page(browse, f"{api.base_url}/")


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def paid_model(as_of: date, days: int) -> set[int]:
    """paid_bill[<days>d] as of the UTC day ``as_of``, from the sets written."""
    first = as_of - timedelta(days=days - 1)
    out: set[int] = set()
    for back, ids in PAID_DAYS.items():
        day = TODAY - timedelta(days=back)
        if first <= day <= as_of:
            out |= ids
    return out


def trend_points(page: Page, selector: str = "#trend") -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = page.locator(f"{selector} circle.point").evaluate_all(
        "cs => cs.map(c => ({series: c.dataset.series, at: c.dataset.at, day: c.dataset.day,"
        " value: Number(c.dataset.value), version: c.dataset.version}))"
    )
    return points


def wait_panel(page: Page, selector: str, expr: str) -> None:
    """Wait until the panel ``selector`` shows its answer for ``expr``."""
    page.wait_for_function(
        "([sel, expr]) => { const p = document.querySelector(sel);"
        " return p.dataset.expr === expr && ['ok', 'error'].includes(p.dataset.state); }",
        arg=[selector, expr],
    )
    expect(page.locator(selector)).to_have_attribute("data-state", "ok")


def test_segment_list_marks_windowed_segments_and_draws_sparklines(
    page: Page, browse: BrowserTest, client: httpx.Client
) -> None:
    listed = ok(client.get("/v1/segments"))
    assert [w["name"] for w in listed["windowed"]] == ["paid_bill"]
    windowed = page.locator("#segments-body tr[data-kind=windowed]")
    expect(windowed).to_have_count(1)
    expect(windowed).to_have_attribute("data-name", "paid_bill")
    expect(windowed.locator(".badge.windowed")).to_have_text("◷ day")
    expect(windowed.locator("td.num")).to_have_text(f"{len(set().union(*PAID_DAYS.values())):,}")
    rows = len(listed["segments"]) + len(listed["windowed"])
    expect(page.locator("#segments-body tr")).to_have_count(rows)
    expect(page.locator("#segments-body td.trend svg.sparkline")).to_have_count(rows)
    drawn = dict(
        page.locator("#segments-body tr").evaluate_all(
            "rows => rows.map(tr => [tr.dataset.name, tr.querySelector('svg.sparkline').dataset.values])"
        )
    )
    for name, values in drawn.items():
        history = ok(client.get(f"/v1/segments/{quote(name)}/history"))["points"]
        assert values == ",".join(str(p["cardinality"]) for p in history), name
    assert drawn["active"] == ",".join(str(len(s)) for s in ACTIVE_STEPS)
    # a windowed segment's trend: one point per bucket, oldest first, each the bucket's size
    assert drawn["paid_bill"] == ",".join(str(len(PAID_DAYS[d])) for d in sorted(PAID_DAYS, reverse=True))
    page.locator("#segments-body tr[data-name=active] svg.sparkline").hover()
    expect(page.locator("#tooltip")).to_have_text("active: 3 versions kept, from 30,000 to 35,000 users")
    browse.snap(page, "sparklines")


def test_window_menu_and_the_reach_over_90_days(
    page: Page, browse: BrowserTest, client: httpx.Client
) -> None:
    menu = page.locator("#window-menu")
    expect(menu).to_be_visible()
    expect(menu.locator("button[data-window='7d']")).to_be_disabled()
    page.locator("#segments-body button[data-insert=paid_bill]").click()
    expect(menu).to_have_attribute("data-target", "paid_bill")
    menu.locator("button[data-window='7d']").click()
    expect(page.locator("#expr")).to_have_value("paid_bill[7d]")
    data = settled(page, "paid_bill[7d]")
    assert int(data["reach"]) == ok(client.post("/v1/reach", json={"expr": "paid_bill[7d]"}))["reach"]
    assert int(data["reach"]) == len(paid_model(TODAY, 7))

    wait_panel(page, "#trend", "paid_bill[7d]")
    expect(page.locator("#trend")).to_have_attribute("data-kind", "reach-history")
    chart = page.locator("#trend svg.chart")
    start, end = chart.get_attribute("data-from"), chart.get_attribute("data-to")
    assert start and end
    answer = ok(client.post("/v1/reach/history", json={
        "expr": "paid_bill[7d]", "from": start[:10], "to": end[:10], "step": "1d",
    }))["points"]  # fmt: skip
    drawn = trend_points(page)
    assert len(drawn) == len(answer) == 90
    assert [(p["day"], p["value"]) for p in drawn] == [(a["at"][:10], a["reach"]) for a in answer]
    assert [p["value"] for p in drawn] == [
        len(paid_model(date.fromisoformat(p["day"]), 7)) for p in drawn
    ]  # and the API's numbers are the sets' own
    assert drawn[-1]["value"] == int(data["reach"])
    busiest = max(drawn, key=lambda p: p["value"])
    page.locator(f"#trend circle.point[data-day='{busiest['day']}']").hover()
    expect(page.locator("#tooltip")).to_have_text(f"{busiest['day']}: {busiest['value']:,} users")
    browse.snap(page, "window-7d-reach-history")

    # the cursor is on paid_bill[7d]: another choice replaces its window
    menu.locator("button[data-window='30d']").click()
    expect(page.locator("#expr")).to_have_value("paid_bill[30d]")
    assert int(settled(page, "paid_bill[30d]")["reach"]) == len(paid_model(TODAY, 30))
    first, last = TODAY - timedelta(days=21), TODAY - timedelta(days=1)
    page.locator("#window-from").fill(first.isoformat())
    page.locator("#window-to").fill(last.isoformat())
    page.locator("#window-range").click()
    ranged = f"paid_bill[{first}..{last}]"
    expect(page.locator("#expr")).to_have_value(ranged)
    expected = set().union(*(ids for back, ids in PAID_DAYS.items() if 1 <= back <= 21))
    assert int(settled(page, ranged)["reach"]) == len(expected)
    browse.snap(page, "window-range")

    # typing a window works as well, mixed with plain segments
    page.locator("#clear").click()
    typed = "paid_bill[7d] & card_gold"
    page.locator("#expr").press_sequentially(typed)
    data = settled(page, typed)
    assert int(data["reach"]) == len(paid_model(TODAY, 7) & PLAIN["card_gold"])
    expect(menu).to_have_attribute("data-target", "paid_bill")
    expect(menu.locator("button[data-window='7d']")).to_have_class("active")
    wait_panel(page, "#trend", typed)
    assert trend_points(page)[-1]["value"] == int(data["reach"])
    browse.snap(page, "typed-window")


def test_without_windows_the_chart_shows_each_segments_size(
    page: Page, browse: BrowserTest, client: httpx.Client
) -> None:
    expr = "active - churned"
    page.locator("#expr").fill(expr)
    settled(page, expr)
    wait_panel(page, "#trend", expr)
    expect(page.locator("#trend")).to_have_attribute("data-kind", "sizes")
    expect(page.locator("#trend .legend li")).to_have_text(["active", "churned"])
    drawn = trend_points(page)
    for name in ("active", "churned"):
        history = ok(client.get(f"/v1/segments/{name}/history"))["points"]
        mine = [p for p in drawn if p["series"] == name]
        assert [(int(p["version"]), p["value"]) for p in mine] == [
            (h["version"], h["cardinality"]) for h in history
        ]
    assert [p["value"] for p in drawn if p["series"] == "active"] == [len(s) for s in ACTIVE_STEPS]
    browse.snap(page, "segment-sizes")


def test_saving_an_audience_and_a_frozen_segment(
    page: Page, browse: BrowserTest, client: httpx.Client, fresh_name: str
) -> None:
    expr = "(card_gold | crypto_interest) & active - churned"
    page.locator("#expr").fill(expr)
    reach = int(settled(page, expr)["reach"])
    assert reach == len((PLAIN["card_gold"] | PLAIN["crypto_interest"]) & ACTIVE_STEPS[2] - PLAIN["churned"])
    audience = f"{fresh_name}_aud"
    page.locator("#save-name").fill(audience)
    page.locator("#save-description").fill("gold payers, not churned")
    page.locator("#save-audience").click()
    expect(page.locator("#save-result")).to_be_visible()
    expect(page.locator("#save-result")).to_contain_text(f"Saved the audience {audience}")
    stored = ok(client.get(f"/v1/audiences/{audience}"))
    assert stored["description"] == "gold payers, not churned"
    assert stored["reach"] == reach
    assert ok(client.post("/v1/reach", json={"expr": stored["expr"]}))["reach"] == reach
    expect(page.locator(f"#audiences-body tr[data-name={audience}]")).to_have_count(1)
    browse.snap(page, "saved-audience")

    # a frozen segment, of an expression with a window this time
    windowed = "card_gold & paid_bill[30d] - churned"
    page.locator("#expr").fill(windowed)
    reach = int(settled(page, windowed)["reach"])
    assert reach == len(PLAIN["card_gold"] & paid_model(TODAY, 30) - PLAIN["churned"])
    frozen = f"{fresh_name}_seg"
    page.locator("#save-name").fill(frozen)
    page.locator("#save-segment").click()
    expect(page.locator("#save-result")).to_contain_text(
        f"Saved the frozen segment {frozen} · {reach:,} users"
    )
    info = ok(client.get(f"/v1/segments/{frozen}"))
    assert info["cardinality"] == reach
    expect(page.locator(f"#segments-body tr[data-name={frozen}] td.num")).to_have_text(f"{reach:,}")
    browse.snap(page, "saved-segment")

    # the audience's name cannot also be a segment: the 409 is shown as the API says it
    page.locator("#save-name").fill(audience)
    page.locator("#save-segment").click()
    error = page.locator("#save-error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("data-code", "name_taken")
    refused = client.put(f"/v1/segments/{audience}", json={"expr": windowed})
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "name_taken"
    expect(error.locator("strong")).to_have_text(f"Not saved: the name “{audience}” is already taken")
    expect(error.locator(".message")).to_have_text(refused.json()["error"]["message"])
    assert any(e.startswith("409 PUT ") for e in browse.error_responses)
    browse.snap(page, "name-taken")

    # saving an existing audience again asks, then makes a new definition version
    page.locator("#expr").fill("card_gold & active")
    settled(page, "card_gold & active")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#save-audience").click()
    expect(page.locator("#save-result")).to_contain_text("definition version 2")
    redefined = ok(client.get(f"/v1/audiences/{audience}"))
    assert redefined["version"] == 2
    assert redefined["reach"] == len(PLAIN["card_gold"] & ACTIVE_STEPS[2])


def test_an_audience_loads_by_click_and_the_url_shares_it(
    page: Page, browse: BrowserTest, client: httpx.Client, api: ApiServer
) -> None:
    stored = ok(client.get("/v1/audiences/gold_crypto"))
    page.locator("#audiences-body button[data-load=gold_crypto]").click()
    expect(page.locator("#expr")).to_have_value(stored["expr"])
    expect(page.locator("#save-name")).to_have_value("gold_crypto")
    data = settled(page, stored["expr"])
    assert int(data["reach"]) == stored["reach"] == len(PLAIN["card_gold"] & PLAIN["crypto_interest"])
    assert page.evaluate("location.hash") == f"#expr={quote(stored['expr'], safe='')}"
    link = page.locator("#share-link").get_attribute("href")
    assert link == f"/#expr={quote(stored['expr'], safe='')}"
    browse.snap(page, "audience-loaded")

    shared = open_page(browse, f"{api.base_url}{link}")
    expect(shared.locator("#expr")).to_have_value(stored["expr"])
    assert int(settled(shared, stored["expr"])["reach"]) == stored["reach"]
    browse.snap(shared, "shared-link")

    # a link with a window: the composer, the reach and the reach over time come back
    expr = "paid_bill[30d] & card_gold | gold_active"
    windowed = open_page(browse, f"{api.base_url}/#expr={quote(expr, safe='')}")
    expect(windowed.locator("#expr")).to_have_value(expr)
    expected = paid_model(TODAY, 30) & PLAIN["card_gold"] | PLAIN["card_gold"] & ACTIVE_STEPS[2]
    assert int(settled(windowed, expr)["reach"]) == len(expected)
    wait_panel(windowed, "#trend", expr)
    expect(windowed.locator("#trend")).to_have_attribute("data-kind", "reach-history")
    assert trend_points(windowed, "#trend")[-1]["value"] == len(expected)
    browse.snap(windowed, "shared-link-windowed")

    expr = "gold_active | churned"
    queried = open_page(browse, f"{api.base_url}/?expr={quote(expr)}")
    expect(queried.locator("#expr")).to_have_value(expr)
    expected = PLAIN["card_gold"] & ACTIVE_STEPS[2] | PLAIN["churned"]
    assert int(settled(queried, expr)["reach"]) == len(expected)
    assert queried.evaluate("location.hash") == f"#expr={quote(expr, safe='')}"
    browse.snap(queried, "query-link")


def test_insights_chart_shows_the_api_numbers(page: Page, browse: BrowserTest, client: httpx.Client) -> None:
    expr = "card_gold"
    page.locator("#expr").fill(expr)
    settled(page, expr)
    wait_panel(page, "#insights", expr)
    answer = ok(client.post("/v1/insights", json={"expr": expr}))
    ranked = [r for r in answer["rows"] if r["index"] is not None]
    assert len(ranked) > 12
    expected = ranked[:6] + ranked[-6:]
    bars = page.locator("#insights g.bar").evaluate_all(
        "gs => gs.map(g => ({segment: g.dataset.segment, both: Number(g.dataset.both),"
        " index: Number(g.dataset.index), share_of_audience: Number(g.dataset.shareOfAudience),"
        " share_of_universe: Number(g.dataset.shareOfUniverse)}))"
    )
    assert bars == expected
    expect(page.locator("#insights text.gap")).to_have_text(f"⋯ {len(ranked) - 12} more in between ⋯")
    gold, crypto = PLAIN["card_gold"], PLAIN["crypto_interest"]
    row = next(r for r in answer["rows"] if r["segment"] == "crypto_interest")
    assert row["both"] == len(gold & crypto)
    assert row["index"] == pytest.approx(len(gold & crypto) / len(gold) / (len(crypto) / len(UNIVERSE)) * 100)
    churned = next(r for r in answer["rows"] if r["segment"] == "churned")
    assert churned["both"] == 0 and churned["index"] == 0
    assert [b["segment"] for b in bars][-1] == "churned"
    page.locator("#insights g.bar[data-segment=crypto_interest]").hover()
    tip = page.locator("#tooltip")
    expect(tip).to_be_visible()
    expect(tip).to_have_text(
        f"crypto_interest: index {round(row['index']):,} · {row['both']:,} users in both · "
        f"{100 * row['share_of_audience']:.1f}% of the audience vs {100 * row['share_of_universe']:.1f}% of the universe"
    )
    summary = page.locator("#insights-summary").text_content() or ""
    assert summary.startswith(f"{answer['reach']:,} of {answer['universe']:,} users")
    browse.snap(page, "insights")


def test_detail_views_and_export_links(page: Page, browse: BrowserTest, client: httpx.Client) -> None:
    dialog = page.locator("#detail")
    # a plain segment: info, every version, its size trend and the exports
    page.locator("#segments-body button.info[data-detail=active]").click()
    expect(dialog).to_have_attribute("data-state", "ok")
    info = ok(client.get("/v1/segments/active"))
    expect(dialog.locator("dd[data-key=cardinality]")).to_have_text(f"{info['cardinality']:,}")
    expect(dialog.locator("dd[data-key=version]")).to_have_text(str(info["version"]))
    history = ok(client.get("/v1/segments/active/history"))["points"]
    shown = dialog.locator("#detail-versions tbody tr").evaluate_all(
        "rows => rows.map(r => Number(r.dataset.version))"
    )
    assert shown == [p["version"] for p in reversed(history)]
    wait_panel(page, "#detail-trend", "active")
    assert [p["value"] for p in trend_points(page, "#detail-trend")] == [len(s) for s in ACTIVE_STEPS]
    check_exports(page, client, "active", ACTIVE_STEPS[2])
    browse.snap(page, "detail-segment")
    page.locator("#detail-close").click()
    expect(dialog).to_be_hidden()

    # an audience: its definition, reach, versions and exports
    page.locator("#audiences-body button.info[data-detail=gold_active]").click()
    expect(dialog).to_have_attribute("data-state", "ok")
    stored = ok(client.get("/v1/audiences/gold_active"))
    expect(dialog.locator("dd[data-key=expr]")).to_have_text(stored["expr"])
    expect(dialog.locator("dd[data-key=reach]")).to_have_text(f"{stored['reach']:,}")
    definitions = ok(client.get("/v1/audiences/gold_active/history"))["definitions"]
    shown = dialog.locator("#detail-versions tbody tr").evaluate_all(
        "rows => rows.map(r => Number(r.dataset.version))"
    )
    assert shown == sorted((d["version"] for d in definitions), reverse=True)
    check_exports(page, client, "gold_active", PLAIN["card_gold"] & ACTIVE_STEPS[2])
    browse.snap(page, "detail-audience")
    dialog.locator("#detail-actions button", has_text="Load into the composer").click()
    expect(dialog).to_be_hidden()
    assert int(settled(page, stored["expr"])["reach"]) == stored["reach"]

    # a windowed segment: its buckets, users per day, exports of the whole retention
    page.locator("#segments-body button.info[data-detail=paid_bill]").click()
    expect(dialog).to_have_attribute("data-state", "ok")
    expect(dialog.locator("#detail-versions tbody tr")).to_have_count(len(PAID_DAYS))
    wait_panel(page, "#detail-trend", "paid_bill[1d]")
    per_day = {p["day"]: p["value"] for p in trend_points(page, "#detail-trend")}
    assert len(per_day) == 90
    for back, ids in PAID_DAYS.items():
        day = (TODAY - timedelta(days=back)).isoformat()
        if day in per_day:
            assert per_day[day] == len(ids), day
    assert sum(per_day.values()) == sum(len(ids) for back, ids in PAID_DAYS.items() if back < 90)
    check_exports(page, client, "paid_bill", set().union(*PAID_DAYS.values()))
    browse.snap(page, "detail-windowed")


def check_exports(page: Page, client: httpx.Client, name: str, members: set[int]) -> None:
    """The detail view's export links, fetched: each format answers the members."""
    links = page.locator("#detail-export a.export-link").evaluate_all(
        "as => as.map(a => [a.dataset.format, a.getAttribute('href'), a.getAttribute('download')])"
    )
    assert [f for f, _, _ in links] == ["csv", "ndjson", "roaring"]
    kinds = {"csv": "text/csv", "ndjson": "application/x-ndjson", "roaring": "application/octet-stream"}
    for fmt, href, filename in links:
        assert filename == f"{name}.{fmt}"
        response = client.get(href)
        assert response.status_code == 200, (href, response.text[:200])
        assert response.headers["content-type"].split(";")[0] == kinds[fmt]
        if fmt == "csv":
            lines = response.text.splitlines()
            assert lines[0] == "user_id" and {int(x) for x in lines[1:]} == members
        elif fmt == "ndjson":
            assert {json.loads(x) for x in response.text.splitlines()} == members
        else:
            assert set(BitMap.deserialize(response.content)) == members


def test_window_errors_stay_clear(page: Page, browse: BrowserTest, client: httpx.Client) -> None:
    expr = "card_gold[7d]"
    page.locator("#expr").fill(expr)
    data = settled(page, expr)
    answer = client.post("/v1/reach", json={"expr": expr})
    assert answer.status_code == 400
    assert data["error"] == answer.json()["error"]["code"] == "bad_time"
    expect(page.locator("#error-message")).to_have_text(answer.json()["error"]["message"])
    browse.snap(page, "window-on-plain-segment")

    expr = "paid_bill[7x] & card_gold"
    page.locator("#expr").fill(expr)
    data = settled(page, expr)
    body = client.post("/v1/reach", json={"expr": expr}).json()["error"]
    assert data["error"] == body["code"] == "invalid_expression"
    line, caret = (page.locator("#error-pointer").text_content() or "").split("\n")
    assert line == expr and caret.index("^") == body["position"]
    expect(page.locator("#error-message")).to_have_text(body["message"])
    expect(page.locator("#trend")).to_have_attribute("data-state", "empty")
    browse.snap(page, "bad-window")
