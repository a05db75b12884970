"""Child processes of the benchmark: the repository root, stopping a process, a module run for its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: the repository root: child processes run here so ``bench``, ``segments`` and ``tests`` import
ROOT = Path(__file__).resolve().parent.parent

Log = Callable[[str], None]


def stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL when it has not exited after ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_module(
    module: str, args: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``python -m module *args`` in ``ROOT``; its last line of output, parsed as a JSON object.

    Raises ``RuntimeError`` with the end of its error output when it fails.
    """
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=None if env is None else dict(env),
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"python -m {module} failed:\n{result.stderr.strip()[-3000:]}")
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed
