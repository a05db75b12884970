"""HTTP details the framework leaves to the app: HEAD, and the requests uvicorn refuses itself.

**HEAD.** A HEAD request is a GET whose answer has no content (RFC 9110
§9.3.2), but FastAPI's routes answer only the methods they declare, so HEAD
was 405 on every route. :class:`HeadMiddleware` hands a HEAD request to the
app as a GET and drops the body of the answer: status and headers,
``Content-Length`` included, are those of the GET. The OpenAPI schema lists
no HEAD operations; a 405's ``Allow`` header lists HEAD with GET.

**Malformed requests.** uvicorn's HTTP parser refuses some requests before
the app sees them and used to answer them itself with a plain-text 400
("Invalid HTTP request received."): a request line that is not HTTP/1.x, a
header name or value with forbidden characters, an unreadable or repeated
``Content-Length``, ``Content-Length`` together with ``Transfer-Encoding``,
a bad chunk size, a NUL in the target, TLS on the plain-text port.
:class:`JsonErrorProtocol` (uvicorn's httptools protocol, which ``segments
serve`` uses) answers those with the usual JSON error body, 400
``invalid_request``, and closes the connection. What uvicorn still handles
on its own: an ``Upgrade`` request (WebSocket, h2c) is served as the plain
HTTP/1.1 request it also is, with a warning in the log; and a plain-text 500
"Internal Server Error" if the app failed without answering, which the
app's exception handlers (``api.errors``) leave to bugs in those handlers.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HTTP_PROTOCOL", "HeadMiddleware", "JsonErrorProtocol"]

#: ``uvicorn.Config(http=...)`` for :class:`JsonErrorProtocol`
HTTP_PROTOCOL = "api.protocol:JsonErrorProtocol"

_BAD_REQUEST = json.dumps(
    {
        "error": {
            "code": "invalid_request",
            "message": "the request is not valid HTTP/1.1 (request line, a header, or the body framing); "
            "the connection is closed",
        }
    },
    separators=(",", ":"),
).encode()


class JsonErrorProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering unparseable requests in the API's JSON error shape."""

    def send_400_response(self, msg: str) -> None:
        content = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(_BAD_REQUEST)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                _BAD_REQUEST,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()


class HeadMiddleware:
    """Answer HEAD as GET without the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        as_get = {**scope, "method": "GET"}

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        try:
            await self.app(as_get, receive, headers_only)
        finally:
            if "route" in as_get:  # the access log and the metrics name the route template
                scope["route"] = as_get["route"]
