"""Structured logs of ``segments serve`` (JSON lines, request IDs) and its graceful shutdown.

Read from what the real process writes: every line is a JSON object with
``ts``, ``level``, ``logger`` and ``msg``; each request has one access line
with method, route template, status, duration and the request ID, which is
the caller's ``X-Request-ID`` when it is valid and a fresh one otherwise, and
is returned in the response. ``SEGMENTS_LOG_FORMAT=text`` gives readable
lines; an unknown format stops the command. On SIGTERM a response being
streamed is finished and the app's shutdown runs before the process exits.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import segments
from tests.faults.conftest import wait_for
from tests.support.api_server import ApiServer, start_api_server

pytestmark = pytest.mark.timeout(120)

BIG = 2_000_000


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('logs') / 'segments.db'}"
    with segments.connect(url) as segs:
        segs.replace("all", range(1000))
        segs.replace("big", range(BIG))
    return url


@pytest.fixture(scope="module")
def api(store_url: str) -> Iterator[ApiServer]:
    with start_api_server(store_url, args=["--log-level", "info"]) as server:
        yield server


def json_lines(output: str) -> list[dict[str, Any]]:
    lines = [line for line in output.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object
        assert isinstance(entry, dict), line
        assert {"ts", "level", "logger", "msg"} <= entry.keys(), line
        parsed.append(entry)
    return parsed


def access_line(server: ApiServer, request_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = [
            e
            for e in json_lines(server.output())
            if e["logger"] == "api.access" and e.get("request_id") == request_id
        ]
        return bool(found)

    wait_for(seen, 10, f"the access line of request {request_id}")
    assert len(found) == 1
    return found[0]


def test_access_lines_are_json_with_the_callers_request_id(api: ApiServer) -> None:
    with httpx.Client(base_url=api.base_url, timeout=30) as client:
        response = client.get("/v1/segments/all", headers={"X-Request-ID": "fault-test.42_abc"})
        missing = client.get("/v1/segments/nope", headers={"X-Request-ID": "fault-test.43"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "fault-test.42_abc"
    entry = access_line(api, "fault-test.42_abc")
    assert entry["level"] == "info"
    assert (
        entry["method"] == "GET"
        and entry["route"] == "/v1/segments/{name}"
        and entry["path"] == "/v1/segments/all"
    )
    assert entry["status"] == 200
    assert isinstance(entry["duration_ms"], float | int) and entry["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])
    assert missing.headers["x-request-id"] == "fault-test.43"
    assert access_line(api, "fault-test.43")["status"] == 404
    loggers = {e["logger"] for e in json_lines(api.output())}
    assert "uvicorn.error" in loggers  # uvicorn's own lines are JSON too


@pytest.mark.parametrize(
    "offered",
    [b"bad id!", b"x" * 129, b"", b"\xc3\xbcnicode", b"a/b", b"id;drop", b'{"json":1}'],
    ids=["space", "too-long", "empty", "non-ascii", "slash", "semicolon", "json"],
)
def test_an_invalid_request_id_is_replaced(api: ApiServer, offered: bytes) -> None:
    with httpx.Client(base_url=api.base_url, timeout=30) as client:
        response = client.get("/healthz", headers=[(b"X-Request-ID", offered)])
    given = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", given), given
    assert given != offered.decode("latin-1")
    assert access_line(api, given)["route"] == "/healthz"


def test_every_response_gets_an_id_even_errors_and_unknown_routes(api: ApiServer) -> None:
    with httpx.Client(base_url=api.base_url, timeout=30) as client:
        answers = [
            client.get("/no/such/route"),
            client.post("/v1/reach", content=b"{broken", headers={"Content-Type": "application/json"}),
            client.patch("/v1/segments/all"),
        ]
    ids = [a.headers["x-request-id"] for a in answers]
    assert [a.status_code for a in answers] == [404, 400, 405]
    assert len(set(ids)) == 3
    assert access_line(api, ids[0])["route"] == "<unmatched>"
    assert access_line(api, ids[1])["status"] == 400


def test_text_format(store_url: str) -> None:
    with start_api_server(store_url, {"SEGMENTS_LOG_FORMAT": "text"}, args=["--log-level", "info"]) as server:
        response = httpx.get(
            f"{server.base_url}/healthz", headers={"X-Request-ID": "text-mode-1"}, timeout=30
        )
        assert response.headers["x-request-id"] == "text-mode-1"
        wait_for(lambda: "request_id=text-mode-1" in server.output(), 10, "the text access line")
        output = server.output()
    line = next(line for line in output.splitlines() if "request_id=text-mode-1" in line)
    assert "api.access" in line and "GET /healthz 200" in line
    assert not line.startswith("{")
    assert "segments: ready: open" in output


def test_an_unknown_log_format_stops_serve(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")}
    env["SEGMENTS_LOG_FORMAT"] = "xml"
    result = subprocess.run(
        [sys.executable, "-m", "segments", "serve", "--store", f"sqlite:///{tmp_path}/x.db", "--port", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "SEGMENTS_LOG_FORMAT" in result.stderr and "json or text" in result.stderr


def test_sigterm_finishes_the_response_in_flight_then_shuts_down(store_url: str) -> None:
    with start_api_server(store_url, args=["--log-level", "info"]) as server:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            with client.stream("GET", "/v1/segments/big/export") as response:
                assert response.status_code == 200
                chunks = response.iter_bytes()
                received = next(chunks)
                server.process.terminate()  # SIGTERM while the export is being streamed
                for chunk in chunks:
                    received += chunk
        code = server.process.wait(30)
        output = server.output()
    lines = received.decode().split()
    assert len(lines) == BIG and lines[0] == "0" and lines[-1] == str(BIG - 1), "the stream was cut"
    # uvicorn re-raises the SIGTERM it handled once it has shut down, so the status is -15 (or 0)
    assert code in (0, -15)
    messages = [e["msg"] for e in json_lines(output)]
    assert "Shutting down" in messages and "Application shutdown complete." in messages
