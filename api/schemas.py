"""Request, response and error shapes, as documented in ``/openapi.json``.

Responses on the hot paths are written with ``json.dumps`` directly; these
models describe them for the schema and for clients. Error responses (see
``api.errors``) are described by ``ERROR_BODY``, listed per route with
:func:`responses`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from segments.bitmap import MAX_USER_ID

NAME_PATTERN = r"^[A-Za-z0-9_.:]{1,128}$"
NAME_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": NAME_PATTERN,
    "description": "segment name: 1-128 characters of letters, digits, '_', '.' and ':'",
}
USER_ID_SCHEMA: dict[str, Any] = {
    "type": "integer",
    "minimum": 0,
    "maximum": MAX_USER_ID,
    "description": "user ID: unsigned 32-bit integer",
}
#: Names are validated by the core (400 ``invalid_segment_name``); the schema documents the rule.
SegmentName = Annotated[str, WithJsonSchema(NAME_SCHEMA)]

_TREE_REF = {"$ref": "#/components/schemas/ExpressionTree"}


def _operands(key: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key],
        "additionalProperties": False,
        "properties": {key: {"type": "array", "minItems": 1, "items": _TREE_REF}},
    }


#: The JSON form of an expression, registered in the schema's components (see api.main).
EXPRESSION_TREE_SCHEMA: dict[str, Any] = {
    "title": "ExpressionTree",
    "description": "one key per node: segment (a name), and / or / diff / xor (lists of nodes), not (a node); "
    "at most 64 levels and 256 segment references",
    "oneOf": [
        {
            "type": "object",
            "required": ["segment"],
            "additionalProperties": False,
            "properties": {"segment": NAME_SCHEMA},
        },
        _operands("and"),
        _operands("or"),
        _operands("diff"),
        _operands("xor"),
        {
            "type": "object",
            "required": ["not"],
            "additionalProperties": False,
            "properties": {"not": _TREE_REF},
        },
    ],
}
EXPR_SCHEMA: dict[str, Any] = {
    "description": "an expression as text, e.g. '(card_gold | card_platinum) & active_30d - churned', "
    'or the same tree as JSON: {"and": [{"segment": "a"}, {"not": {"segment": "b"}}]}',
    "oneOf": [{"type": "string", "minLength": 1, "maxLength": 65536}, _TREE_REF],
}


class SegmentInfo(BaseModel):
    name: str
    cardinality: int = Field(description="number of members")
    version: int = Field(description="increases with every change")
    updated_at: datetime = Field(description="time of the last change (UTC)")


class SegmentList(BaseModel):
    segments: list[SegmentInfo]


class Membership(BaseModel):
    member: bool


class UserSegments(BaseModel):
    user_id: int
    segments: list[str] = Field(description="names of the segments that contain the user, sorted")


class ReachRequest(BaseModel):
    """Validated by the route; documented by ``REACH_BODY`` (the expression tree is recursive)."""

    model_config = ConfigDict(extra="forbid")
    expr: str | dict[str, Any]


class ReachResponse(BaseModel):
    reach: int = Field(description="exact number of users the expression selects")
    took_ms: float = Field(description="engine time in milliseconds")
    segments: dict[str, int] = Field(description="version of every segment the query read")


class OverlapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    segments: list[SegmentName] = Field(min_length=1, max_length=32)


class OverlapResponse(BaseModel):
    segments: list[str] = Field(description="the segments, duplicates removed, in request order")
    sizes: list[int]
    matrix: list[list[int]] = Field(description="matrix[i][j] = |segments[i] & segments[j]|")
    versions: dict[str, int]
    took_ms: float


class Status(BaseModel):
    status: str


REACH_BODY: dict[str, Any] = {
    "type": "object",
    "title": "ReachRequest",
    "required": ["expr"],
    "additionalProperties": False,
    "properties": {"expr": EXPR_SCHEMA},
}
IDS_BODY: dict[str, Any] = {
    "type": "object",
    "title": "IdsBody",
    "required": ["ids"],
    "additionalProperties": False,
    "properties": {"ids": {"type": "array", "items": USER_ID_SCHEMA}},
}
EXPR_BODY: dict[str, Any] = {
    "type": "object",
    "title": "ExprBody",
    "required": ["expr"],
    "additionalProperties": False,
    "properties": {"expr": EXPR_SCHEMA},
}
BITMAP_BODY: dict[str, Any] = {
    "type": "string",
    "format": "binary",
    "description": "a Roaring bitmap in the portable serialization (Java, Go, C and pyroaring read and write it)",
}


def members_body(*, allow_expr: bool) -> dict[str, Any]:
    """``openapi_extra`` documenting a body read by ``api.bodies``."""
    json_schema = {"oneOf": [IDS_BODY, EXPR_BODY]} if allow_expr else IDS_BODY
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": json_schema},
                "application/octet-stream": {"schema": BITMAP_BODY},
            },
        }
    }


def json_body(schema: type[BaseModel] | dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body that the route validates itself."""
    if not isinstance(schema, dict):
        schema = schema.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
#: The body of every error response, registered in the schema's components (see api.main).
ERROR_BODY: dict[str, Any] = {
    "title": "ErrorBody",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "what went wrong, e.g. invalid_expression"},
                "message": {"type": "string", "description": "for people: what went wrong and where"},
                "position": {"type": "integer", "description": "invalid_expression: 0-based character"},
                "expected": {
                    "type": "string",
                    "description": "invalid_expression: what would be valid there",
                },
                "segments": {"type": "array", "items": {"type": "string"}, "description": "unknown segments"},
                "dependents": {"type": "array", "items": {"type": "string"}, "description": "in_use: users"},
                "required_scope": {"type": "string"},
                "limit": {"type": "integer", "description": "body_too_large: the limit in bytes"},
                "details": {"type": "array", "items": {"type": "object"}},
            },
            "additionalProperties": True,
        }
    },
}

_ERROR_DESCRIPTIONS = {
    400: "invalid input (expression, name, user ID, bitmap, body)",
    401: "missing or invalid API key",
    403: "the API key lacks the needed scope",
    404: "unknown segment",
    405: "method not allowed",
    408: "the request body did not arrive in time (body_timeout)",
    409: "concurrent writers kept conflicting (conflict, retry), or the name is taken or in use",
    413: "request body too large (body_too_large) or a record over the store's limit (record_too_large)",
    415: "unsupported Content-Type or charset",
    500: "stored data is damaged (corrupt_data) or an unexpected error (internal_error)",
    503: "store unavailable (retry after Retry-After seconds) or misconfigured (storage_misconfigured)",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "description": _ERROR_DESCRIPTIONS.get(status, "error"),
            "content": {"application/json": {"schema": _ERROR_REF}},
        }
        if status == 503:
            entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
        out[status] = entry
    return out
