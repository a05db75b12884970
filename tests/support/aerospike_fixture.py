"""Where the Aerospike tests run: the loopback test server, or a real Aerospike.

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
unless given), shared by the whole session and never stopped by a test.

Tests that stop, kill or freeze the server take a server of their own,
:func:`private_aerospike_target`, and drive it through :meth:`AerospikeTarget.require_server`
(a :class:`ServerControl`): a test server without ``SEGMENTS_TEST_AEROSPIKE``; with it, a real
node started from the server kit in ``AEROSPIKE_SERVER_KIT`` (``make test-aerospike`` sets both),
so the same test body runs on both. With a real server but no kit they skip (fail in CI).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

from tests.support.aerospike_server import start_aerospike_server
from tests.support.real_aerospike import KIT_ENV, kit_from_env, start_real_aerospike
from tests.support.require import require

ENV_VAR = "SEGMENTS_TEST_AEROSPIKE"
DEFAULT_NAMESPACE = "test"
#: The test server's record size limit: the real server's default (``max-record-size`` 1 MiB).
TEST_SERVER_MAX_RECORD_SIZE = 1024 * 1024


class ServerControl(Protocol):
    """What a test may do to a server of its own, the same for the test server and a real node."""

    kind: str
    host: str
    port: int

    @property
    def pid(self) -> int | None: ...

    @property
    def is_running(self) -> bool: ...

    def start(self) -> None:
        """Start (again, on the same port and data) and wait until it serves."""

    def stop(self) -> object:
        """SIGTERM, a clean stop; waits until it is gone."""

    def restart(self) -> None:
        """A clean stop, then a start."""

    def kill(self) -> None:
        """SIGKILL, a crash: the writes of the last flush interval may be lost."""

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers."""

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""


@dataclass
class AerospikeTarget:
    """One Aerospike to test against."""

    host: str
    port: int
    namespace: str
    #: the server's controls, for a server the test may stop; ``None`` for the shared one
    server: ServerControl | None = None
    #: a real Aerospike (not the test server)
    real: bool = False
    #: the namespace's settings (``namespace/<ns>`` info): max-record-size, flush interval...
    config: dict[str, str] = field(default_factory=dict)

    @property
    def is_real(self) -> bool:
        return self.real

    @property
    def max_record_size(self) -> int:
        return int(self.config.get("max-record-size", TEST_SERVER_MAX_RECORD_SIZE))

    @property
    def flush_max_ms(self) -> int:
        """How long an acknowledged write may stay in the write buffer before it is on the device."""
        return int(self.config.get("storage-engine.flush-max-ms", "1000"))

    @property
    def description(self) -> str:
        kind = "real Aerospike" if self.is_real else "Aerospike test server"
        return f"{kind} at {self.host}:{self.port}/{self.namespace}"

    def require_server(self) -> ServerControl:
        """The server's controls; skips the calling test (fails it in CI) if it has none."""
        require(
            f"a server of its own to stop, kill or freeze; {self.description} is shared "
            f"(take private_aerospike_target())",
            self.server is not None,
        )
        assert self.server is not None
        return self.server


def parse_target(value: str) -> tuple[str, int, str]:
    """``host:port[/namespace]`` -> ``(host, port, namespace)``."""
    address, _, namespace = value.strip().partition("/")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{ENV_VAR}={value!r}: expected host:port[/namespace], e.g. 127.0.0.1:3000/test")
    return host.strip("[]"), int(port), namespace.strip("/") or DEFAULT_NAMESPACE


def namespace_config(host: str, port: int, namespace: str) -> dict[str, str]:
    """The ``namespace/<ns>`` info of a server, as a dict (empty if the namespace is unknown)."""
    import aerospike

    client = aerospike.client({"hosts": [(host, port)], "policies": {"info": {"timeout": 5000}}}).connect()
    try:
        answer = client.info_random_node(f"namespace/{namespace}")
    finally:
        client.close()
    text = str(answer).strip().partition("\t")[2] or str(answer).strip()
    pairs = (item.partition("=") for item in text.split(";") if "=" in item)
    return {name: value for name, _, value in pairs}


def _target(host: str, port: int, namespace: str, server: ServerControl | None, real: bool) -> AerospikeTarget:
    return AerospikeTarget(host, port, namespace, server, real, namespace_config(host, port, namespace))


@contextmanager
def aerospike_target() -> Iterator[AerospikeTarget]:
    """The real server named by ``SEGMENTS_TEST_AEROSPIKE``, else a test server for the block."""
    configured = os.environ.get(ENV_VAR, "").strip()
    if configured:
        host, port, namespace = parse_target(configured)
        yield _target(host, port, namespace, None, True)
        return
    with start_aerospike_server(
        namespaces=(DEFAULT_NAMESPACE,), max_record_size=TEST_SERVER_MAX_RECORD_SIZE
    ) as server:
        yield _target(server.host, server.port, DEFAULT_NAMESPACE, server, False)


@contextmanager
def private_aerospike_target() -> Iterator[AerospikeTarget]:
    """A server of the caller's own, which it may stop, kill and freeze.

    The test server; or, when the suite runs against a real Aerospike (``SEGMENTS_TEST_AEROSPIKE``),
    a real node from the kit in ``AEROSPIKE_SERVER_KIT`` (skips, or fails in CI, without one).
    """
    if not os.environ.get(ENV_VAR, "").strip():
        with start_aerospike_server(
            namespaces=(DEFAULT_NAMESPACE,), max_record_size=TEST_SERVER_MAX_RECORD_SIZE
        ) as server:
            yield _target(server.host, server.port, DEFAULT_NAMESPACE, server, False)
        return
    kit = kit_from_env()
    require(
        f"an Aerospike server kit to start a real node of its own ({KIT_ENV}=path to a folder with "
        f"start.sh and stop.sh; {ENV_VAR} points at a shared server, which no test stops)",
        kit is not None,
    )
    assert kit is not None
    with start_real_aerospike(kit) as node:
        yield _target(node.host, node.port, DEFAULT_NAMESPACE, node, True)


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
