"""The request-body size limit, enforced on the raw ASGI stream.

A request announcing a ``Content-Length`` over the limit is refused before
its body is read; a chunked body is counted as it arrives and refused as
soon as it crosses the limit. Either way the client gets 413
``body_too_large`` in the usual error shape, and no more than the limit is
ever buffered.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError, error_response


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "body_too_large",
        f"request body exceeds the limit of {limit} bytes (SEGMENTS_MAX_BODY_BYTES)",
        limit=limit,
    )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    announced = int(value)
                except ValueError:
                    announced = -1
                if announced > limit:
                    exc = too_large(limit)
                    response = error_response(
                        exc.status, exc.code, exc.message, headers={"Connection": "close"}, **exc.extra
                    )
                    await response(scope, receive, send)
                    return
                break
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large(limit)
            return message

        await self.app(scope, counting_receive, send)
