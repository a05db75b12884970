"""``segments ingest`` writes JSON log lines by default."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def test_consumer_logs_are_json_lines(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on: the consumer keeps retrying the broker
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "segments", "ingest", "--bootstrap-servers", f"127.0.0.1:{port}",
         "--store", f"sqlite:///{tmp_path}/s.db"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(4)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "the consumer logged nothing"
    ours = [json.loads(line) for line in lines if line.startswith("{")]
    assert ours and all({"ts", "level", "logger", "msg"} <= entry.keys() for entry in ours)
    assert any(entry["logger"].startswith("ingest") for entry in ours)
    not_json = [line for line in lines if not line.startswith("{")]
    assert not_json == [], not_json
