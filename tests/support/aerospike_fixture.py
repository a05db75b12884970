"""Where the Aerospike tests run: the loopback test server, or a real cluster.

Use from a conftest::

    from tests.support.aerospike_fixture import aerospike_target, aerospike_url

    @pytest.fixture(scope="session")
    def aerospike_target_fixture():
        with aerospike_target() as target:
            yield target

    url = aerospike_url(target, f"t{uuid.uuid4().hex[:10]}_")   # one set prefix per test

Without ``SEGMENTS_TEST_AEROSPIKE`` the target is a test server process
(``tests/support/aerospike_server.py``) on a free loopback port, namespace ``test``. With
``SEGMENTS_TEST_AEROSPIKE=host:port[/namespace]`` it is that real server (namespace ``test``
unless given); tests that stop or restart the server call :meth:`AerospikeTarget.require_server`,
which skips them there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.support.aerospike_server import AerospikeServerProcess, start_aerospike_server

ENV_VAR = "SEGMENTS_TEST_AEROSPIKE"
DEFAULT_NAMESPACE = "test"
#: The test server's record size limit: the real server's default (``max-record-size`` 1 MiB).
TEST_SERVER_MAX_RECORD_SIZE = 1024 * 1024


@dataclass
class AerospikeTarget:
    """One Aerospike to test against."""

    host: str
    port: int
    namespace: str
    #: the test server process; ``None`` for a real cluster
    server: AerospikeServerProcess | None = None

    @property
    def is_real(self) -> bool:
        return self.server is None

    @property
    def max_record_size(self) -> int:
        """The record size limit (a real server is assumed to run with the 1 MiB default)."""
        return self.server.max_record_size if self.server is not None else TEST_SERVER_MAX_RECORD_SIZE

    @property
    def description(self) -> str:
        kind = "real Aerospike" if self.is_real else "Aerospike test server"
        return f"{kind} at {self.host}:{self.port}/{self.namespace}"

    def require_server(self) -> AerospikeServerProcess:
        """The test server process; skips the calling test against a real cluster."""
        if self.server is None:
            pytest.skip(f"stops or restarts the server, which is not done to the {self.description}")
        return self.server


def parse_target(value: str) -> tuple[str, int, str]:
    """``host:port[/namespace]`` -> ``(host, port, namespace)``."""
    address, _, namespace = value.strip().partition("/")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{ENV_VAR}={value!r}: expected host:port[/namespace], e.g. 127.0.0.1:3000/test")
    return host.strip("[]"), int(port), namespace.strip("/") or DEFAULT_NAMESPACE


@contextmanager
def aerospike_target() -> Iterator[AerospikeTarget]:
    """The real server named by ``SEGMENTS_TEST_AEROSPIKE``, else a test server for the block."""
    configured = os.environ.get(ENV_VAR, "").strip()
    if configured:
        host, port, namespace = parse_target(configured)
        yield AerospikeTarget(host, port, namespace)
        return
    with start_aerospike_server(
        namespaces=(DEFAULT_NAMESPACE,), max_record_size=TEST_SERVER_MAX_RECORD_SIZE
    ) as server:
        yield AerospikeTarget(server.host, server.port, DEFAULT_NAMESPACE, server)


@contextmanager
def private_aerospike_target(**server_options: object) -> Iterator[AerospikeTarget]:
    """A test server of its own (for tests that stop it); skips against a real cluster."""
    if os.environ.get(ENV_VAR, "").strip():
        pytest.skip(f"needs a test server of its own; {ENV_VAR} points the tests at a real cluster")
    with start_aerospike_server(namespaces=(DEFAULT_NAMESPACE,), **server_options) as server:  # type: ignore[arg-type]
        yield AerospikeTarget(server.host, server.port, DEFAULT_NAMESPACE, server)


def unique_prefix(tag: str = "t") -> str:
    """A fresh set prefix: ``<tag><10 hex>_``."""
    return f"{tag}{uuid.uuid4().hex[:10]}_"


def aerospike_url(target: AerospikeTarget, prefix: str | None = None, /, **params: str | int | float) -> str:
    """The store URL for ``target`` with set prefix ``prefix`` (a fresh unique one when ``None``).

    Extra keyword arguments become URL parameters (``timeout_ms=300``, ``connect_timeout_s=1``...).
    """
    query = {
        "prefix": unique_prefix() if prefix is None else prefix,
        **{k: str(v) for k, v in params.items()},
    }
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"aerospike://{host}:{target.port}/{target.namespace}?{urlencode(query)}"


def add_ids_in_process(url: str, name: str, chunks: list[list[int]], start: Any = None) -> None:
    """Worker for multi-process tests (importable under ``spawn``): ``Segments.add`` each chunk.

    ``start``, a ``multiprocessing`` barrier, makes the workers begin together.
    """
    import segments

    with segments.connect(url) as segs:
        segs.ping()
        if start is not None:
            start.wait(60)
        for chunk in chunks:
            segs.add(name, chunk)
