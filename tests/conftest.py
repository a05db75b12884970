"""Suite-wide settings: hypothesis profiles, a clean environment, store backends, and two hooks.

``HYPOTHESIS_PROFILE=ci`` (what ``make test`` sets) bounds the example count;
``dev`` is the default for local runs.

Hooks: every test that touches the Aerospike backend (through the Aerospike fixtures or the
``aerospike`` store backend) gets the ``aerospike`` marker, which ``make test-aerospike`` selects;
and with ``CI`` set, a skip for something missing (``tests.support.require``) is a failure.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support.require import MISSING, in_ci, require

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
#: fixtures that reach an Aerospike server (here, in tests/faults and tests/integration)
AEROSPIKE_FIXTURES = frozenset({"aerospike_target", "aerospike_server", "aerospike"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        uses_backend = callspec is not None and callspec.params.get("store_url") == "aerospike"
        if uses_backend or AEROSPIKE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.aerospike)


def _missing_reason(report: pytest.TestReport | pytest.CollectReport) -> str | None:
    """The reason of a skip for something missing (not an xfail), else None."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return None
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason.removeprefix("Skipped: ")
    return reason if reason.startswith(MISSING) else None


def _fail_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    reason = _missing_reason(report)
    if reason is not None and in_ci():
        report.outcome = "failed"
        report.longrepr = f"{reason}\n(CI is set: a test that cannot run because this is missing fails)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield  # type: ignore[misc]
    _fail_in_ci(report)
    return report  # type: ignore[return-value]


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    report: pytest.CollectReport = yield  # type: ignore[misc]
    _fail_in_ci(report)
    return report  # type: ignore[return-value]


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
    require("the Aerospike backend or its test fixture (pip install -e '.[test]')", _aerospike_available())
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
