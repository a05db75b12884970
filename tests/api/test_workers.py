"""``segments serve --workers N``: the workers share one listening socket and answer without Nagle's delay.

uvicorn writes a response in two sends (headers, then body). Without
``TCP_NODELAY`` on the accepted socket, the body waits for the client to
acknowledge the headers, and Linux delays that ACK by 40 ms: every request on
a keep-alive connection took ~44 ms with ``--workers 2`` (see
``api.cli.listen_socket``). No test here measures time: the socket option is
read from the server's own sockets instead.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import http.client
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.cli import listen_socket
from tests.support.api_server import ApiServer, start_api_server

WORKERS = 2
REQUESTS = 20
SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture (added in 5.6)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    store = tmp_path_factory.mktemp("workers") / "segments.db"
    with start_api_server(f"sqlite:///{store}", args=["--workers", str(WORKERS)]) as server:
        yield server


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes, str | None]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read(), response.getheader("connection")


def test_two_workers_answer_sequential_keep_alive_requests(two_workers: ApiServer) -> None:
    conns = [http.client.HTTPConnection("127.0.0.1", two_workers.port, timeout=10) for _ in range(3)]
    try:
        status, _, _ = _get(conns[0], "/healthz")
        assert status == 200
        first_socket = conns[0].sock
        for _ in range(REQUESTS):
            for conn in conns:
                status, body, connection = _get(conn, "/healthz")
                assert status == 200, body
                assert connection != "close"
        assert conns[0].sock is first_socket  # one connection for all of them: keep-alive held
        request = json.dumps({"ids": [1, 2, 3]}).encode()
        conns[1].request("PUT", "/v1/segments/w", body=request, headers={"Content-Type": "application/json"})
        reply = conns[1].getresponse()
        assert reply.status == 200, reply.read()
        reply.read()
        for conn in conns:  # whichever worker holds the connection sees the write
            status, body, _ = _get(conn, "/v1/users/2/segments")
            assert (status, json.loads(body)) == (200, {"user_id": 2, "segments": ["w"]})
    finally:
        for conn in conns:
            conn.close()
    assert f"serving {two_workers.base_url}/ with {WORKERS} workers" in two_workers.output()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry))
    return found


def _borrow_socket(pid: int, fd: int) -> socket.socket | None:
    """A duplicate of socket ``fd`` of process ``pid`` (``pidfd_getfd``), or None if it is gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        local = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if local < 0:
            code = ctypes.get_errno()
            if code == errno.EBADF:
                return None  # closed meanwhile
            if code in (errno.ENOSYS, errno.EPERM, errno.EACCES):
                pytest.skip(f"pidfd_getfd is not allowed here ({errno.errorcode[code]})")
            raise OSError(code, os.strerror(code))
        return socket.socket(fileno=local)
    finally:
        os.close(pidfd)


def _server_end(pids: list[int], client: socket.socket) -> socket.socket:
    """The socket of a worker in ``pids`` whose peer is ``client``."""
    wanted = client.getsockname()
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    continue
            except OSError:
                continue
            sock = _borrow_socket(pid, int(fd))
            if sock is None:
                continue
            try:
                if sock.type == socket.SOCK_STREAM and sock.getpeername() == wanted:
                    return sock
            except OSError:  # a listening or unconnected socket has no peer
                pass
            sock.close()
    raise AssertionError(f"no worker of {pids} holds the server end of {wanted}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the workers' sockets through /proc")
def test_every_worker_connection_has_tcp_nodelay(two_workers: ApiServer) -> None:
    workers = _children(two_workers.process.pid)
    # the supervisor's children: the workers, plus multiprocessing's resource tracker
    assert len(workers) >= WORKERS
    conns = [http.client.HTTPConnection("127.0.0.1", two_workers.port, timeout=10) for _ in range(4)]
    try:
        for _ in range(REQUESTS // 4):
            for conn in conns:
                assert _get(conn, "/healthz")[0] == 200
        for conn in conns:
            assert conn.sock is not None
            with _server_end(workers, conn.sock) as server_end:
                assert server_end.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        for conn in conns:
            conn.close()


def test_listen_socket_hands_tcp_nodelay_to_accepted_connections() -> None:
    """Checked through asyncio, the way a uvicorn worker accepts (``loop.create_server(sock=...)``)."""

    async def accept_one(sock: socket.socket) -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                server_end = transport.get_extra_info("socket")
                accepted.set_result(server_end.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
            try:
                return await asyncio.wait_for(accepted, 30)
            finally:
                writer.close()

    sock = listen_socket("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert asyncio.run(accept_one(sock)) != 0


def test_workers_on_a_port_in_use_stop_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            listen_socket("127.0.0.1", port)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTS_")}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "segments",
                "serve",
                "--store",
                "memory://",
                "--port",
                str(port),
                "--workers",
                "2",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"segments serve: cannot listen on 127.0.0.1:{port}:" in result.stderr
    assert "Traceback" not in result.stderr
