"""``segments serve --store aerospike://...`` end to end: the HTTP API on the Aerospike backend."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.aerospike_fixture import AerospikeTarget, aerospike_url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def api(aerospike_target: AerospikeTarget) -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segments",
            "serve",
            "--store",
            aerospike_url(aerospike_target),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode(errors="replace") if process.stdout else ""
                pytest.fail(f"segments serve exited with {process.returncode}:\n{output}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("segments serve did not become ready in 30 s")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_serve_on_aerospike_end_to_end(api: str) -> None:
    with httpx.Client(base_url=api, timeout=10) as http:
        premium = list(range(0, 200_000, 3))  # four shards
        active = list(range(0, 200_000, 5))
        assert http.put("/v1/segments/premium", json={"ids": premium}).status_code == 200
        assert http.put("/v1/segments/active", json={"ids": active}).status_code == 200
        assert http.post("/v1/segments/active/add", json={"ids": [1, 2]}).status_code == 200
        assert http.post("/v1/segments/premium/remove", json={"ids": [0, 3]}).status_code == 200
        expected = (set(premium) - {0, 3}) & (set(active) | {1, 2})
        answer = http.post("/v1/reach", json={"expr": "premium & active"})
        assert answer.status_code == 200
        assert answer.json()["reach"] == len(expected)
        info = http.get("/v1/segments/premium").json()
        assert info["cardinality"] == len(premium) - 2 and info["version"] == 2
        assert sorted(http.get("/v1/users/15/segments").json()["segments"]) == ["active", "premium"]
        missing = http.post("/v1/reach", json={"expr": "premium & nothing"})
        assert missing.status_code == 404
        assert http.delete("/v1/segments/active").status_code in (200, 204)
        assert http.get("/v1/segments/active").status_code == 404
