"""Structured logs of the API process: JSON lines, one access line per request, request IDs.

``SEGMENTS_LOG_FORMAT=json`` (the default) makes every logger of the process
(``uvicorn``, ``uvicorn.error``, ``api``, ``segments`` ...) write one JSON
object per line to stderr::

    {"ts": "2024-05-01T12:00:00.123Z", "level": "info", "logger": "api.access",
     "msg": "POST /v1/reach 200", "method": "POST", "route": "/v1/reach",
     "path": "/v1/reach", "status": 200, "duration_ms": 0.84, "request_id": "..."}

``SEGMENTS_LOG_FORMAT=text`` writes the same records as readable text.

:class:`RequestIdMiddleware` gives every HTTP request an ID: the caller's
``X-Request-ID`` if it is 1-128 characters of ``[A-Za-z0-9._-]``, else a new
``uuid4`` hex. The ID is returned in the ``X-Request-ID`` response header,
logged on the request's access line and on every other line logged while
the request is handled (also from the threadpool, which inherits the
context), so an error line can be matched with the request that caused it.
The access line replaces uvicorn's own (turned off in :func:`log_config`):
it names the route *template* (``/v1/segments/{name}``), so it can be
aggregated, and the duration.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any, Final, Literal

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from segments.logs import JsonFormatter as BaseJsonFormatter
from segments.logs import TextFormatter as BaseTextFormatter

__all__ = [
    "ENV_VAR",
    "REQUEST_ID_HEADER",
    "JsonFormatter",
    "LogFormat",
    "RequestIdMiddleware",
    "current_request_id",
    "json_line",
    "log_config",
    "log_format",
    "valid_request_id",
]

LogFormat = Literal["json", "text"]

#: the environment variable that picks the format
ENV_VAR: Final = "SEGMENTS_LOG_FORMAT"
REQUEST_ID_HEADER: Final = "X-Request-ID"

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_request_id: ContextVar[str | None] = ContextVar("segments_request_id", default=None)
access_log = logging.getLogger("api.access")


def log_format(value: str | None = None) -> LogFormat:
    """The log format named by ``value`` (default: ``$SEGMENTS_LOG_FORMAT``, else json).

    :raises ValueError: for anything but ``json`` or ``text``.
    """
    raw = os.environ.get(ENV_VAR, "") if value is None else value
    text = raw.strip().lower() or "json"
    if text == "json":
        return "json"
    if text == "text":
        return "text"
    raise ValueError(f"{ENV_VAR}={raw!r}: expected json or text")


def valid_request_id(value: str | None) -> bool:
    """Whether a caller's request ID may be used as is (1-128 chars of ``[A-Za-z0-9._-]``)."""
    return value is not None and _REQUEST_ID.fullmatch(value) is not None


def current_request_id() -> str | None:
    """The ID of the request being handled in this context, if any."""
    return _request_id.get()


def _with_request_id(fields: dict[str, str], record: logging.LogRecord) -> dict[str, str]:
    request_id = getattr(record, "request_id", None) or _request_id.get()
    if request_id is not None:
        fields["request_id"] = request_id
    return fields


class JsonFormatter(BaseJsonFormatter):
    """The shared JSON formatter (``segments.logs``), with the request ID of the current request."""

    def context(self, record: logging.LogRecord) -> dict[str, str]:
        return _with_request_id(super().context(record), record)


class _TextFormatter(BaseTextFormatter):
    """Readable lines: ``time level logger: msg [request_id=...]``."""

    def context(self, record: logging.LogRecord) -> dict[str, str]:
        return _with_request_id(super().context(record), record)


def json_line(logger: str, message: str, level: int = logging.INFO) -> str:
    """One JSON log line, for messages printed whatever the log level (``segments serve`` announcements)."""
    record = logging.LogRecord(logger, level, __file__, 0, message, None, None)
    return JsonFormatter().format(record)


def _level(level: str) -> str | int:
    name = level.strip().upper()
    return 5 if name == "TRACE" else name  # uvicorn's TRACE level is 5


def log_config(fmt: LogFormat, level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict for uvicorn's ``log_config``: every logger, one format.

    uvicorn's own access log is silenced: :class:`RequestIdMiddleware` writes a better one.
    """
    formatter = f"{__name__}.{'JsonFormatter' if fmt == 'json' else '_TextFormatter'}"
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}, "access": {"()": formatter}},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": _level(level)},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True, "level": _level(level)},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"},
        },
    }


class RequestIdMiddleware:
    """Assigns the request ID, returns it in ``X-Request-ID`` and logs one access line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered: str | None = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                offered = value.decode("latin-1")
                break
        request_id = offered if offered is not None and valid_request_id(offered) else uuid.uuid4().hex
        token = _request_id.set(request_id)
        started = time.perf_counter()
        status = 500
        header = (b"x-request-id", request_id.encode("ascii"))

        async def tagging_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        try:
            await self.app(scope, receive, tagging_send)
        finally:
            route: BaseRoute | None = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = str(scope.get("method", ""))
            duration_ms = round((time.perf_counter() - started) * 1000, 3)
            level = logging.INFO if status < 500 else logging.WARNING
            if access_log.isEnabledFor(level):
                access_log.log(
                    level,
                    "%s %s %d",
                    method,
                    template,
                    status,
                    extra={
                        "method": method,
                        "route": template,
                        "path": scope.get("path", ""),
                        "status": status,
                        "duration_ms": duration_ms,
                        "request_id": request_id,
                        "client": _client(scope),
                    },
                )
            _request_id.reset(token)


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    if not client:
        return None
    host, port = client[0], client[1]
    return f"{host}:{port}"
