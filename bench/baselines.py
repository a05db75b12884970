"""The systems a user would pick instead, loaded with the same data and asked the same questions.

* ``ChdbBaseline``: chDB (embedded ClickHouse). One row of a ``Memory`` table
  holds every segment as an ``AggregateFunction(groupBitmap, UInt32)`` column
  (ClickHouse's roaring bitmaps); a reach query is one ``SELECT
  bitmapCardinality(bitmapAnd(...))`` over that row.
* ``RedisBaseline``: a ``redis-server`` started here on a free loopback port
  (no persistence), one plain bitmap string per segment, a query is the
  ``BITOP`` commands plus ``BITCOUNT`` sent as one pipeline.

Each ``prepare`` returns ``None`` or a sentence saying why the system is skipped.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from segments.expressions import Expr
from tests.support.api_server import free_port

from .datasets import Dataset
from .expressions import to_clickhouse, to_redis
from .processes import stop


class ChdbBaseline:
    def __init__(self) -> None:
        self._session: Any = None
        self._dir: Path | None = None
        self._sql: dict[str, str] = {}
        self.load_seconds = 0.0

    def prepare(self, ds: Dataset) -> str | None:
        try:
            from chdb import session
        except ImportError as exc:  # pragma: no cover - depends on the environment
            return f"chdb is not installed ({exc}); install the bench extra"
        started = time.perf_counter()
        self._dir = Path(tempfile.mkdtemp(prefix="bench-chdb-"))
        files = self._dir / "ids"
        files.mkdir()
        for name in ds.bitmaps:
            ds.array(name).astype("<u4").tofile(files / f"{name}.bin")
        self._session = session.Session(str(self._dir / "db"))  # type: ignore[no-untyped-call]
        cols = ", ".join(f"{n} AggregateFunction(groupBitmap, UInt32)" for n in ds.bitmaps)
        self.query(f"CREATE TABLE segs ({cols}) ENGINE = Memory")
        states = ", ".join(
            f"(SELECT groupBitmapState(id) FROM file('{files / n}.bin', 'RowBinary', 'id UInt32'))"
            for n in ds.bitmaps
        )
        self.query(f"INSERT INTO segs SELECT {states}")
        shutil.rmtree(files, ignore_errors=True)
        cards = self.query(
            "SELECT " + ", ".join(f"bitmapCardinality({n})" for n in ds.bitmaps) + " FROM segs"
        )
        loaded = [int(x) for x in cards.split()]
        expected = [len(b) for b in ds.bitmaps.values()]
        if loaded != expected:
            return f"chDB loaded different cardinalities {loaded} than {expected}"
        self.load_seconds = time.perf_counter() - started
        return None

    def query(self, sql: str) -> str:
        result = self._session.query(sql, "TabSeparated")
        return str(result).strip()

    def sql(self, tree: Expr) -> str:
        return f"SELECT bitmapCardinality({to_clickhouse(tree)}) FROM segs"

    def reach(self, sql: str) -> int:
        return int(self.query(sql))

    def close(self) -> None:
        if self._session is not None:
            try:
                self._session.close()
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
            self._session = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class RedisServer:
    """A throwaway ``redis-server`` on a free loopback port, persistence off."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.version = ""
        self._dir: str | None = None

    def start(self) -> str | None:
        if self.binary is None:
            return "no `redis-server` binary on PATH (Debian: apt-get install redis-server)"
        try:
            import redis
        except ImportError as exc:  # pragma: no cover
            return f"the redis client is not installed ({exc})"
        self._dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self._dir, "--protected-mode", "no",
                "--proto-max-bulk-len", "1gb",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    return "redis-server did not start"
                time.sleep(0.05)
        info: dict[str, Any] = client.info("server")  # type: ignore[assignment]
        self.version = str(info.get("redis_version", "?"))
        client.close()
        return None

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, 10)
            self.process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RedisBaseline:
    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.client: Any = None
        self.prefix = ""
        self.load_seconds = 0.0

    def prepare(self, ds: Dataset) -> str | None:
        import redis

        if self.server.process is None:
            return "redis-server is not running"
        started = time.perf_counter()
        self.client = client = redis.Redis(port=self.server.port)
        self.prefix = f"u{ds.users}:"
        client.flushall()
        for name in ds.bitmaps:
            bits = np.zeros(ds.users, dtype=bool)
            bits[ds.array(name)] = True
            client.set(f"{self.prefix}{name}", np.packbits(bits, bitorder="big").tobytes())
            del bits
            if client.bitcount(f"{self.prefix}{name}") != len(ds.bitmaps[name]):
                return f"Redis counted a different cardinality for {name}"
        self.load_seconds = time.perf_counter() - started
        return None

    def plan(self, tree: Expr) -> tuple[list[tuple[str, ...]], str, list[str]]:
        return to_redis(tree, self.prefix)

    def reach(self, plan: tuple[list[tuple[str, ...]], str, list[str]]) -> int:
        commands, result, temps = plan
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        pipe.bitcount(result)
        if temps:
            pipe.delete(*temps)
        replies = pipe.execute()
        return int(replies[-2] if temps else replies[-1])

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.flushall()
                self.client.close()
            except Exception:  # noqa: BLE001
                pass
            self.client = None
