"""Queries: reach of an expression, pairwise overlap, and the segments of one user.

These are the hot paths. ``reach`` and the user lookup skip FastAPI's
dependency machinery (auth inline, one explicit thread hop for decoding the
body and for the blocking store and bitmap work; none for a lookup that
needs no I/O, see ``api.lookups``), and all of them write their JSON with
``json.dumps``: no response model is validated on the way out. Query bodies
are small (``SEGMENTS_MAX_QUERY_BODY_BYTES``) and are decoded in the
threadpool, never on the event loop. ``took_ms`` is the engine's time,
measured around the library call.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import WithJsonSchema
from starlette.responses import Response

from segments import ReachResult, Segments
from segments.errors import SegmentsError

from .. import lookups
from ..auth import BEARER_SECURITY, ReadAccess, authorize
from ..bodies import QueryBody, RawBody, parse_model, query_body
from ..deps import SegmentsDep, get_segments
from ..errors import ApiError
from ..metrics import Metrics
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
    responses,
)
from .segments import parse_user_id
from .windows import moment

router = APIRouter(prefix="/v1", tags=["queries"])

_ERRORS = responses(400, 401, 403, 404, 408, 413, 415, 500, 503)


@router.post(
    "/reach",
    summary="Exact reach of an audience expression",
    description="`expr` is text such as `(card_gold | card_platinum) & active_30d - churned` "
    "(operators `|` OR, `&` AND, `-` AND NOT / EXCEPT, `^` XOR, `~` NOT, parentheses) or the same "
    "tree as JSON. `~x` is taken relative to the universe segment (`all` by default). Names may be "
    "audiences (expanded, evaluated now) and windowed segments with a window (`paid_bill[7d]`); "
    "`as_of` evaluates the windows as of an earlier moment.",
    response_model=ReachResponse,
    responses=_ERRORS,
    openapi_extra={**json_body(REACH_BODY), **BEARER_SECURITY},
)
async def reach(request: Request) -> Response:
    # The hottest route: no FastAPI dependencies (each costs tens of microseconds), one
    # thread hop for decoding the body and the store and bitmap work, JSON written with json.dumps.
    authorize(request, "read")
    raw = await query_body(request)
    segs = await get_segments(request)
    metrics: Metrics = request.app.state.metrics
    try:
        result, took, as_of = await run_in_threadpool(_timed_reach, segs, raw)
    except SegmentsError:
        metrics.reach_total.labels("error").inc()
        raise
    metrics.reach_latency.observe(took)
    metrics.reach_total.labels("ok").inc()
    body: dict[str, Any] = {"reach": result.reach, "took_ms": round(took * 1000, 3), "segments": result.versions}
    if result.audiences:
        body["audiences"] = result.audiences
    if as_of is not None:
        body["as_of"] = as_of.isoformat()
    return json_response(body)


def _timed_reach(segs: Segments, raw: RawBody) -> tuple[ReachResult, float, datetime | None]:
    request = parse_model(raw, ReachRequest)
    as_of = None if request.as_of is None else moment(request.as_of, "as_of")
    started = time.perf_counter()
    result = segs.reach_detailed(request.expr, as_of=as_of)
    return result, time.perf_counter() - started, as_of


@router.post(
    "/overlap",
    summary="Sizes and pairwise intersections of up to 32 segments",
    response_model=OverlapResponse,
    responses=_ERRORS,
    openapi_extra=json_body(OverlapRequest),
    dependencies=[ReadAccess],
)
def overlap(raw: QueryBody, segs: SegmentsDep) -> Response:
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
    openapi_extra=BEARER_SECURITY,
)
async def user_segments(
    request: Request,
    user_id: Annotated[str, Path(description="user ID"), WithJsonSchema(USER_ID_SCHEMA)],
    audiences: Annotated[
        bool, Query(description='also list the audiences the user is in, under "audiences"')
    ] = False,
) -> Response:
    # Sits inside payment fraud checks: kept as lean as reach (see there), and answered on the
    # event loop when the library can answer from memory (api.lookups), which saves the thread hop.
    authorize(request, "read")
    uid = parse_user_id(user_id)
    segs = await get_segments(request)
    names, inline = await lookups.segments_of(segs, uid)
    metrics: Metrics = request.app.state.metrics
    (metrics.lookups_inline if inline else metrics.lookups_threaded).inc()
    if audiences:
        return json_response(
            {"user_id": uid, "segments": names, "audiences": await run_in_threadpool(segs.audiences_of, uid)}
        )
    return json_response({"user_id": uid, "segments": names})


#: what FastAPI's bool query parameters accept (pydantic's lax booleans)
_BOOLS = {
    **dict.fromkeys(("1", "true", "t", "yes", "y", "on"), True),
    **dict.fromkeys(("0", "false", "f", "no", "n", "off"), False),
}


def query_flag(request: Request, name: str) -> bool:
    """A boolean query parameter read by hand, as FastAPI would (400 ``invalid_request`` otherwise)."""
    value = request.query_params.get(name)
    if value is None:
        return False
    flag = _BOOLS.get(value.lower())
    if flag is None:
        raise ApiError(400, "invalid_request", f"query.{name}: Input should be a valid boolean, got {value[:40]!r}")
    return flag


async def user_segments_by_request(request: Request) -> Response:
    """``user_segments`` for ``api.fastpath``: the user ID read from the matched path."""
    return await user_segments(request, request.path_params["user_id"], query_flag(request, "audiences"))
