"""How errors become HTTP responses: one table, one JSON shape.

Every error response has the body ``{"error": {"code", "message", ...}}``.
The core says what went wrong and whose fault it is (``segments.errors``:
each class has a ``code`` and a ``fault``); :data:`ERRORS` below is the one
place that turns an exception class into a status and a code. The most
specific class in the exception's MRO that has a row wins, so a new subclass
answers like its parent until it gets a row of its own.

The statuses follow the fault of each class:

| fault | classes | status | code |
| --- | --- | --- | --- |
| CALLER | ``InvalidInput`` and below (``ExpressionError``, ``AudienceCycle``, ``InvalidSegmentName``, ``InvalidUserId``, ``InvalidUserKey``, ``BadTime``, ``InvalidBitmap``) | 400 | the class's (``invalid_expression`` + ``position``, ``expected``; ``audience_cycle`` + ``cycle``; ``bad_time``; ...) |
| CALLER | ``SegmentNotFound``, ``UniverseNotFound`` | 404 | ``segment_not_found`` (+ ``segments``) |
| CALLER | ``NameTaken``, ``InUse`` | 409 | ``name_taken``, ``in_use`` (+ ``dependents``) |
| CALLER | ``RecordTooLarge`` | 413 | ``record_too_large`` |
| TRANSIENT | ``Conflict`` | 409 | ``conflict`` |
| TRANSIENT | ``StorageError``, ``StorageUnavailable``, ``StorageTimeout`` | 503 + ``Retry-After`` | the class's |
| CAPACITY | ``StorageFull`` | 503 + ``Retry-After`` | ``storage_full`` |
| OPERATOR | ``StorageMisconfigured`` | 503 (no ``Retry-After``: retrying will not help) | ``storage_misconfigured`` |
| DATA | ``CorruptSegment`` | 500 | ``corrupt_data`` |
| (a bug) | ``SegmentsError`` of no class above, any other exception | 500 | ``internal_error`` (logged with its traceback) |

The HTTP layer's own errors carry their status and code (``ApiError``):
400 ``invalid_request`` / ``invalid_json``, 401 ``unauthorized``, 403
``forbidden``, 408 ``body_timeout``, 413 ``body_too_large``, 415
``unsupported_media_type``; request validation is 400 ``invalid_request``
(``invalid_json`` when the body is not JSON), and Starlette's own 404 / 405
are ``not_found`` / ``method_not_allowed`` (the 405 with an ``Allow`` header
naming every method of the path). The OpenAPI description of the error body
is ``api.schemas.ErrorBody``.
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
    AudienceCycle,
    BadTime,
    Conflict,
    CorruptSegment,
    ExpressionError,
    ExpressionSyntaxError,
    ExpressionTooComplex,
    InUse,
    InvalidBitmap,
    InvalidInput,
    InvalidSegmentName,
    InvalidUserId,
    InvalidUserKey,
    NameTaken,
    RecordTooLarge,
    SegmentNotFound,
    SegmentsError,
    StorageError,
    StorageFull,
    StorageMisconfigured,
    StorageTimeout,
    StorageUnavailable,
    UniverseNotFound,
)

log = logging.getLogger("api")

#: Seconds a client should wait before retrying a 503 whose cause is temporary.
RETRY_AFTER = "1"
INTERNAL = (500, "internal_error")


def _own(cls: type[SegmentsError], status: int) -> tuple[type[SegmentsError], tuple[int, str]]:
    return cls, (status, cls.code)


#: exception class -> (status, code); the most specific class in the exception's MRO wins.
ERRORS: dict[type[Exception], tuple[int, str]] = dict(
    [
        # CALLER: the request cannot be served as sent; the same request fails again
        _own(InvalidInput, 400),
        _own(ExpressionError, 400),
        _own(ExpressionSyntaxError, 400),
        _own(ExpressionTooComplex, 400),
        _own(AudienceCycle, 400),
        _own(InvalidSegmentName, 400),
        _own(InvalidUserId, 400),
        _own(InvalidUserKey, 400),
        _own(BadTime, 400),
        _own(InvalidBitmap, 400),
        _own(SegmentNotFound, 404),
        _own(UniverseNotFound, 404),
        _own(NameTaken, 409),
        _own(InUse, 409),
        _own(RecordTooLarge, 413),
        # TRANSIENT and CAPACITY: the same request may succeed later
        _own(Conflict, 409),
        _own(StorageError, 503),
        _own(StorageUnavailable, 503),
        _own(StorageTimeout, 503),
        _own(StorageFull, 503),
        # OPERATOR: the store is set up wrongly for this service
        _own(StorageMisconfigured, 503),
        # DATA: a segment's stored records are damaged
        _own(CorruptSegment, 500),
        # a SegmentsError of no class above, and anything else, is a bug
        (SegmentsError, INTERNAL),
        (RequestValidationError, (400, "invalid_request")),
        (Exception, INTERNAL),
    ]
)

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
    """An error the HTTP layer itself detects (auth, body, media type, time)."""

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
    retry: bool = True,
    **extra: Any,
) -> Response:
    """The one shape of every error response; a 503 says when to retry unless ``retry`` is false."""
    body = {"error": {"code": code, "message": message, **extra}}
    all_headers = dict(headers or {})
    if status == 503 and retry:
        all_headers.setdefault("Retry-After", RETRY_AFTER)
    return Response(
        json.dumps(body, default=str, ensure_ascii=False, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=all_headers,
    )


def status_and_code(exc: BaseException) -> tuple[int, str]:
    """The row of :data:`ERRORS` for ``exc``."""
    for cls in type(exc).__mro__:
        row = ERRORS.get(cls)
        if row is not None:
            return row
    return INTERNAL


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
    if isinstance(exc, InUse):
        extra["dependents"] = list(exc.dependents)
    if isinstance(exc, AudienceCycle):
        extra["cycle"] = list(exc.cycle)
    return extra


def segments_error_response(exc: SegmentsError) -> Response:
    status, code = status_and_code(exc)
    if (status, code) == INTERNAL:
        log.error("unexpected %s: %s", type(exc).__name__, exc, exc_info=exc)
        return error_response(status, code, "internal error; the server log has the details")
    if status >= 500:
        log.error("%s: %s", code, exc)
    return error_response(status, code, str(exc) or code, retry=exc.fault.retryable, **_details(exc))


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
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        message = f"nothing at {request.url.path}: no such route or file"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    return error_response(exc.status_code, code, message, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts on this path (Starlette names only the first route's).

    ``HEAD`` goes with ``GET`` (``api.protocol.HeadMiddleware``).
    """
    methods: set[str] = set()
    path = request.url.path
    for pattern, route_methods in getattr(request.app.state, "route_methods", ()):
        if pattern.match(path):
            methods.update(route_methods)
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    details = [{"loc": _loc(e.get("loc", ())), "message": str(e.get("msg", ""))} for e in errors[:20]]
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "invalid_json", "the request body is not valid JSON", details=details)
    status, code = ERRORS[RequestValidationError]
    first = details[0] if details else {"loc": "request", "message": "invalid request"}
    return error_response(status, code, f"{first['loc']}: {first['message']}", details=details)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    status, code = INTERNAL
    return error_response(status, code, "internal error; the server log has the details")


def install(app: FastAPI) -> None:
    """Register the handlers: one per family of exceptions; :data:`ERRORS` decides the rest."""
    app.add_exception_handler(SegmentsError, _on_segments_error)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
