"""``segments serve``: the HTTP API under uvicorn.

Every option is also a ``SEGMENTS_*`` environment variable (the flag wins).
The command validates the settings first (a bad ``SEGMENTS_API_KEYS`` stops
it with a clear message), optionally loads the demo data set into an empty
store, then starts uvicorn on ``api.main:app_factory``. The settings reach
the app (and every worker process, with ``--workers N``) through the
environment, which the command updates with the flags it was given.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

from pydantic import ValidationError

from segments.cli import add_store_option

_FLAGS: dict[str, str] = {
    "host": "--host",
    "port": "--port",
    "workers": "--workers",
    "demo": "--demo",
    "demo_users": "--demo-users",
    "demo_seed": "--demo-seed",
    "max_body_bytes": "--max-body-bytes",
    "max_json_body_bytes": "--max-json-body-bytes",
    "max_query_body_bytes": "--max-query-body-bytes",
    "body_timeout": "--body-timeout",
    "universe": "--universe",
    "cache_bytes": "--cache-bytes",
    "log_level": "--log-level",
    "store": "--store",
    "warm": "--warm",
    "lookup_staleness": "--lookup-staleness",
    "api_keys": "(no flag)",
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "serve",
        help="run the HTTP API and the audience-builder page",
        description="Run the HTTP API (FastAPI under uvicorn). Every option can also be set with "
        "a SEGMENTS_* environment variable; API keys only with SEGMENTS_API_KEYS.",
    )
    add_store_option(parser)
    parser.add_argument("--host", help="address to bind (env SEGMENTS_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (env SEGMENTS_PORT; default 8000; 0 picks a free one)")
    parser.add_argument("--workers", type=int, help="worker processes (env SEGMENTS_WORKERS; default 1)")
    parser.add_argument(
        "--demo",
        action="store_true",
        default=None,
        help="load the demo data set if the store has no segments (env SEGMENTS_DEMO)",
    )
    parser.add_argument(
        "--demo-users",
        type=int,
        help="users in the demo data set (env SEGMENTS_DEMO_USERS; default 10000000)",
    )
    parser.add_argument("--demo-seed", type=int, help="seed of the demo data set (env SEGMENTS_DEMO_SEED)")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        help="largest request body (env SEGMENTS_MAX_BODY_BYTES; default 64 MiB)",
    )
    parser.add_argument(
        "--max-json-body-bytes",
        type=int,
        help="largest JSON body of a write; larger ID sets go as roaring bitmaps "
        "(env SEGMENTS_MAX_JSON_BODY_BYTES; default 8 MiB)",
    )
    parser.add_argument(
        "--max-query-body-bytes",
        type=int,
        help="largest reach or overlap body (env SEGMENTS_MAX_QUERY_BODY_BYTES; default 64 KiB)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        help="seconds a request body may take to arrive (env SEGMENTS_BODY_TIMEOUT; default 30)",
    )
    parser.add_argument("--universe", help="universe segment for '~' (env SEGMENTS_UNIVERSE; default all)")
    parser.add_argument(
        "--cache-bytes", type=int, help="bitmap cache per process (env SEGMENTS_CACHE_BYTES; default 4 GiB)"
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        default=None,
        help="load every segment into the cache before serving (env SEGMENTS_WARM)",
    )
    parser.add_argument(
        "--lookup-staleness",
        type=float,
        help="seconds GET /v1/users/{id}/segments may reuse segment metadata "
        "(env SEGMENTS_LOOKUP_STALENESS; default 0.25; 0: read it on every call)",
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "text"],
        help="log lines as JSON objects or as text (env SEGMENTS_LOG_FORMAT; default json)",
    )
    parser.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn log level (env SEGMENTS_LOG_LEVEL; default info)",
    )
    parser.set_defaults(func=serve)


def _export(args: argparse.Namespace) -> None:
    """Flags given on the command line override the environment, for this process and its workers."""
    if getattr(args, "log_format", None):
        os.environ["SEGMENTS_LOG_FORMAT"] = args.log_format
    for field in _FLAGS:
        value = getattr(args, field, None)
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        os.environ[f"SEGMENTS_{field.upper()}"] = str(value)


def _explain(exc: ValidationError) -> str:
    lines = ["segments serve: invalid settings:"]
    for error in exc.errors():
        field = str(error["loc"][0]) if error.get("loc") else "?"
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        flag = _FLAGS.get(field, "")
        where = f"SEGMENTS_{field.upper()}" + (f" / {flag}" if flag.startswith("--") else "")
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def serve(args: argparse.Namespace) -> int:
    import logging.config

    import segments
    from segments import demo

    from .logging import json_line, log_config, log_format
    from .settings import Settings, get_settings

    if getattr(args, "store", None) == "memory://":
        # A private memory store would be a different one in the app: name it so they share it.
        args.store = "memory://serve"
    _export(args)
    try:
        settings = Settings()
        fmt = log_format()
    except ValidationError as exc:
        print(_explain(exc), file=sys.stderr)
        return 2
    except ValueError as exc:  # SEGMENTS_LOG_FORMAT
        print(f"segments serve: invalid settings:\n  {exc}", file=sys.stderr)
        return 2
    get_settings.cache_clear()
    logging.config.dictConfig(log_config(fmt, settings.log_level))

    def say(message: str) -> None:  # announcements show at every log level
        print(json_line("segments.serve", message) if fmt == "json" else f"segments: {message}", flush=True)

    if settings.demo:
        with segments.connect(settings.store, universe=settings.universe, cache_bytes=0) as segs:
            existing = len(segs.names())
            if existing:
                say(f"store {settings.store} already holds {existing} segments; not loading demo data")
            else:
                say(f"loading demo data: {settings.demo_users:,} users into {settings.store}")
                demo.load(segs, settings.demo_users, settings.demo_seed, report=lambda m: say(f"demo: {m}"))
    return _run_uvicorn(settings, say)


def listen_socket(host: str, port: int) -> socket.socket:
    """The bound (not yet listening) TCP socket that ``--workers N`` processes share.

    uvicorn's own (``Config.bind_socket``) is created as ``socket(family)``, so
    its ``proto`` is 0 and so is that of every socket it accepts. asyncio sets
    ``TCP_NODELAY`` only on accepted sockets whose ``proto`` is ``IPPROTO_TCP``
    (``asyncio.base_events._set_nodelay``), so the workers kept Nagle's
    algorithm on every connection. uvicorn writes a response as two sends
    (status line and headers, then the body), and Nagle held the body until
    the client acknowledged the headers, which a Linux client delays by 40 ms:
    every request on a keep-alive connection took ~44 ms instead of ~0.5 ms.

    This socket names its protocol, so asyncio sets ``TCP_NODELAY`` on each
    accepted connection, and also sets it on the listening socket itself,
    which Linux, the BSDs and macOS copy to the sockets it accepts.

    :raises OSError: if the address cannot be bound (in use, not local ...).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _run_uvicorn(settings: Any, say: Any) -> int:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from .logging import log_config, log_format
    from .protocol import HTTP_PROTOCOL

    logging_config = log_config(log_format(), settings.log_level)
    config = uvicorn.Config(
        "api.main:app_factory",
        log_config=logging_config,
        factory=True,
        http=HTTP_PROTOCOL,  # JSON answers to requests uvicorn's parser refuses (see api.protocol)
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    if settings.workers > 1:
        try:
            sock = listen_socket(settings.host, settings.port)
        except OSError as exc:
            print(f"segments serve: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
            return 1
        with sock:
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            url = f"http://{host}:{sock.getsockname()[1]}"
            say(f"serving {url}/ with {settings.workers} workers (API docs at {url}/docs)")
            Multiprocess(config, sockets=[sock]).run()
        return 0

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started and not self.should_exit:
                port = settings.port
                for server in self.servers:
                    for sock in server.sockets:
                        port = sock.getsockname()[1]
                        break
                host = f"[{settings.host}]" if ":" in settings.host else settings.host
                url = f"http://{host}:{port}"
                say(f"ready: open {url}/ (API docs at {url}/docs)")

    server = AnnouncingServer(config)
    server.run()
    return 0 if server.started else 1
