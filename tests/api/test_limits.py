"""Bounded resources per request, over a real uvicorn process: body sizes, parse work, slow bodies.

* Queries (reach, overlap) take a small body (``SEGMENTS_MAX_QUERY_BODY_BYTES``,
  64 KiB): a 60 MiB reach body is refused with 413 before it is read, and
  expressions that fit are parsed in the threadpool and refused with 400 at
  the first limit crossed. Meanwhile ``/healthz`` keeps answering and the
  server's memory (``VmHWM`` in ``/proc/<pid>/status``) stays bounded.
* JSON ID lists have their own limit (``SEGMENTS_MAX_JSON_BODY_BYTES``, 8 MiB);
  the 413 names it and points to the binary form, which takes large sets.
* A body must arrive within ``SEGMENTS_BODY_TIMEOUT`` seconds: half-sent
  bodies are answered 408 and their connections closed.

The figures (latencies, memory) are printed; the assertions are on what was
answered and on generous memory bounds, never on time.
"""

from __future__ import annotations

import json
import random
import selectors
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from pyroaring import BitMap

from tests.api.conftest import seed_store
from tests.support.api_server import start_api_server
from tests.support.raw_http import HealthProbe, RawResponse, chunked, exchange, request_head, slices

MiB = 1 << 20
JSON = {"Content-Type": "application/json"}


def error_code(response: RawResponse) -> str:
    assert response.headers["content-type"] == "application/json", response.body[:200]
    code: str = json.loads(response.body)["error"]["code"]
    return code


def wide_tree_body(size: int) -> bytes:
    """``{"expr": {"or": [{"segment": "even"}, ...]}}`` of about ``size`` bytes."""
    item = b'{"segment": "even"}, '
    return b'{"expr": {"or": [' + item * (size // len(item)) + b'{"segment": "even"}]}}'


def _mib(n: int) -> str:
    return f"{n / MiB:.1f} MiB"


def test_huge_and_hostile_queries_are_refused_while_healthz_answers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    seed_store(url, {"even": set(range(0, 100_000, 2)), "triple": set(range(0, 100_000, 3))})
    huge = wide_tree_body(60 * MiB)
    deep_tree = '{"segment": "even"}'
    for _ in range(2_000):
        deep_tree = f'{{"not": {deep_tree}}}'
    small_hostile: list[bytes] = [
        json.dumps({"expr": "(" * 30_000 + "even" + ")" * 30_000}).encode(),
        json.dumps({"expr": "~" * 60_000 + "even"}).encode(),
        json.dumps({"expr": " | ".join(["even"] * 9_000)}).encode(),
        json.dumps({"expr": {"or": [{"segment": "even"}] * 3_000}}).encode(),
        f'{{"expr": {deep_tree}}}'.encode(),
    ]
    with start_api_server(url) as api:
        assert httpx.post(f"{api.base_url}/v1/reach", json={"expr": "even & triple"}).status_code == 200
        before = api.memory()
        announced = request_head("POST", "/v1/reach", {**JSON, "Content-Length": str(len(huge))})
        streamed = request_head("POST", "/v1/reach", {**JSON, "Transfer-Encoding": "chunked"})
        overlap = request_head("POST", "/v1/overlap", {**JSON, "Content-Length": str(len(huge))})
        with HealthProbe(api.base_url) as probe:
            started = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                big = list(pool.map(lambda _: exchange(api.port, announced, slices(huge)), range(4)))
            big.append(exchange(api.port, streamed, chunked(slices(huge))))
            big.append(exchange(api.port, overlap, slices(huge)))
            small = [
                exchange(
                    api.port, request_head("POST", "/v1/reach", {**JSON, "Content-Length": str(len(b))}), [b]
                )
                for b in small_hostile
            ]
            took = time.perf_counter() - started
        after = api.memory()
        print(
            f"\n{len(big)} bodies of {_mib(len(huge))} and {len(small)} hostile expressions answered in {took:.2f} s: "
            f"{[r.status for r in big]} {[r.status for r in small]}; {probe.summary()}; "
            f"server RSS {_mib(before.rss)} -> {_mib(after.rss)}, peak {_mib(before.peak)} -> {_mib(after.peak)} "
            f"(+{_mib(after.peak - before.rss)})"
        )
        assert probe.statuses and set(probe.statuses) == {200}, probe.failures[:3]
        for response in big:
            assert response.status == 413, response.body[:300]
            assert error_code(response) == "body_too_large"
            assert "SEGMENTS_MAX_QUERY_BODY_BYTES" in json.loads(response.body)["error"]["message"]
            assert response.closed  # the unread rest of the body is not waited for
        for response in small:
            assert response.status == 400, response.body[:300]
            assert error_code(response) in {"invalid_expression", "invalid_json"}
        assert after.peak - before.rss < 200 * MiB
        assert httpx.post(f"{api.base_url}/v1/reach", json={"expr": "even & triple"}).json()["reach"] == len(
            set(range(0, 100_000, 6))
        )


def _json_ids_body(ids: list[int]) -> bytes:
    return json.dumps({"ids": ids}, separators=(",", ":")).encode()


def test_json_id_lists_have_their_own_limit_and_a_bounded_cost(tmp_path: Path) -> None:
    """Six concurrent 60 MiB JSON ID lists are refused unread; six just under the JSON limit are applied."""
    rng = random.Random(20240811)
    big_ids = sorted(rng.sample(range(1 << 32), 6_000_000))
    big = _json_ids_body(big_ids)
    assert 50 * MiB < len(big) < 64 * MiB  # under the general limit, over the JSON one
    # the IDs of a 10M-user base (dense), so the figure is the body's cost more than the store's
    fitting = [sorted(rng.sample(range(10_000_000), 900_000)) for _ in range(6)]
    bodies = [_json_ids_body(ids) for ids in fitting]
    assert all(6 * MiB < len(b) < 8 * MiB for b in bodies)
    with start_api_server(f"sqlite:///{tmp_path / 'ids.db'}") as api:
        base = api.memory()
        with ThreadPoolExecutor(6) as pool:
            refused = list(
                pool.map(
                    lambda i: exchange(
                        api.port,
                        request_head(
                            "PUT", f"/v1/segments/big{i}", {**JSON, "Content-Length": str(len(big))}
                        ),
                        slices(big),
                    ),
                    range(6),
                )
            )
        after_refused = api.memory()
        with ThreadPoolExecutor(6) as pool, httpx.Client(base_url=api.base_url, timeout=120) as c:
            applied = list(
                pool.map(lambda i: c.put(f"/v1/segments/fit{i}", content=bodies[i], headers=JSON), range(6))
            )
        after_applied = api.memory()
        print(
            f"\nserver RSS {_mib(base.rss)}; 6 concurrent {_mib(len(big))} JSON bodies: "
            f"{[r.status for r in refused]}, peak {_mib(after_refused.peak)} (+{_mib(after_refused.peak - base.rss)}); "
            f"6 concurrent {_mib(len(bodies[0]))} JSON bodies: {[r.status_code for r in applied]}, "
            f"peak {_mib(after_applied.peak)} (+{_mib(after_applied.peak - base.rss)})"
        )
        for response in refused:
            assert response.status == 413, response.body[:300]
            error = json.loads(response.body)["error"]
            assert error["code"] == "body_too_large"
            assert error["limit"] == 8 * MiB
            assert "SEGMENTS_MAX_JSON_BODY_BYTES" in error["message"]
            assert "application/octet-stream" in error["message"]
        for ids, response in zip(fitting, applied):
            assert response.status_code == 200, response.text[:300]
            assert response.json()["cardinality"] == len(ids)
        assert after_refused.peak - base.rss < 200 * MiB
        assert after_applied.peak - base.rss < 512 * MiB
        # the form the 413 points to takes the large set
        with httpx.Client(base_url=api.base_url, timeout=120) as c:
            binary = c.put(
                "/v1/segments/big0",
                content=BitMap(big_ids).serialize(),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert binary.status_code == 200, binary.text
            assert binary.json()["cardinality"] == len(big_ids)
            assert sorted(s["name"] for s in c.get("/v1/segments").json()["segments"]) == [
                "big0",
                *(f"fit{i}" for i in range(6)),
            ]


HALF_SENT = 200


def _half_sent(port: int, i: int) -> socket.socket:
    """A request whose headers announce 1000 bytes of body, of which 10 are sent."""
    method, path, media = [
        ("PUT", f"/v1/segments/slow{i}", "application/json"),
        ("POST", f"/v1/segments/slow{i}/add", "application/octet-stream"),
        ("POST", "/v1/reach", "application/json"),
        ("POST", "/v1/overlap", "application/json"),
    ][i % 4]
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        request_head(method, path, {"Content-Type": media, "Content-Length": "1000"}) + b'{"ids": [1'
    )
    return sock


def test_half_sent_bodies_time_out_and_the_server_keeps_serving(tmp_path: Path) -> None:
    timeout = 1.0
    with start_api_server(
        f"sqlite:///{tmp_path / 'slow.db'}", {"SEGMENTS_BODY_TIMEOUT": str(timeout)}
    ) as api:
        answers: dict[int, bytes] = {}
        closed: dict[int, float] = {}
        started = time.monotonic()
        socks = [_half_sent(api.port, i) for i in range(HALF_SENT)]
        selector = selectors.DefaultSelector()
        for i, sock in enumerate(socks):
            sock.setblocking(False)
            answers[i] = b""
            selector.register(sock, selectors.EVENT_READ, i)
        with HealthProbe(api.base_url) as probe, httpx.Client(base_url=api.base_url, timeout=30) as c:
            served = c.put("/v1/segments/meanwhile", json={"ids": [1, 2, 3]})
            deadline = started + timeout + 30
            while len(closed) < HALF_SENT and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=0.5):
                    i = key.data
                    try:
                        chunk = socks[i].recv(65536)
                    except ConnectionResetError:
                        chunk = b""
                    if chunk:
                        answers[i] += chunk
                    else:
                        closed[i] = time.monotonic() - started
                        selector.unregister(socks[i])
            still_open = HALF_SENT - len(closed)
            listed = c.get("/v1/segments").json()["segments"]
        selector.close()
        for sock in socks:
            sock.close()
        statuses = sorted({a.split(b"\r\n", 1)[0].decode("latin-1") for a in answers.values() if a})
        print(
            f"\n{len(closed)}/{HALF_SENT} half-sent requests closed by the server "
            f"(last after {max(closed.values(), default=0):.1f} s, body timeout {timeout} s), "
            f"{still_open} still open at the deadline; answers {statuses}; {probe.summary()}"
        )
        assert still_open == 0
        assert statuses == ["HTTP/1.1 408 Request Timeout"]
        for answer in answers.values():
            body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            assert body["error"]["code"] == "body_timeout"
        assert served.status_code == 200
        assert probe.statuses and set(probe.statuses) == {200}
        assert [s["name"] for s in listed] == ["meanwhile"]  # no half-sent write was applied
        assert "Traceback" not in api.output()
