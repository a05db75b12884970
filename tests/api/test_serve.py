"""``segments serve``: demo data on first start, configuration by flags and ``SEGMENTS_*`` variables, workers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from pyroaring import BitMap

from segments import demo
from tests.support.api_server import free_port, start_api_server

DEMO_USERS = 300_000


def test_demo_data_is_loaded_once_and_is_reproducible(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    args = ["--demo", "--demo-users", str(DEMO_USERS)]
    with start_api_server(url, args=args) as server:
        output = server.output()
        assert f"loading demo data: {DEMO_USERS:,} users" in output
        assert "demo: wrote 46 of 46 segments" in output
        assert f"ready: open {server.base_url}/" in output
        with httpx.Client(base_url=server.base_url) as c:
            listed = {s["name"]: s["cardinality"] for s in c.get("/v1/segments").json()["segments"]}
            expected = demo.generate(DEMO_USERS, demo.DEFAULT_SEED)
            assert listed == {name: len(members) for name, members in expected.items()}
            assert listed["all"] == DEMO_USERS
            gold_active = expected["card_gold"] & expected["active_30d"]
            reach = c.post("/v1/reach", json={"expr": "card_gold & active_30d - churned"}).json()["reach"]
            assert reach == len(gold_active - expected["churned"])
    with start_api_server(url, args=[*args, "--warm"]) as again:
        assert "already holds 46 segments; not loading demo data" in again.output()
        metrics = httpx.get(f"{again.base_url}/metrics").text
        assert "segments_cache_entries 46.0" in metrics.splitlines()  # --warm cached every segment


def test_demo_generator_is_seeded_and_realistic() -> None:
    first = demo.generate(150_000, seed=7)
    assert first == demo.generate(150_000, seed=7)
    assert first["country_us"] != demo.generate(150_000, seed=8)["country_us"]
    assert list(first) == demo.segment_names()
    assert 30 <= len(first) <= 60
    everyone = first["all"]
    assert everyone == BitMap(range(150_000))
    countries = [first[f"country_{code}"] for code, _ in demo.COUNTRIES]
    assert BitMap.union(*countries) == everyone
    assert sum(len(c) for c in countries) == len(everyone)  # a partition
    tiers = [first[name] for name, _ in demo.CARD_TIERS]
    assert sum(len(t) for t in tiers) == len(BitMap.union(*tiers)) < len(everyone)  # disjoint; some hold none
    windows = [first[f"active_{d}d"] for d in demo.ACTIVITY_WINDOWS]
    assert all(a <= b for a, b in zip(windows, windows[1:]))  # nested activity windows
    assert first["signup_7d"] <= first["signup_30d"]
    recent = first["signup_30d"]
    assert recent == BitMap(range(recent.min(), 150_000))  # new sign-ups are the newest, contiguous IDs
    assert first["fraud_blocked"] <= first["risk_high"]
    for name, members in first.items():
        assert 0 < len(members) <= len(everyone), name


@contextmanager
def serve_process(args: list[str], env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "segments", "serve", *args],
        env={**base, **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def wait_healthy(url: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not become healthy")


def test_every_option_comes_from_the_environment(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "SEGMENTS_STORE": "sqlite:///./env.db",
        "SEGMENTS_HOST": "127.0.0.1",
        "SEGMENTS_PORT": str(port),
        "SEGMENTS_UNIVERSE": "everyone",
        "SEGMENTS_MAX_BODY_BYTES": "2048",
        "SEGMENTS_LOG_LEVEL": "warning",
    }
    with serve_process([], env, tmp_path) as process:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process)
        with httpx.Client(base_url=url) as c:
            assert c.put("/v1/segments/everyone", json={"ids": [1, 2, 3]}).status_code == 200
            assert c.put("/v1/segments/a", json={"ids": [1]}).status_code == 200
            assert c.post("/v1/reach", json={"expr": "~a"}).json()["reach"] == 2  # universe from the env
            assert c.put("/v1/segments/b", json={"ids": list(range(1000))}).status_code == 413
    assert (tmp_path / "env.db").exists()  # the relative store URL, from the env


def test_flags_override_the_environment_and_workers_share_the_store(tmp_path: Path) -> None:
    port = free_port()
    env = {"SEGMENTS_PORT": "1", "SEGMENTS_STORE": "sqlite:///./ignored.db", "SEGMENTS_WORKERS": "1"}
    args = ["--store", f"sqlite:///{tmp_path / 'flag.db'}", "--port", str(port), "--workers", "2"]
    with serve_process([*args, "--log-level", "info"], env, tmp_path) as process:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process)
        with httpx.Client(base_url=url) as c:
            assert c.put("/v1/segments/w", json={"ids": [1, 2]}).status_code == 200
            for _ in range(20):  # whichever worker answers sees the same store
                assert c.get("/v1/segments/w").json()["cardinality"] == 2
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert f"serving http://127.0.0.1:{port}/ with 2 workers" in output
    assert len(set(re.findall(r"Started server process \[(\d+)\]", output))) == 2
    assert (tmp_path / "flag.db").exists()
    assert not (tmp_path / "ignored.db").exists()


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"SEGMENTS_PORT": "eighty"}, [], "SEGMENTS_PORT / --port:"),
        ({}, ["--port", "70000"], "SEGMENTS_PORT / --port:"),
        ({"SEGMENTS_UNIVERSE": "no-dash"}, [], "SEGMENTS_UNIVERSE / --universe: invalid segment name"),
        ({"SEGMENTS_MAX_BODY_BYTES": "10"}, [], "SEGMENTS_MAX_BODY_BYTES"),
        ({"SEGMENTS_STORE": "postgres://x"}, [], "is not a store URL"),
    ],
)
def test_invalid_settings_stop_serve_with_a_clear_message(
    tmp_path: Path, env: dict[str, str], args: list[str], message: str
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")}
    result = subprocess.run(
        [sys.executable, "-m", "segments", "serve", *args],
        env={**base, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("segments serve: invalid settings:")
    assert message in result.stderr
    assert "Traceback" not in result.stderr
