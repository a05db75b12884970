"""Bodies that carry members: ``{"ids": [...]}``, ``{"expr": ...}`` or portable roaring bytes.

The raw body is read by an async dependency (``raw_body``) so the size limit
applies as it streams in; decoding happens in the route, in the threadpool,
because a large ID list or bitmap costs real CPU. IDs are validated by the
core (``segments.bitmap.to_bitmap``), so a bad one is a 400
``invalid_user_id`` that names it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from .errors import ApiError

_M = TypeVar("_M", bound=BaseModel)

JSON = "application/json"
BINARY = "application/octet-stream"


@dataclass(frozen=True)
class RawBody:
    media_type: str
    data: bytes


@dataclass(frozen=True)
class Members:
    """What a body asked for: a set of IDs (list or roaring bytes) or an expression."""

    ids: Any = None
    expr: Any = None


async def raw_body(request: Request) -> RawBody:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    data = await request.body()
    return RawBody(media_type, data)


RawBodyDep = Annotated[RawBody, Depends(raw_body)]


def _is_json(media_type: str) -> bool:
    return media_type == JSON or (media_type.startswith("application/") and media_type.endswith("+json"))


def parse_json(data: bytes) -> Any:
    """``json.loads`` with every failure turned into 400 ``invalid_json``."""
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, "invalid_json", f"the request body is not valid JSON: {exc.msg}", position=exc.pos
        ) from exc
    except RecursionError as exc:
        raise ApiError(400, "invalid_json", "the request body is nested too deeply") from exc
    except ValueError as exc:  # invalid UTF-8, integers with too many digits
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from exc


def parse_members(body: RawBody, *, allow_expr: bool) -> Members:
    """Decode a members body; every problem is a 4xx ``ApiError`` (or a core error later)."""
    forms = "'ids' or 'expr'" if allow_expr else "'ids'"
    if body.media_type == BINARY:
        return Members(ids=body.data)
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
    value = parse_json(body.data)
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_request", f"the request body must be a JSON object with {forms}")
    allowed = {"ids", "expr"} if allow_expr else {"ids"}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ApiError(
            400, "invalid_request", f"unknown field {unknown[0]!r} in the request body; expected {forms}"
        )
    if len(value) != 1:
        message = "give either 'ids' or 'expr', not both" if value else f"the request body needs {forms}"
        raise ApiError(400, "invalid_request", message)
    if "ids" in value:
        ids = value["ids"]
        if not isinstance(ids, list):
            raise ApiError(
                400, "invalid_user_id", f"'ids' must be a JSON array of user IDs, got {type(ids).__name__}"
            )
        return Members(ids=ids)
    return Members(expr=value["expr"])


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
    try:
        return model.model_validate_json(body.data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc
