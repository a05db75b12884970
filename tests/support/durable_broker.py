"""A Kafka-protocol broker whose log survives a crash: tansu on S3, with ``moto_server`` as the S3.

The bundled tansu build has no self-contained durable storage engine (see
:mod:`tests.support.kafka_broker`): with ``memory://`` a restart starts an
empty broker. With ``--storage-engine s3://<bucket>/`` it keeps topics,
messages and committed consumer-group offsets in an S3 bucket, so a broker
killed with SIGKILL and started again on the same port comes back with its
whole log. The S3 server here is moto's standalone server (``moto[server]``,
a test dependency), run as a separate process on a free loopback port; it
holds the bucket in memory, and it is *not* restarted by the tests: it plays
the durable disk, the broker process is what crashes.

Use::

    with start_durable_kafka_broker() as broker:     # a KafkaBroker (is_durable is True)
        broker.create_topic("t")
        ...
        broker.stop()            # SIGKILL, like a crash
        broker.start()           # same port, same log

Both processes are stopped when the block ends. If ``moto_server`` cannot
be found, :class:`DurableBrokerUnavailable` is raised (tests skip on it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.api_server import free_port
from tests.support.kafka_broker import KafkaBroker, start_kafka_broker

__all__ = [
    "DurableBrokerUnavailable",
    "MotoServer",
    "start_durable_kafka_broker",
    "start_moto_server",
]


class DurableBrokerUnavailable(RuntimeError):
    """``moto_server`` is not installed or did not start: no durable broker can be built."""


@dataclass
class MotoServer:
    """A running ``moto_server`` (S3 and friends) on ``127.0.0.1:port``."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_bucket(self, name: str) -> None:
        """``PUT /<bucket>`` (moto accepts unsigned requests)."""
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT", data=b"")
        with urllib.request.urlopen(request, timeout=10) as reply:
            if reply.status != 200:
                raise DurableBrokerUnavailable(f"moto_server refused bucket {name!r}: HTTP {reply.status}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _moto_command() -> list[str]:
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        return [str(script)]
    found = shutil.which("moto_server")
    if found:
        return [found]
    raise DurableBrokerUnavailable("moto_server not found: install the test extra (moto[server])")


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1) as reply:
            return bool(reply.status < 500)
    except urllib.error.HTTPError as error:
        return error.code < 500
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def start_moto_server(startup_timeout: float = 60.0) -> Iterator[MotoServer]:
    """Run ``moto_server`` on a free loopback port for the duration of the block."""
    command = _moto_command()
    workdir = Path(tempfile.mkdtemp(prefix="moto-"))
    server: MotoServer | None = None
    try:
        for attempt in range(3):
            port = free_port()
            log_path = workdir / f"moto-{attempt}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [*command, "-H", "127.0.0.1", "-p", str(port)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            server = MotoServer(port, process, log_path)
            deadline = time.monotonic() + startup_timeout
            while process.poll() is None and time.monotonic() < deadline and not _answers(server.endpoint):
                time.sleep(0.1)
            if process.poll() is None and _answers(server.endpoint):
                break
            output = server.log()
            server.stop()
            server = None
            if "address already in use" in output.lower() and attempt < 2:
                continue
            raise DurableBrokerUnavailable(f"moto_server did not start:\n{output[-3000:]}")
        assert server is not None
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def start_durable_kafka_broker(
    *, cluster_id: str = "tests", startup_timeout: float = 30.0
) -> Iterator[KafkaBroker]:
    """A tansu broker on ``s3://<fresh bucket>/`` in a private ``moto_server``.

    :meth:`KafkaBroker.stop` (SIGKILL by default) and :meth:`KafkaBroker.start` /
    :meth:`KafkaBroker.restart` keep topics, messages and committed offsets.
    """
    with start_moto_server() as moto:
        bucket = f"tansu-{uuid.uuid4().hex[:12]}"
        moto.create_bucket(bucket)
        env = {
            "AWS_ENDPOINT": moto.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "eu-west-2",
        }
        with start_kafka_broker(
            storage_engine=f"s3://{bucket}/",
            cluster_id=cluster_id,
            startup_timeout=startup_timeout,
            extra_env=env,
        ) as broker:
            assert broker.is_durable
            yield broker
