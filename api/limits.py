"""Bounds on request bodies: how large they may be, and how long they may take to arrive.

Three size limits, each named in its 413 ``body_too_large`` (with ``limit``):

| setting | default | applies to |
| --- | --- | --- |
| ``SEGMENTS_MAX_BODY_BYTES`` | 64 MiB | every body; a portable roaring bitmap may be this large |
| ``SEGMENTS_MAX_JSON_BODY_BYTES`` | 8 MiB | JSON bodies of writes (``ids``, ``expr``) |
| ``SEGMENTS_MAX_QUERY_BODY_BYTES`` | 64 KiB | reach and overlap bodies |

A JSON ID list costs about seven times its size in memory while it is
decoded (one Python integer per ID), so it has its own, smaller limit, and
its 413 points to the binary form, which costs about what it weighs. An
expression is small (at most 256 references, see ``segments.expressions``),
so a query body is too.

:class:`BodyGuardMiddleware` enforces the first limit on the raw ASGI stream
of every request: a ``Content-Length`` over it is refused before the body is
read, a chunked body as soon as it crosses it. The routes read their bodies
with ``api.bodies.read_body`` under the limit of their kind. Either way no
more than the limit is ever buffered.

The middleware also times the body: all of it must arrive within
``SEGMENTS_BODY_TIMEOUT`` seconds (30) of the request's start, else the
request is answered 408 ``body_timeout``. A response to a request whose body
was not read to the end (a refusal, a timeout, a route that takes no body)
closes the connection (``Connection: close``), so an unread body is never
waited for.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError, error_response
from .settings import Settings

__all__ = ["BodyGuardMiddleware", "BodyLimit", "Limits", "announced_length"]


@dataclass(frozen=True)
class BodyLimit:
    """A body size limit, the setting that sets it, and advice for the caller who crossed it."""

    max_bytes: int
    setting: str
    what: str = "request body"
    advice: str = ""

    def error(self) -> ApiError:
        message = f"{self.what} exceeds the limit of {self.max_bytes} bytes ({self.setting})"
        return ApiError(
            413, "body_too_large", message + (f"; {self.advice}" if self.advice else ""), limit=self.max_bytes
        )


@dataclass(frozen=True)
class Limits:
    """The body limits of one app, from its settings."""

    body: BodyLimit
    json: BodyLimit
    query: BodyLimit
    timeout: float

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        max_body, max_json, max_query = (
            settings.max_body_bytes,
            settings.max_json_body_bytes,
            settings.max_query_body_bytes,
        )
        return cls(
            body=BodyLimit(max_body, "SEGMENTS_MAX_BODY_BYTES"),
            json=BodyLimit(
                max_json,
                "SEGMENTS_MAX_JSON_BODY_BYTES",
                "a JSON body",
                f"send a large set of IDs as a portable roaring bitmap with Content-Type: "
                f"application/octet-stream (up to {max_body} bytes)",
            ),
            query=BodyLimit(
                max_query,
                "SEGMENTS_MAX_QUERY_BODY_BYTES",
                "a query body",
                "an expression names at most 256 segments and nests at most 64 levels",
            ),
            timeout=settings.body_timeout,
        )


def announced_length(scope: Scope) -> int | None:
    """The request's ``Content-Length`` (``None`` if absent; -1 if unreadable)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


def _has_body(scope: Scope) -> bool:
    length = announced_length(scope)
    if length is not None:
        return length != 0
    return any(name == b"transfer-encoding" for name, _ in scope.get("headers", ()))


class BodyGuardMiddleware:
    def __init__(self, app: ASGIApp, limit: BodyLimit, timeout: float) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        announced = announced_length(scope)
        if announced is not None and announced > limit.max_bytes:
            exc = limit.error()
            response = error_response(
                exc.status, exc.code, exc.message, headers={"Connection": "close"}, **exc.extra
            )
            await response(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        complete = not _has_body(scope)
        seen = 0

        async def guarded_receive() -> Message:
            nonlocal complete, seen
            if complete:  # after the body: waiting for a disconnect is not timed
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise ApiError(
                    408,
                    "body_timeout",
                    f"the request body did not arrive within {self.timeout:g} s (SEGMENTS_BODY_TIMEOUT)",
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit.max_bytes:
                    raise limit.error()
                complete = not message.get("more_body", False)
            else:
                complete = True  # disconnected
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not complete:
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, guarded_receive, closing_send)
