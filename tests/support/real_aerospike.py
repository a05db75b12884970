"""A real Aerospike node for tests, started from a server kit.

A kit is a folder with an Aerospike server and two scripts (``make test-aerospike`` passes its
path in ``AEROSPIKE_SERVER_KIT``)::

    start.sh DIR PORT        start a single node (ports PORT..PORT+2) whose config, pid file, logs and
                             data file live in DIR; print 127.0.0.1:PORT once it serves
    stop.sh DIR [--kill]     SIGTERM (or SIGKILL) the node of DIR and wait until it is gone

Its namespace ``test`` is file-backed: a node started again on the same DIR finds its data, as
a production node does on its device. :class:`RealAerospikeServer` drives one node with the
same controls as the test server (:class:`tests.support.aerospike_server.AerospikeServerProcess`):
``start``, ``stop``, ``restart``, ``kill``, ``freeze`` and ``thaw``, so a test body that stops,
kills or freezes "the server" runs against either. Nodes are stopped by the kit's script (by their
recorded pid), never by name.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.aerospike_server import freeze_process, thaw_process

KIT_ENV = "AEROSPIKE_SERVER_KIT"
#: ports a node takes: service, fabric, heartbeat
PORTS_PER_NODE = 3


def kit_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable kit, or None if it is one."""
    for script in ("start.sh", "stop.sh"):
        if not os.access(path / script, os.X_OK):
            return f"{path} has no executable {script}"
    return None


def kit_from_env() -> Path | None:
    """The kit named by ``AEROSPIKE_SERVER_KIT`` if it is a usable one, else None."""
    value = os.environ.get(KIT_ENV, "").strip()
    if not value:
        return None
    path = Path(value).resolve()
    return path if kit_problem(path) is None else None


def free_port_block(count: int = PORTS_PER_NODE, host: str = "127.0.0.1") -> int:
    """A port P such that P..P+count-1 are all free on ``host`` right now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((host, 0))
            first = int(probe.getsockname()[1])
        if first + count > 65536:
            continue
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind((host, port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"found no {count} consecutive free ports on {host}")


@dataclass
class RealAerospikeServer:
    """One node of the kit in ``directory`` on ``host:port`` (and the two ports after it)."""

    kit: Path
    directory: Path
    port: int
    host: str = "127.0.0.1"
    start_timeout: float = 120.0
    frozen: bool = False
    kind: str = "real Aerospike"

    @property
    def pid(self) -> int | None:
        """The node's pid from its pid file, if that process is this kit's server and alive."""
        try:
            pid = int((self.directory / "asd.pid").read_text().strip())
            executable = Path(os.readlink(f"/proc/{pid}/exe"))
        except (OSError, ValueError):
            return None
        return pid if executable == (self.kit / "bin" / "asd").resolve() else None

    @property
    def is_running(self) -> bool:
        return self.pid is not None

    def _script(self, *arguments: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.kit / arguments[0]), *arguments[1:]],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> None:
        """``start.sh DIR PORT``: returns once the node serves (the data of DIR is loaded)."""
        done = self._script("start.sh", str(self.directory), str(self.port), timeout=self.start_timeout)
        expected = f"{self.host}:{self.port}"
        if done.returncode != 0 or done.stdout.strip().splitlines()[-1:] != [expected]:
            raise RuntimeError(
                f"{self.kit}/start.sh {self.directory} {self.port} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}"
            )

    def stop(self) -> None:
        """``stop.sh DIR``: SIGTERM, a clean stop; waits until the node is gone."""
        self.thaw()
        self._stop()

    def kill(self) -> None:
        """``stop.sh DIR --kill``: SIGKILL, a crash."""
        self._stop("--kill")
        self.frozen = False

    def _stop(self, *options: str) -> None:
        done = self._script("stop.sh", str(self.directory), *options, timeout=90)
        if done.returncode != 0:
            raise RuntimeError(
                f"{self.kit}/stop.sh {self.directory} {' '.join(options)} failed:\n{done.stderr}"
            )

    def restart(self) -> None:
        """A clean stop, then a start on the same DIR and port."""
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP on the node's pid: connections stay open, nothing answers."""
        pid = self.pid
        if pid is None:
            raise RuntimeError(f"no running node in {self.directory}")
        freeze_process(pid)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        pid = self.pid
        if self.frozen and pid is not None:
            thaw_process(pid)
        self.frozen = False

    def log_warnings(self, lines: int = 20) -> str:
        """The node's last warnings and errors, for failure messages."""
        try:
            text = (self.directory / "log" / "aerospike.log").read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        found = [line for line in text.splitlines() if " INFO " not in line and " DETAIL " not in line]
        return "\n".join(found[-lines:]) or "(none)"


@contextlib.contextmanager
def start_real_aerospike(kit: Path, *, attempts: int = 3) -> Iterator[RealAerospikeServer]:
    """A node of ``kit`` in a fresh temporary DIR on free loopback ports, for the ``with`` block.

    The node is stopped (by the kit's script) and its DIR removed when the block ends, also when
    starting it fails or is interrupted half-way.
    """
    with tempfile.TemporaryDirectory(prefix="aerospike-node-") as directory:
        server: RealAerospikeServer | None = None
        for attempt in range(attempts):
            candidate = RealAerospikeServer(kit.resolve(), Path(directory), free_port_block())
            try:
                candidate.start()
            except BaseException as exc:
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    candidate.kill()  # start.sh may have launched it before it failed (or Ctrl-C)
                if not isinstance(exc, RuntimeError) or attempt == attempts - 1:
                    raise
                continue  # most likely a port taken between the check and the start: new ports
            server = candidate
            break
        assert server is not None
        try:
            yield server
        finally:
            try:
                server.stop()
            except (RuntimeError, subprocess.TimeoutExpired):
                server.kill()


def nodes_under(kit: Path, root: Path) -> list[int]:
    """Pids of this kit's running nodes whose DIR is under ``root`` (their command line names it)."""
    executable = (kit / "bin" / "asd").resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "exe")) != executable:
                continue
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if any(argument.startswith(str(root).encode() + b"/") for argument in arguments):
            found.append(int(entry.name))
    return found
