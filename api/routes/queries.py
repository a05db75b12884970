"""Queries: reach of an expression, pairwise overlap, and the segments of one user.

These are the hot paths. They are plain ``def`` routes (store calls block, so
FastAPI runs them in its threadpool) that write their JSON with
``json.dumps``; no response model is validated on the way out. ``took_ms``
is the engine's time, measured around the library call.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import WithJsonSchema
from starlette.responses import Response

from segments.errors import SegmentsError

from ..auth import ReadAccess
from ..bodies import RawBodyDep, parse_model
from ..deps import MetricsDep, SegmentsDep
from ..errors import responses
from ..responses import json_response
from ..schemas import (
    REACH_BODY,
    USER_ID_SCHEMA,
    OverlapRequest,
    OverlapResponse,
    ReachRequest,
    ReachResponse,
    UserSegments,
    json_body,
)
from .segments import parse_user_id

router = APIRouter(prefix="/v1", tags=["queries"])

_ERRORS = responses(400, 401, 403, 404, 413, 415, 500, 503)


@router.post(
    "/reach",
    summary="Exact reach of an audience expression",
    description="`expr` is text such as `(card_gold | card_platinum) & active_30d - churned` "
    "(operators `|` OR, `&` AND, `-` AND NOT / EXCEPT, `^` XOR, `~` NOT, parentheses) or the same "
    "tree as JSON. `~x` is taken relative to the universe segment (`all` by default).",
    response_model=ReachResponse,
    responses=_ERRORS,
    openapi_extra=json_body(REACH_BODY),
    dependencies=[ReadAccess],
)
def reach(raw: RawBodyDep, segs: SegmentsDep, metrics: MetricsDep) -> Response:
    body = parse_model(raw, ReachRequest)
    started = time.perf_counter()
    try:
        result = segs.reach_detailed(body.expr)
    except SegmentsError:
        metrics.reach_total.labels("error").inc()
        raise
    took = time.perf_counter() - started
    metrics.reach_latency.observe(took)
    metrics.reach_total.labels("ok").inc()
    return json_response(
        {"reach": result.reach, "took_ms": round(took * 1000, 3), "segments": result.versions}
    )


@router.post(
    "/overlap",
    summary="Sizes and pairwise intersections of up to 32 segments",
    response_model=OverlapResponse,
    responses=_ERRORS,
    openapi_extra=json_body(OverlapRequest),
    dependencies=[ReadAccess],
)
def overlap(raw: RawBodyDep, segs: SegmentsDep) -> Response:
    body = parse_model(raw, OverlapRequest)
    started = time.perf_counter()
    result = segs.overlap(body.segments)
    took = time.perf_counter() - started
    return json_response(
        {
            "segments": result.names,
            "sizes": result.sizes,
            "matrix": result.matrix,
            "versions": result.versions,
            "took_ms": round(took * 1000, 3),
        }
    )


@router.get(
    "/users/{user_id}/segments",
    summary="The segments a user belongs to",
    tags=["users"],
    response_model=UserSegments,
    responses=responses(400, 401, 403, 500, 503),
    dependencies=[ReadAccess],
)
def user_segments(
    user_id: Annotated[str, Path(description="user ID"), WithJsonSchema(USER_ID_SCHEMA)],
    segs: SegmentsDep,
) -> Response:
    uid = parse_user_id(user_id)
    return json_response({"user_id": uid, "segments": segs.segments_of(uid)})
