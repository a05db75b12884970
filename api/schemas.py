"""Request, response and error shapes, as documented in ``/openapi.json``.

Responses on the hot paths are written with ``json.dumps`` directly; these
models describe them for the schema and for clients. Error responses (see
``api.errors``) are described by ``ERROR_BODY``, listed per route with
:func:`responses`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, WithJsonSchema

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
#: a window of a windowed segment (``segments.expressions.ast.Window``)
WINDOW_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": r"^([1-9][0-9]{0,5}[dh]|[0-9]{4}-[0-9]{2}-[0-9]{2}(\.\.[0-9]{4}-[0-9]{2}-[0-9]{2})?)$",
    "description": "the last N days or hours up to now (7d, 24h) or UTC dates (2026-11-30, 2026-11-01..2026-11-30)",
}
DATE_SCHEMA: dict[str, Any] = {"type": "string", "format": "date", "description": "a UTC date, inclusive"}
#: a moment: ``at`` of a write, ``as_of`` of a reach, ``from``/``to`` of a history (``segments.windows.parse_time``)
TIME_SCHEMA: dict[str, Any] = {
    "description": "an ISO 8601 date or timestamp (2026-11-30, 2026-11-30T14:05:00Z; no zone: UTC) "
    "or seconds since the epoch",
    "oneOf": [{"type": "string", "minLength": 1, "maxLength": 64}, {"type": "number"}],
}
#: ``TIME_SCHEMA`` for a query parameter (text only)
TIME_QUERY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "description": TIME_SCHEMA["description"].replace(" or seconds since the epoch", ""),
}


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
    "description": "one key per node: segment (a name; of a windowed segment optionally with a window, "
    "or from and to dates), and / or / diff / xor (lists of nodes), not (a node); "
    "at most 64 levels and 256 segment references",
    "oneOf": [
        {
            "type": "object",
            "required": ["segment"],
            "additionalProperties": False,
            "properties": {"segment": NAME_SCHEMA},
        },
        {
            "type": "object",
            "required": ["segment", "window"],
            "additionalProperties": False,
            "properties": {"segment": NAME_SCHEMA, "window": WINDOW_SCHEMA},
        },
        {
            "type": "object",
            "required": ["segment", "from"],
            "additionalProperties": False,
            "properties": {"segment": NAME_SCHEMA, "from": DATE_SCHEMA, "to": DATE_SCHEMA},
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


class WindowedInfo(BaseModel):
    name: str
    windowed: Literal[True] = Field(description="always true: tells a windowed segment from a plain one")
    granularity: Literal["day", "hour"] = Field(description="UTC bucket size")
    retention: int = Field(description="buckets kept; older ones are deleted")
    buckets: int = Field(description="buckets that exist")
    oldest: datetime | None = Field(description="start of the oldest bucket (null: none yet)")
    newest: datetime | None = Field(description="start of the newest bucket (null: none yet)")
    cardinality: int = Field(description="members over the whole retention (the union of every bucket)")
    created_at: datetime


class SegmentList(BaseModel):
    segments: list[SegmentInfo] = Field(description="plain segments (time buckets of windowed ones are not listed)")
    windowed: list[WindowedInfo] = Field(description="windowed segments")


class WindowRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    granularity: Literal["day", "hour"] = Field("day", description="UTC bucket size")
    retention: StrictInt = Field(400, ge=1, le=100_000, description="buckets to keep")


class HistoryPoint(BaseModel):
    version: int
    at: datetime = Field(description="when the version was published (windowed: the bucket's start)")
    cardinality: int
    op: str = Field(description="replace, add, remove, apply... (windowed: bucket)")
    added: int | None = Field(description="IDs added by the change (null: not computed)")
    removed: int | None = Field(description="IDs removed by the change (null: not computed)")


class SegmentHistory(BaseModel):
    points: list[HistoryPoint]


class Deleted(BaseModel):
    deleted: list[str] = Field(description="what was deleted: the name first, then the audiences cascaded")


class Membership(BaseModel):
    member: bool


class UserSegments(BaseModel):
    user_id: int
    segments: list[str] = Field(description="names of the segments that contain the user, sorted")
    audiences: list[str] | None = Field(
        None, description="with ?audiences=true: names of the audiences the user is in, sorted"
    )


#: a moment as a request sends it (``TIME_SCHEMA``); parsed by ``segments.windows.parse_time``
Time = StrictStr | StrictFloat | StrictInt


class ReachRequest(BaseModel):
    """Validated by the route; documented by ``REACH_BODY`` (the expression tree is recursive)."""

    model_config = ConfigDict(extra="forbid")
    expr: str | dict[str, Any]
    as_of: Time | None = None


class ReachResponse(BaseModel):
    reach: int = Field(description="exact number of users the expression selects")
    took_ms: float = Field(description="engine time in milliseconds")
    segments: dict[str, int] = Field(description="version of every segment the query read")
    audiences: dict[str, int] | None = Field(
        None, description="definition version of every audience the expression used (only when it used some)"
    )
    as_of: datetime | None = Field(None, description="the as_of of the request (only when it had one)")


class ReachHistoryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expr: str | dict[str, Any]
    start: Time = Field(alias="from")
    end: Time = Field(alias="to")
    step: str = Field("1d", pattern=r"^[1-9][0-9]{0,5}[dh]$")


class ReachPoint(BaseModel):
    at: datetime
    reach: int


class ReachHistory(BaseModel):
    points: list[ReachPoint] = Field(description="the reach as of each step, from 'from' to 'to' inclusive")


# -- audiences, per-user checks, insights ------------------------------------------

#: descriptions of audiences are at most this long (``segments.audiences.MAX_DESCRIPTION``)
MAX_DESCRIPTION = 1000
#: audiences one user may be checked against in one request
MAX_MATCH_AUDIENCES = 256
#: users of one batch match
MAX_BATCH_USERS = 10_000
#: segments of one insights request
MAX_INSIGHT_SEGMENTS = 1000


class AudienceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expr: str | dict[str, Any]
    description: str = Field("", max_length=MAX_DESCRIPTION)


class AudienceSummary(BaseModel):
    name: str
    expr: str = Field(description="the definition in canonical text")
    description: str
    version: int = Field(description="definition version: increases with every PUT")
    updated_at: datetime


class AudienceInfo(AudienceSummary):
    created_at: datetime
    reach: int = Field(description="current reach of the definition, evaluated now")
    segments: dict[str, int] = Field(description="version of every segment the reach read")
    audiences: dict[str, int] = Field(description="definition version of every audience the definition uses")


class AudienceList(BaseModel):
    audiences: list[AudienceSummary]


class DefinitionInfo(BaseModel):
    version: int
    at: datetime
    expr: str
    description: str


class AudienceHistory(BaseModel):
    definitions: list[DefinitionInfo] = Field(description="oldest first; the last 100 definitions are kept")


class MatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expr: str | dict[str, Any] | None = None
    audiences: list[SegmentName] | None = Field(None, min_length=1, max_length=MAX_MATCH_AUDIENCES)


class MatchResponse(BaseModel):
    user: int
    match: bool | None = Field(None, description="whether the user is selected by expr (for an expr request)")
    audiences: dict[str, bool] | None = Field(None, description="per audience (for an audiences request)")


class BatchMatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: list[StrictInt]
    expr: str | dict[str, Any]


class BatchMatchResponse(BaseModel):
    matches: list[bool] = Field(description="one answer per user, in request order")


class InsightsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expr: str | dict[str, Any]
    segments: list[SegmentName] | None = Field(None, min_length=1, max_length=MAX_INSIGHT_SEGMENTS)


class InsightRow(BaseModel):
    segment: str
    both: int = Field(description="users in both the audience and the segment")
    share_of_audience: float = Field(description="both / reach")
    share_of_universe: float = Field(description="|segment & universe| / |universe|")
    index: float | None = Field(description="share_of_audience / share_of_universe * 100 (null: empty segment)")


class InsightsResponse(BaseModel):
    reach: int
    universe: int = Field(description="size of the universe segment")
    rows: list[InsightRow] = Field(description="by index, highest first; null indexes last")
    segments: dict[str, int] = Field(description="version of every segment read")
    audiences: dict[str, int] = Field(description="definition version of every audience used")
    took_ms: float


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
    "properties": {
        "expr": EXPR_SCHEMA,
        "as_of": {**TIME_SCHEMA, "description": "evaluate the windows as of this moment (default: now)"},
    },
}
REACH_HISTORY_BODY: dict[str, Any] = {
    "type": "object",
    "title": "ReachHistoryRequest",
    "required": ["expr", "from", "to"],
    "additionalProperties": False,
    "properties": {
        "expr": EXPR_SCHEMA,
        "from": {**TIME_SCHEMA, "description": "the first moment"},
        "to": {**TIME_SCHEMA, "description": "the last moment (inclusive); at most 1,000 steps after 'from'"},
        "step": {"type": "string", "pattern": r"^[1-9][0-9]{0,5}[dh]$", "default": "1d",
                 "description": "days or hours between points: 1d, 7d, 6h"},
    },
}
AUDIENCE_BODY: dict[str, Any] = {
    "type": "object",
    "title": "AudienceRequest",
    "required": ["expr"],
    "additionalProperties": False,
    "properties": {
        "expr": EXPR_SCHEMA,
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION, "default": ""},
    },
}
_NAMES = {"type": "array", "items": NAME_SCHEMA, "minItems": 1}
MATCH_BODY: dict[str, Any] = {
    "title": "MatchRequest",
    "oneOf": [
        {"type": "object", "required": ["expr"], "additionalProperties": False, "properties": {"expr": EXPR_SCHEMA}},
        {
            "type": "object",
            "required": ["audiences"],
            "additionalProperties": False,
            "properties": {"audiences": {**_NAMES, "maxItems": MAX_MATCH_AUDIENCES}},
        },
    ],
}
BATCH_MATCH_BODY: dict[str, Any] = {
    "type": "object",
    "title": "BatchMatchRequest",
    "required": ["users", "expr"],
    "additionalProperties": False,
    "properties": {
        "users": {"type": "array", "items": USER_ID_SCHEMA, "maxItems": MAX_BATCH_USERS},
        "expr": EXPR_SCHEMA,
    },
}
INSIGHTS_BODY: dict[str, Any] = {
    "type": "object",
    "title": "InsightsRequest",
    "required": ["expr"],
    "additionalProperties": False,
    "properties": {
        "expr": EXPR_SCHEMA,
        "segments": {**_NAMES, "maxItems": MAX_INSIGHT_SEGMENTS,
                     "description": "the segments to rank (default: every segment but the universe)"},
    },
}
_AT = {**TIME_SCHEMA, "description": "windowed segments: when (which bucket); default now"}
IDS_BODY: dict[str, Any] = {
    "type": "object",
    "title": "IdsBody",
    "required": ["ids"],
    "additionalProperties": False,
    "properties": {"ids": {"type": "array", "items": USER_ID_SCHEMA}, "at": _AT},
}
EXPR_BODY: dict[str, Any] = {
    "type": "object",
    "title": "ExprBody",
    "required": ["expr"],
    "additionalProperties": False,
    "properties": {"expr": EXPR_SCHEMA, "at": _AT},
}
BITMAP_BODY: dict[str, Any] = {
    "type": "string",
    "format": "binary",
    "description": "a Roaring bitmap in the portable serialization (Java, Go, C and pyroaring read and write it)",
}


def members_body(*, allow_expr: bool) -> dict[str, Any]:
    """``openapi_extra`` documenting a body read by ``api.bodies``."""
    json_schema = {"oneOf": [IDS_BODY, KEYS_BODY, EXPR_BODY] if allow_expr else [IDS_BODY, KEYS_BODY]}
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
                "cycle": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "audience_cycle: the path of names that would use itself",
                },
                "required_scope": {"type": "string"},
                "limit": {"type": "integer", "description": "body_too_large: the limit in bytes"},
                "details": {"type": "array", "items": {"type": "object"}},
            },
            "additionalProperties": True,
        }
    },
}

_ERROR_DESCRIPTIONS = {
    400: "invalid input (expression, name, user ID, bitmap, time, body)",
    401: "missing or invalid API key",
    403: "the API key lacks the needed scope",
    404: "unknown segment or audience",
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


# -- string user keys (api.routes.keys) ---------------------------------------------------------

#: The most user keys (or IDs, for reverse) one request may carry.
MAX_KEYS_PER_REQUEST = 100_000
USER_KEY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 256,
    "description": "user key: 1-256 bytes of UTF-8 without control characters, compared exactly",
}
_KEY_LIST: dict[str, Any] = {"type": "array", "items": USER_KEY_SCHEMA, "maxItems": MAX_KEYS_PER_REQUEST}
_ID_LIST: dict[str, Any] = {"type": "array", "items": USER_ID_SCHEMA, "maxItems": MAX_KEYS_PER_REQUEST}
KEYS_BODY: dict[str, Any] = {
    "type": "object",
    "title": "KeysBody",
    "description": "users by string key: replace and add give keys never seen new IDs; remove skips them",
    "required": ["keys"],
    "additionalProperties": False,
    "properties": {"keys": _KEY_LIST, "at": _AT},
}


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: validated by the core (400 ``invalid_user_key`` names the first bad one)
    keys: Annotated[list[Any], WithJsonSchema(_KEY_LIST)]
    create: bool = Field(False, strict=True, description="give keys never seen new IDs (scope write)")


class TranslateResponse(BaseModel):
    ids: list[int | None] = Field(description="the ID of each key, in order; null: never seen (without create)")


class ReverseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: Annotated[list[Any], WithJsonSchema(_ID_LIST)]


class ReverseResponse(BaseModel):
    keys: list[str | None] = Field(description="the key of each ID, in order; null: no key has that ID")


class KeySegments(BaseModel):
    key: str
    user_id: int | None = Field(description="the key's ID; null for a key never seen (in no segment)")
    segments: list[str] = Field(description="names of the segments that contain the user, sorted")


class KeyMembership(BaseModel):
    key: str
    user_id: int | None
    member: bool


class KeyMatchResponse(BaseModel):
    key: str
    user: int | None = Field(description="the key's ID; null for a key never seen (it matches nothing)")
    match: bool | None = None
    audiences: dict[str, bool] | None = None
