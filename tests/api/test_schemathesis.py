"""Property-based checks of the whole API from its own ``/openapi.json``, with schemathesis.

Schemathesis (4.x) generates requests for every operation, valid ones from
the schema and deliberately invalid ones, in its examples, coverage, fuzzing
and stateful phases, and sends them to a real uvicorn process. Every check
must pass: no 5xx, only documented statuses, bodies, headers and content
types that match the schema, invalid data rejected, and (on a server with API
keys) no operation served without a key.

One check is left out: ``positive_data_acceptance`` ("every schema-valid
request is accepted"). JSON Schema cannot say which strings parse as an
expression or which bytes are a valid roaring bitmap, so a schema-valid
``{"expr": "a b"}`` or a random octet-stream body is rightly answered with 400.

The run goes through schemathesis's own command line (its pytest plugin's
lazy loader does not work with pytest 9), with a fixed seed and a bounded
number of examples so it is reproducible and finishes in well under a minute.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import seed_store
from tests.support.api_server import ApiServer, start_api_server

KEY = "schemathesis-admin-key"
#: what else counts as refusing a schema-violating request (413: the query body limit)
CONFIG = Path(__file__).with_name("schemathesis.toml")


def operation_count(base_url: str) -> int:
    """How many operations the served ``/openapi.json`` documents: every one of them must be tested."""
    paths = httpx.get(f"{base_url}/openapi.json", timeout=30).json()["paths"]
    return sum(1 for operations in paths.values() for method in operations if method != "parameters")


def schemathesis_run(
    base_url: str, cwd: Path, examples: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", f"{base_url}/openapi.json",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", str(examples), "--seed", "20240501", "--workers", "1",
        "--request-timeout", "30", "--suppress-health-check", "all", *extra,
    ]  # fmt: skip
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_no_5xx_and_no_schema_violations(api: ApiServer, tmp_path: Path) -> None:
    result = schemathesis_run(api.base_url, tmp_path, 20)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert f"Tested: {operation_count(api.base_url)}" in result.stdout
    assert "No issues found" in result.stdout or " passed" in result.stdout
    assert "Traceback" not in api.output()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('st-secured') / 'segments.db'}"
    seed_store(url)
    with start_api_server(url, {"SEGMENTS_API_KEYS": f"{KEY}:read,write"}) as server:
        yield server


def test_with_api_keys_every_operation_demands_one(secured: ApiServer, tmp_path: Path) -> None:
    result = schemathesis_run(secured.base_url, tmp_path, 8, "--header", f"Authorization: Bearer {KEY}")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert f"Tested: {operation_count(secured.base_url)}" in result.stdout
