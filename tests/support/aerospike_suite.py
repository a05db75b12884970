"""``make test-aerospike``: every test that touches the Aerospike backend, against a real Aerospike.

    python -m tests.support.aerospike_suite [--skip-without-server] [PYTEST ARGS...]

Which server:

* ``SEGMENTS_TEST_AEROSPIKE=host:port[/namespace]`` set: that one (tests that stop, kill or freeze
  a server still start nodes of their own from the kit, if there is one).
* else the server kit in ``AEROSPIKE_SERVER_KIT`` (a folder with ``start.sh DIR PORT`` and
  ``stop.sh DIR [--kill]``): a node in a temporary DIR on free loopback ports, stopped by the
  kit's ``stop.sh`` when the run ends, also on a failure or Ctrl-C.
* neither: says what it needs and exits with 2 (with ``--skip-without-server``, what CI passes:
  says that it did not run and exits with 0).

The tests are those with the ``aerospike`` marker (``tests/conftest.py`` adds it to every test
that uses an Aerospike fixture or the ``aerospike`` store backend), run with
``HYPOTHESIS_PROFILE=ci``. The exit code is pytest's.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from tests.support.aerospike_fixture import ENV_VAR, parse_target
from tests.support.real_aerospike import (
    KIT_ENV,
    RealAerospikeServer,
    kit_problem,
    nodes_under,
    start_real_aerospike,
)

NO_SERVER = 2
DOCKER = "docker run -d -p 3000-3002:3000-3002 aerospike/aerospike-server"


def needs(kit_value: str, problem: str | None) -> str:
    """What to tell someone who has neither a kit nor a server."""
    kit_line = f"  - {KIT_ENV}={kit_value}: {problem}" if kit_value else f"  - {KIT_ENV} is not set"
    return "\n".join(
        [
            "make test-aerospike needs a real Aerospike, and found none:",
            kit_line,
            f"  - {ENV_VAR} is not set",
            "Either point it at an Aerospike server kit (a folder with start.sh DIR PORT and stop.sh DIR):",
            f"    make test-aerospike {KIT_ENV}=/path/to/kit",
            "or run a server yourself, e.g. with Docker, and name it:",
            f"    {DOCKER}",
            f"    {ENV_VAR}=127.0.0.1:3000/test make test-aerospike",
        ]
    )


def run_pytest(arguments: Sequence[str], env: dict[str, str]) -> int:
    """Run pytest in a child of its own process group; a SIGINT (Ctrl-C) or SIGTERM that reaches
    this process is passed on once, so pytest ends its tests (and stops their nodes) normally."""
    command = [sys.executable, "-m", "pytest", "-m", "aerospike", *arguments]
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    # Handlers first: the child then starts with SIGINT at its default (Python's KeyboardInterrupt),
    # even when this process was started with SIGINT ignored (as a background job is).
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        child = subprocess.Popen(command, env=env, process_group=0)
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_leftover_nodes(kit: Path, root: Path) -> list[str]:
    """Kill any node the tests left running under ``root`` (an interrupted or crashed run): by its
    DIR's pid file with the kit's script, else by the pid of the process started on that DIR."""
    stopped = []
    for pid_file in sorted(root.rglob("asd.pid")):
        node = RealAerospikeServer(kit, pid_file.parent, 0)
        if node.is_running:
            node.kill()
            stopped.append(str(pid_file.parent))
    for pid in nodes_under(kit, root):
        os.kill(pid, signal.SIGKILL)
        stopped.append(f"pid {pid}")
    return stopped


def interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    # Ctrl-C or SIGTERM while the node starts or stops: stop it and clean up (also when this
    # process was started with SIGINT ignored, as background jobs are).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    arguments = list(sys.argv[1:] if argv is None else argv)
    optional = "--skip-without-server" in arguments[:1]
    arguments = arguments[1:] if optional else arguments
    configured = os.environ.get(ENV_VAR, "").strip()
    kit_value = os.environ.get(KIT_ENV, "").strip()
    kit = Path(kit_value).resolve() if kit_value else None
    problem = kit_problem(kit) if kit is not None else "not set"
    usable_kit = kit if kit is not None and problem is None else None
    if not configured and usable_kit is None:
        if optional:
            print(
                f"[test-aerospike] not run: no Aerospike server kit ({KIT_ENV}: {problem}) and no {ENV_VAR}"
            )
            return 0
        print(needs(kit_value, problem), file=sys.stderr)
        return NO_SERVER
    if configured:
        parse_target(configured)  # a bad value fails here, with the expected syntax

    env = {k: v for k, v in os.environ.items() if k != KIT_ENV}
    env.setdefault("HYPOTHESIS_PROFILE", "ci")
    if usable_kit is not None:
        env[KIT_ENV] = str(usable_kit)
    else:
        print(f"[test-aerospike] no server kit ({KIT_ENV}: {problem}): tests that stop a server will skip")
    scratch = Path(tempfile.mkdtemp(prefix="segments-test-aerospike-"))
    env["TMPDIR"] = str(scratch)  # every node a test starts lives here, so none can be left behind
    started = time.monotonic()
    try:
        if configured:
            print(f"[test-aerospike] {ENV_VAR}={configured}")
            return run_pytest(arguments, env)
        assert usable_kit is not None
        with start_real_aerospike(usable_kit) as node:
            env[ENV_VAR] = f"{node.host}:{node.port}/test"
            print(
                f"[test-aerospike] real Aerospike from {usable_kit} at {env[ENV_VAR]} (DIR {node.directory})"
            )
            code = run_pytest(arguments, env)
            if code not in (0, 5):
                print(f"[test-aerospike] the node's last warnings:\n{node.log_warnings()}")
            return code
    finally:
        if usable_kit is not None:
            for what in stop_leftover_nodes(usable_kit, scratch):
                print(f"[test-aerospike] stopped a node left running: {what}")
        shutil.rmtree(scratch, ignore_errors=True)
        print(f"[test-aerospike] wall time {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("[test-aerospike] interrupted; the node is stopped", file=sys.stderr)
        sys.exit(130)
