"""Request bodies: read under a size limit, decoded as UTF-8 JSON or taken as roaring bytes.

A route reads its body with :func:`read_body` (or the ``MembersBody`` /
``QueryBody`` dependencies) under the limit of its kind (``api.limits``): a
``Content-Length`` over it is refused before anything is read, a streamed
body as soon as it crosses it. Decoding happens in the threadpool, because
a large ID list or bitmap costs real CPU.

Members bodies carry ``{"ids": [...]}``, ``{"keys": [...]}`` (string user keys),
``{"expr": ...}`` (any with an
optional ``"at"``: the time bucket of a windowed segment) or portable
roaring bytes. IDs are validated by the core (``segments.bitmap.to_bitmap``),
so a bad one is a 400 ``invalid_user_id`` that names it. A body that is
exactly ``{"ids": [...]}`` with plain decimal numbers (the usual large one)
is read straight into a numpy array, without one Python integer per ID:
about 8 bytes per ID instead of 40 to 50. Any other body, including every
one with a mistake, goes through ``json.loads``, so errors read the same.

JSON is UTF-8 (RFC 8259 §8.1), the same on every route: a UTF-8 byte order
mark is ignored, a body that looks UTF-16 or UTF-32 is 400 ``invalid_json``,
and a ``charset`` parameter other than UTF-8 is 415
``unsupported_media_type``.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from .errors import ApiError
from .limits import BodyLimit, Limits, announced_length

_M = TypeVar("_M", bound=BaseModel)

JSON = "application/json"
BINARY = "application/octet-stream"
_UTF8 = frozenset({"utf-8", "utf8"})
_WIDE_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_WS = rb"[ \t\n\r]*"  # JSON's whitespace
_ID = rb"(?:0|[1-9][0-9]{0,9})"  # JSON's non-negative integers, at most 10 digits
#: ``{"ids": [...]}`` of plain decimal IDs and nothing else; possessive: no backtracking state per ID
_PLAIN_IDS = re.compile(
    _WS + rb'\{' + _WS + rb'"ids"' + _WS + rb":" + _WS + rb"\[" + _WS
    + rb"(" + _ID + rb"(?:" + _WS + rb"," + _WS + _ID + rb")*+)?"
    + _WS + rb"\]" + _WS + rb"\}" + _WS
)  # fmt: skip


@dataclass(frozen=True)
class RawBody:
    media_type: str
    data: bytes
    #: the ``charset`` parameter of the Content-Type, lower case, if any
    charset: str | None = None


@dataclass(frozen=True)
class Members:
    """What a body asked for: a set of IDs (a JSON list or roaring bytes) or an expression."""

    kind: Literal["ids", "keys", "expr"]
    value: Any
    #: the JSON body's ``at`` (a windowed segment's bucket), if it has one; checked by the core
    at: Any = None


def content_type(request: Request) -> tuple[str, str | None]:
    """The media type (lower case, no parameters) and the charset parameter of the request."""
    media_type, *params = request.headers.get("content-type", "").split(";")
    charset = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return media_type.strip().lower(), charset


async def read_body(request: Request, limit: BodyLimit) -> RawBody:
    """The whole body, refused with 413 as soon as it is known to exceed ``limit``."""
    media_type, charset = content_type(request)
    announced = announced_length(request.scope)
    if announced is not None and announced > limit.max_bytes:
        raise limit.error()
    chunks: list[bytes] = []
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit.max_bytes:
            raise limit.error()
        chunks.append(chunk)
    return RawBody(media_type, b"".join(chunks), charset)


def _limits(request: Request) -> Limits:
    limits: Limits = request.app.state.limits
    return limits


async def members_body(request: Request) -> RawBody:
    """A write's body: a bitmap up to the general limit, JSON up to the JSON limit."""
    limits = _limits(request)
    return await read_body(request, limits.body if content_type(request)[0] == BINARY else limits.json)


async def query_body(request: Request) -> RawBody:
    """A reach or overlap body, under the query limit."""
    return await read_body(request, _limits(request).query)


MembersBody = Annotated[RawBody, Depends(members_body)]
QueryBody = Annotated[RawBody, Depends(query_body)]


def _is_json(media_type: str) -> bool:
    return media_type == JSON or (media_type.startswith("application/") and media_type.endswith("+json"))


def _utf8(body: RawBody) -> bytes:
    """A JSON body's bytes, a leading UTF-8 byte order mark dropped; 415 or 400 unless UTF-8."""
    if body.charset is not None and body.charset not in _UTF8:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"JSON bodies must be UTF-8: the Content-Type names charset={body.charset}; "
            "send the body as UTF-8 (with charset=utf-8 or no charset)",
        )
    data = body.data.removeprefix(codecs.BOM_UTF8)
    if data.startswith(_WIDE_BOMS) or b"\x00" in data[:4]:
        raise ApiError(
            400, "invalid_json", "the request body looks UTF-16 or UTF-32 encoded; JSON bodies must be UTF-8"
        )
    return data


def json_text(body: RawBody) -> str:
    """A JSON body as text (see :func:`_utf8`); 400 ``invalid_json`` if it is not UTF-8."""
    try:
        return _utf8(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400,
            "invalid_json",
            f"the request body is not UTF-8 (byte {exc.start}); JSON bodies must be UTF-8",
        ) from exc


def plain_ids(body: RawBody) -> np.ndarray | None:
    """The IDs of a body that is exactly ``{"ids": [<decimal>, ...]}``, as an array; else ``None``."""
    match = _PLAIN_IDS.fullmatch(_utf8(body))
    if match is None:
        return None
    return np.fromstring(match.group(1) or b"", dtype=np.uint64, sep=",")


def parse_json(body: RawBody) -> Any:
    """The decoded JSON value of ``body``; every failure is a 400 ``invalid_json``."""
    text = json_text(body)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, "invalid_json", f"the request body is not valid JSON: {exc.msg}", position=exc.pos
        ) from exc
    except RecursionError as exc:
        raise ApiError(400, "invalid_json", "the request body is nested too deeply") from exc
    except ValueError as exc:  # integers with too many digits
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from exc


def parse_members(body: RawBody, *, allow_expr: bool) -> Members:
    """Decode a members body; every problem is a 4xx ``ApiError`` (or a core error later)."""
    forms = "'ids', 'keys' or 'expr'" if allow_expr else "'ids' or 'keys'"
    if body.media_type == BINARY:
        return Members("ids", body.data)
    if not _is_json(body.media_type):
        if not body.data and not body.media_type:
            raise ApiError(
                400, "invalid_request", f"a request body is required: JSON with {forms}, or {BINARY}"
            )
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {body.media_type or '(none)'!r} is not supported: send {JSON} "
            f"with {forms}, or {BINARY} with a portable roaring bitmap",
        )
    if not body.data:
        raise ApiError(400, "invalid_json", "the request body is empty; expected a JSON object")
    ids = plain_ids(body)
    if ids is not None:
        return Members("ids", ids)
    value = parse_json(body)
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_request", f"the request body must be a JSON object with {forms}")
    allowed = {"ids", "keys", "expr", "at"} if allow_expr else {"ids", "keys", "at"}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ApiError(
            400,
            "invalid_request",
            f"unknown field {unknown[0]!r} in the request body; expected {forms} (and optionally 'at')",
        )
    at = value.pop("at", None)
    if len(value) != 1:
        given = [f for f in ("ids", "keys", "expr") if f in value]
        message = (
            f"the request body needs {forms}" if not given
            else f"give either {given[0]!r} or {given[1]!r}, not both" if len(given) == 2
            else f"give one of {forms}, not several"
        )
        raise ApiError(400, "invalid_request", message)
    if "ids" in value:
        ids = value["ids"]
        if not isinstance(ids, list):
            raise ApiError(
                400, "invalid_user_id", f"'ids' must be a JSON array of user IDs, got {type(ids).__name__}"
            )
        return Members("ids", ids, at)
    if "keys" in value:  # string user keys, validated and translated by the core (api.routes.keys)
        keys = value["keys"]
        if not isinstance(keys, list):
            raise ApiError(
                400, "invalid_user_key", f"'keys' must be a JSON array of user keys, got {type(keys).__name__}"
            )
        return Members("keys", keys, at)
    return Members("expr", value["expr"], at)


def parse_model(body: RawBody, model: type[_M]) -> _M:
    """A JSON body validated against ``model``; errors are the usual 400/415 responses.

    Routes read their body through this (after the auth dependency has run), rather than
    declaring a body parameter, which FastAPI would parse before checking the API key.
    """
    if body.media_type and not _is_json(body.media_type):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {body.media_type!r} is not supported: send {JSON}",
        )
    text = json_text(body)
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc
