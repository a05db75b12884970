"""How errors become HTTP responses: one table, one JSON shape, a 500 default.

Every error response has the body ``{"error": {"code", "message", ...}}``.
The core says what went wrong (``segments.errors``); this module alone picks
the status. One handler is registered on ``SegmentsError`` and picks the most
specific row of ``STATUS`` by walking the exception's MRO, so a new subclass
in the core falls back to its parent's status (and ``SegmentsError`` itself to
500) until it gets a row of its own.

| exception | status | code |
| --- | --- | --- |
| ``ExpressionError`` (syntax, too complex) | 400 | ``invalid_expression`` (+ ``position``, ``expected``) |
| ``InvalidSegmentName`` | 400 | ``invalid_segment_name`` |
| ``InvalidUserId`` | 400 | ``invalid_user_id`` |
| ``InvalidBitmap`` | 400 | ``invalid_bitmap`` |
| ``InvalidInput`` | 400 | ``invalid_input`` |
| ``SegmentNotFound`` | 404 | ``segment_not_found`` (+ ``segments``) |
| ``Conflict`` | 409 | ``conflict`` |
| ``RecordTooLarge`` | 413 | ``record_too_large`` |
| ``StorageUnavailable`` / ``StorageTimeout`` / ``StorageError`` | 503 + ``Retry-After`` | ``storage_unavailable`` ... |
| ``CorruptSegment`` | 500 | ``corrupt_data`` (damaged stored data: the only deliberate 500) |
| ``SegmentsError`` | 500 | the class's code |

The HTTP layer adds its own (``ApiError``): 400 ``invalid_request`` /
``invalid_json``, 401 ``unauthorized``, 403 ``forbidden``, 404 ``not_found``,
405 ``method_not_allowed``, 413 ``body_too_large``, 415 ``unsupported_media_type``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from segments.errors import (
    Conflict,
    CorruptSegment,
    ExpressionError,
    InvalidBitmap,
    InvalidInput,
    InvalidSegmentName,
    InvalidUserId,
    RecordTooLarge,
    SegmentNotFound,
    SegmentsError,
    StorageError,
    StorageUnavailable,
)

log = logging.getLogger("api")

#: Seconds a client should wait before retrying a 503.
RETRY_AFTER = "1"

#: exception class -> HTTP status. The most specific class in the MRO wins.
STATUS: dict[type[SegmentsError], int] = {
    InvalidInput: 400,
    ExpressionError: 400,
    InvalidSegmentName: 400,
    InvalidUserId: 400,
    InvalidBitmap: 400,
    SegmentNotFound: 404,
    Conflict: 409,
    RecordTooLarge: 413,
    StorageError: 503,
    StorageUnavailable: 503,
    CorruptSegment: 500,
    SegmentsError: 500,
}

#: HTTP status -> code for errors raised by Starlette/FastAPI themselves.
HTTP_CODES: dict[int, str] = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An error the HTTP layer itself detects (auth, body, media type)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """The one shape of every error response."""
    body = {"error": {"code": code, "message": message, **extra}}
    all_headers = dict(headers or {})
    if status == 503:
        all_headers.setdefault("Retry-After", RETRY_AFTER)
    return Response(
        json.dumps(body, default=str, ensure_ascii=False, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=all_headers,
    )


def status_of(exc: SegmentsError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def _details(exc: SegmentsError) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if isinstance(exc, ExpressionError):
        if exc.position is not None:
            extra["position"] = exc.position
        expected = getattr(exc, "expected", "")
        if expected:
            extra["expected"] = expected
    if isinstance(exc, SegmentNotFound):
        extra["segments"] = list(exc.names)
    return extra


def segments_error_response(exc: SegmentsError) -> Response:
    status = status_of(exc)
    code = getattr(exc, "code", "") or "segments_error"
    if status >= 500:
        log.error("%s: %s", code, exc)
    return error_response(status, code, str(exc) or code, **_details(exc))


async def _on_segments_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SegmentsError)
    return segments_error_response(exc)


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, headers=exc.headers, **exc.extra)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code
    if exc.status_code == 400 and "parsing the body" in message:
        code, message = "invalid_json", "the request body is not valid JSON"
    elif exc.status_code == 404 and message == "Not Found":
        message = f"no such route: {request.method} {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    return error_response(exc.status_code, code, message, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts on this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    path = request.url.path
    for pattern, route_methods in getattr(request.app.state, "route_methods", ()):
        if pattern.match(path):
            methods.update(route_methods)
    return sorted(methods)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    details = [{"loc": _loc(e.get("loc", ())), "message": str(e.get("msg", ""))} for e in errors[:20]]
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "invalid_json", "the request body is not valid JSON", details=details)
    first = details[0] if details else {"loc": "request", "message": "invalid request"}
    message = f"{first['loc']}: {first['message']}"
    return error_response(400, "invalid_request", message, details=details)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error; the server log has the details")


def install(app: FastAPI) -> None:
    """Register the handlers: one per family, the table above decides the rest."""
    app.add_exception_handler(SegmentsError, _on_segments_error)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "position": {"type": "integer"},
                "expected": {"type": "string"},
                "segments": {"type": "array", "items": {"type": "string"}},
                "required_scope": {"type": "string"},
                "limit": {"type": "integer"},
                "details": {"type": "array", "items": {"type": "object"}},
            },
            "additionalProperties": True,
        }
    },
}

_DESCRIPTIONS = {
    400: "invalid input (expression, name, user ID, bitmap, body)",
    401: "missing or invalid API key",
    403: "the API key lacks the needed scope",
    404: "unknown segment",
    405: "method not allowed",
    409: "concurrent writers kept conflicting",
    413: "request body too large",
    415: "unsupported Content-Type",
    500: "stored data is damaged",
    503: "store unavailable; retry after Retry-After seconds",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "description": _DESCRIPTIONS.get(status, "error"),
            "content": {"application/json": {"schema": ERROR_SCHEMA}},
        }
        if status == 503:
            entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
        out[status] = entry
    return out
