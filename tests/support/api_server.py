"""A real HTTP API process for tests.

:func:`start_api_server` runs ``python -m segments serve`` (the real command,
hence the real uvicorn) as a separate process on a free loopback port, waits
until ``/healthz`` answers and yields an :class:`ApiServer` handle. The
process is always stopped (SIGTERM, then SIGKILL) when the ``with`` block
ends, whatever happens inside it.

The child's environment is the parent's without any ``SEGMENTS_*`` variable,
plus ``env``; use it for ``SEGMENTS_API_KEYS``, ``SEGMENTS_MAX_BODY_BYTES``
and the like::

    with start_api_server("sqlite:///tmp/x.db", env={"SEGMENTS_API_KEYS": "k1:read"}) as api:
        httpx.get(f"{api.base_url}/v1/segments", headers={"Authorization": "Bearer k1"})

For fault tests, :meth:`ApiServer.stop` stops the API early,
:meth:`ApiServer.output` returns what the process printed and
:meth:`ApiServer.memory` reads its resident and peak memory from ``/proc``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ApiServer", "ApiServerError", "Memory", "free_port", "start_api_server"]

_REPO = Path(__file__).resolve().parents[2]


class ApiServerError(RuntimeError):
    """The API process did not start (its output is in the message)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Memory:
    """Bytes of resident memory of a process: now, and the most it ever held."""

    rss: int
    peak: int


@dataclass
class ApiServer:
    base_url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def memory(self) -> Memory:
        """The process's resident memory now and its peak so far (``VmRSS``, ``VmHWM`` of ``/proc/<pid>/status``)."""
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024  # the kernel reports kB
        return Memory(rss=fields["VmRSS"], peak=fields["VmHWM"])

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the process (SIGTERM, then SIGKILL); returns its exit code."""
        if self._stopped:
            return self.process.returncode
        self._stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode


def _child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")}
    out["PYTHONUNBUFFERED"] = "1"
    out.update(env or {})
    return out


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def start_api_server(
    store_url: str,
    env: Mapping[str, str] | None = None,
    *,
    args: list[str] | None = None,
    startup_timeout: float = 60.0,
) -> Iterator[ApiServer]:
    """Run ``segments serve --store store_url`` on a free loopback port until the block ends.

    ``args`` are extra command-line options (``["--demo", "--demo-users", "100000"]``).
    """
    log_dir = Path(tempfile.mkdtemp(prefix="segments-api-"))
    server: ApiServer | None = None
    try:
        for attempt in range(3):
            port = free_port()
            log_path = log_dir / f"serve-{attempt}.log"
            command = [
                sys.executable, "-m", "segments", "serve",
                "--store", store_url, "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "warning", *(args or []),
            ]  # fmt: skip
            with open(log_path, "wb") as log:
                process = subprocess.Popen(
                    command, cwd=_REPO, env=_child_env(env), stdout=log, stderr=subprocess.STDOUT
                )
            server = ApiServer(f"http://127.0.0.1:{port}", port, process, log_path)
            deadline = time.monotonic() + startup_timeout
            while time.monotonic() < deadline:
                if process.poll() is not None or _healthy(server.base_url):
                    break
                time.sleep(0.05)
            if process.poll() is None and _healthy(server.base_url):
                break
            output = server.output()
            server.stop()
            if "address already in use" in output.lower() and attempt < 2:
                continue  # another process took the port between free_port() and bind
            raise ApiServerError(
                f"segments serve did not become healthy (exit code {process.returncode}):\n{output}"
            )
        assert server is not None
        yield server
    finally:
        if server is not None:
            server.stop()
        for path in log_dir.iterdir():
            path.unlink(missing_ok=True)
        log_dir.rmdir()
