"""Suite-wide settings: hypothesis profiles, a clean environment, and store backends.

``HYPOTHESIS_PROFILE=ci`` (what ``make test`` sets) bounds the example count;
``dev`` is the default for local runs.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """One seed per run for every hypothesis test: new each run, printed, replayable.

    ``HYPOTHESIS_SEED=N`` (or ``--hypothesis-seed=N``) replays a run.
    """
    from hypothesis import core

    if core.global_force_seed is None:
        core.global_force_seed = int(os.environ.get("HYPOTHESIS_SEED") or secrets.randbelow(2**32))


def _seed_line() -> str:
    from hypothesis import core

    seed = core.global_force_seed
    return f"hypothesis seed {seed}: replay with HYPOTHESIS_SEED={seed} make test"


def pytest_report_header(config: pytest.Config) -> str:
    return _seed_line()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(_seed_line())

#: suite-wide fixtures defined next to the helpers they use (``broker``: one tansu broker per module)
pytest_plugins = ["tests.ingest.harness"]

_KEEP = {"SEGMENTS_TEST_AEROSPIKE", "SEGMENTS_TEST_HEAVY"}


@pytest.fixture(autouse=True)
def _clean_segments_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SEGMENTS_* variable of the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("SEGMENTS_") and key not in _KEEP:
            monkeypatch.delenv(key, raising=False)


BACKENDS = ["memory", "sqlite", "aerospike"]


def _aerospike_available() -> bool:
    try:
        import segments.storage.aerospike  # noqa: F401
        import tests.support.aerospike_fixture  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="session")
def aerospike_target() -> Iterator[object]:
    """The Aerospike the suite talks to: the loopback test server, or a real cluster."""
    if not _aerospike_available():
        pytest.skip("the Aerospike backend or its test fixture is not available")
    from tests.support.aerospike_fixture import aerospike_target as target

    with target() as t:
        yield t


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of each backend."""
    kind = request.param
    if kind == "memory":
        return f"memory://t{uuid.uuid4().hex}"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/segments.db"
    target = request.getfixturevalue("aerospike_target")
    from tests.support.aerospike_fixture import aerospike_url

    return aerospike_url(target, f"t{uuid.uuid4().hex[:10]}_")
