"""The README's ``curl`` examples work as written: each runs, in README order, against a served demo.

Every ``curl`` command of a ``sh`` block of README.md (backslash continuations joined) runs in
``bash`` with ``localhost:8000`` pointed at a real ``segments serve --demo`` process, from a folder
holding the ``new.roaring`` file the examples send. A trailing comment ``# → 409 in_use`` states the
status and the error code the command must answer; every other command must answer 2xx.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyroaring import BitMap

from tests.support.api_server import ApiServer, start_api_server

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
_EXPECT = re.compile(r"\s+#\s*→\s*(\d{3})(?:\s+([a-z_]+))?[^\n]*$")
_STATUS_MARK = "\n@@status@@"


@dataclass(frozen=True)
class Example:
    line: int
    command: str
    status: int | None  # None: any 2xx
    code: str | None


def examples(text: str) -> list[Example]:
    """Every curl command of the README's sh blocks, with what it must answer."""
    found = []
    for block in _BLOCK.finditer(text):
        first_line = text.count("\n", 0, block.start(1)) + 1
        lines = block.group(1).split("\n")
        i = 0
        while i < len(lines):
            start = i
            command = lines[i]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            i += 1
            if not command.startswith("curl "):
                continue
            expect = _EXPECT.search(command)
            status = code = None
            if expect:
                status, code = int(expect.group(1)), expect.group(2)
                command = command[: expect.start()]
            else:
                command = re.sub(r"\s+#[^'\"]*$", "", command)  # a plain comment after the command
            found.append(Example(first_line + start, command, status, code))
    return found


def test_the_readme_has_examples_of_every_new_route() -> None:
    commands = " ".join(e.command for e in examples(README.read_text()))
    for path in (
        "/v1/audiences/",
        "/match",
        "/v1/insights",
        "/window",
        "?at=",
        "/history",
        "/v1/reach/history",
    ):
        assert path in commands, path
    assert any(e.status == 400 for e in examples(README.read_text()))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('readme') / 'segments.db'}"
    with start_api_server(url, args=["--demo", "--demo-users", "200000"]) as server:
        yield server


@pytest.mark.skipif(shutil.which("curl") is None, reason="missing: curl")
def test_every_readme_curl_example_answers_as_documented(demo: ApiServer, tmp_path: Path) -> None:
    (tmp_path / "new.roaring").write_bytes(BitMap([5, 6, 70_000, 123_456]).serialize())
    ran = examples(README.read_text())
    assert len(ran) >= 25
    host = f"127.0.0.1:{demo.port}"
    for example in ran:
        command = example.command.replace("localhost:8000", host)
        assert host in command, example
        full = f"{command} --silent --show-error --write-out {shlex.quote(_STATUS_MARK + '%{http_code}')}"
        done = subprocess.run(["bash", "-c", full], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        where = f"README.md:{example.line}: {example.command}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        assert done.returncode == 0, where
        body, _, status = done.stdout.rpartition(_STATUS_MARK)
        if example.status is None:
            assert 200 <= int(status) < 300, where
        else:
            assert int(status) == example.status, where
            if example.code is not None:
                assert json.loads(body)["error"]["code"] == example.code, where
    assert "Traceback" not in demo.output()
    assert BitMap.deserialize((tmp_path / "gold.roaring").read_bytes())  # the export example wrote a bitmap
