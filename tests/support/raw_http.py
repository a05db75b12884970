"""HTTP requests over a plain socket, for what ``httpx`` will not send or cannot watch.

:func:`exchange` sends a request while it reads the answer, as a client does
that notices an early response (a server may answer 413 before the body is
sent and close the connection; ``httpx`` would report a broken pipe instead).
:func:`chunked` frames a body with ``Transfer-Encoding: chunked``.
:class:`HealthProbe` calls ``GET /healthz`` in a thread for as long as a
``with`` block runs and records each answer's status and latency.
"""

from __future__ import annotations

import http.client
import socket
import statistics
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType

import httpx

__all__ = ["HealthProbe", "RawResponse", "chunked", "exchange", "request_head"]


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    #: whether the server closed the connection after the response
    closed: bool


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    """The request line and headers, ending with the blank line."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunked(parts: Iterable[bytes]) -> Iterator[bytes]:
    """``parts`` in chunked transfer coding, with the terminating chunk."""
    for part in parts:
        if part:
            yield b"%x\r\n" % len(part) + part + b"\r\n"
    yield b"0\r\n\r\n"


def slices(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


def exchange(port: int, head: bytes, body: Iterable[bytes] = (), *, timeout: float = 120) -> RawResponse:
    """Send ``head`` then ``body`` on a new connection while reading the response; return it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def send() -> None:
        try:
            sock.sendall(head)
            for part in body:
                sock.sendall(part)
        except OSError:
            pass  # the server answered early and closed the connection: expected

    sender = threading.Thread(target=send, name="raw-http-sender", daemon=True)
    sender.start()
    try:
        response = http.client.HTTPResponse(sock)
        response.begin()
        data = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        closed = False
        if headers.get("connection", "").lower() == "close":
            try:
                sock.settimeout(5)
                closed = sock.recv(1) == b""
            except ConnectionResetError:
                closed = True
            except TimeoutError:
                pass
        return RawResponse(response.status, headers, data, closed)
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # unblocks a sender the server never read
        except OSError:
            pass
        sender.join(timeout)
        sock.close()


@dataclass
class HealthProbe:
    """``GET /healthz`` every ``interval`` seconds in a thread while the ``with`` block runs."""

    base_url: str
    interval: float = 0.02
    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> HealthProbe:
        self._thread = threading.Thread(target=self._run, name="healthz-probe", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    status = client.get("/healthz").status_code
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                else:
                    self.latencies.append(time.perf_counter() - started)
                    self.statuses.append(status)
                self._stop.wait(self.interval)

    def summary(self) -> str:
        if not self.latencies:
            return f"/healthz: no answer ({len(self.failures)} failures)"
        ms = sorted(x * 1000 for x in self.latencies)
        return (
            f"/healthz: {len(ms)} answers, p50 {statistics.median(ms):.1f} ms, "
            f"p99 {ms[int(len(ms) * 0.99)]:.1f} ms, max {ms[-1]:.1f} ms, {len(self.failures)} failures"
        )
