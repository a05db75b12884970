"""The pairwise half of the conformance test needs a real Aerospike: without one it is deselected.

``make test`` runs against the test server only, where there is nothing to compare with: the
comparison is not skipped there (a skip in CI would be a failure), it is not collected at all.
``make test-aerospike`` (``SEGMENTS_TEST_AEROSPIKE`` set) runs it.
"""

from __future__ import annotations

import os

import pytest

from tests.support.aerospike_fixture import ENV_VAR

PAIRWISE = "test_the_test_server_answers_every_call_like_a_real_server"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(ENV_VAR, "").strip():
        return
    deselected = [item for item in items if item.name == PAIRWISE]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.name != PAIRWISE]
