"""The ``segments`` console script's core commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import segments


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segments", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_commands() -> None:
    out = _run("--help")
    assert out.returncode == 0
    assert "reach" in out.stdout and "info" in out.stdout


def test_reach_and_info(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    with segments.connect(url) as s:
        s.replace("a", [1, 2, 3])
        s.replace("b", [3, 4])
    out = _run("reach", "--store", url, "a | b")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"reach": 4, "segments": {"a": 1, "b": 1}}
    info = _run("info", "--store", url, "a")
    assert json.loads(info.stdout)["cardinality"] == 3


def test_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    out = _run("reach", "--store", url, "a &")
    assert out.returncode == 2
    assert "position 3" in out.stderr and "Traceback" not in out.stderr
    out = _run("reach", "--store", url, "nope")
    assert out.returncode == 2 and "unknown segment: 'nope'" in out.stderr
