"""Request and response shapes, as documented in ``/openapi.json``.

Responses on the hot paths are written with ``json.dumps`` directly; these
models describe them for the schema and for clients.
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

EXPR_SCHEMA: dict[str, Any] = {
    "description": "an expression as text, e.g. '(card_gold | card_platinum) & active_30d - churned', "
    'or the same tree as JSON: {"and": [{"segment": "a"}, {"not": {"segment": "b"}}]} '
    "with keys segment, and, or, diff, xor, not",
    "oneOf": [{"type": "string", "maxLength": 65536}, {"type": "object"}],
}
Expression = Annotated[str | dict[str, Any], WithJsonSchema(EXPR_SCHEMA)]


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
    model_config = ConfigDict(extra="forbid")
    expr: Expression


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
