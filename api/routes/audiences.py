"""Audiences (live named expressions), per-user rule checks and audience insights.

* ``/v1/audiences``: define (``PUT``), read with the current reach (``GET``),
  list (cheap: no reach), delete (``?cascade=``) and the history of definitions.
  An audience name is usable wherever a segment name is; it is expanded and
  evaluated from the current segments on every use.
* ``POST /v1/users/{id}/match`` and ``POST /v1/match``: whether users match an
  expression (or each of some audiences), reading only those users' shards.
* ``POST /v1/insights``: how every segment is represented in an audience.

Bodies are read under the query limit (``SEGMENTS_MAX_QUERY_BODY_BYTES``),
except the batch match's, which may carry 10,000 user IDs and is read under
the JSON write limit (``SEGMENTS_MAX_JSON_BODY_BYTES``). Matching is a read
(scope ``read``); the two match routes take only the request (auth inline,
one explicit thread hop), like reach, since they sit inside payments.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import WithJsonSchema
from starlette.responses import Response

from segments import Audience, Segments
from segments.bitmap import check_user_id
from segments.names import check_name

from ..auth import BEARER_SECURITY, ReadAccess, WriteAccess, authorize
from ..bodies import QueryBody, RawBody, parse_model, query_body, read_body
from ..deps import SegmentsDep, get_segments
from ..errors import ApiError
from ..limits import Limits
from ..responses import iso_ms, json_response
from ..schemas import (
    AUDIENCE_BODY,
    BATCH_MATCH_BODY,
    INSIGHTS_BODY,
    MATCH_BODY,
    MAX_BATCH_USERS,
    NAME_SCHEMA,
    USER_ID_SCHEMA,
    AudienceHistory,
    AudienceInfo,
    AudienceList,
    AudienceRequest,
    BatchMatchRequest,
    BatchMatchResponse,
    Deleted,
    InsightsRequest,
    InsightsResponse,
    MatchRequest,
    MatchResponse,
    json_body,
    responses,
)
from .segments import parse_user_id

router = APIRouter(prefix="/v1", tags=["audiences"])

AudiencePath = Annotated[str, Path(description="audience name"), WithJsonSchema(NAME_SCHEMA)]
UserIdPath = Annotated[str, Path(description="user ID"), WithJsonSchema(USER_ID_SCHEMA)]

_READ_ERRORS = responses(400, 401, 403, 404, 500, 503)
_QUERY_ERRORS = responses(400, 401, 403, 404, 408, 413, 415, 500, 503)
_WRITE_ERRORS = responses(400, 401, 403, 404, 408, 409, 413, 415, 500, 503)


def audience_body(audience: Audience, segs: Segments) -> dict[str, Any]:
    """An audience with its current reach and the versions that reach read."""
    result = segs.reach_detailed(audience.expr)
    return {
        **summary_body(audience),
        "created_at": iso_ms(audience.created_ms),
        "reach": result.reach,
        "segments": result.versions,
        "audiences": result.audiences,
    }


def summary_body(audience: Audience) -> dict[str, Any]:
    return {
        "name": audience.name,
        "expr": str(audience.expr),
        "description": audience.description,
        "version": audience.version,
        "updated_at": iso_ms(audience.updated_ms),
    }


@router.put(
    "/audiences/{name}",
    summary="Define (or redefine) an audience: a live named expression",
    description="Stores `expr` under `name` (one namespace with segments: 409 `name_taken` if the name is a "
    "segment). Every name it uses must exist (404); a definition that would make an audience use itself is "
    "400 `audience_cycle` naming the cycle. Each PUT is a new definition version. The answer has the current "
    "reach and the versions it read. To freeze an expression's current members instead, "
    '`PUT /v1/segments/{name}` with `{"expr": ...}`.',
    response_model=AudienceInfo,
    responses=_WRITE_ERRORS,
    openapi_extra=json_body(AUDIENCE_BODY),
    dependencies=[WriteAccess],
)
def define_audience(name: AudiencePath, raw: QueryBody, segs: SegmentsDep) -> Response:
    check_name(name)
    body = parse_model(raw, AudienceRequest)
    audience = segs.define_audience(name, body.expr, body.description)
    return json_response(audience_body(audience, segs))


@router.get(
    "/audiences",
    summary="Every audience's definition (no reach: cheap)",
    response_model=AudienceList,
    responses=responses(401, 403, 500, 503),
    dependencies=[ReadAccess],
)
def list_audiences(segs: SegmentsDep) -> Response:
    return json_response({"audiences": [summary_body(a) for a in segs.list_audiences()]})


@router.get(
    "/audiences/{name}",
    summary="An audience's definition and its reach, evaluated now",
    response_model=AudienceInfo,
    responses=_READ_ERRORS,
    dependencies=[ReadAccess],
)
def get_audience(name: AudiencePath, segs: SegmentsDep) -> Response:
    return json_response(audience_body(segs.audience(name), segs))


@router.delete(
    "/audiences/{name}",
    summary="Delete an audience",
    description="409 `in_use` (with `dependents`) if other audiences use it, unless `cascade=true`, which "
    "deletes them too.",
    response_model=Deleted,
    responses={**_READ_ERRORS, **responses(409)},
    dependencies=[WriteAccess],
)
def delete_audience(
    name: AudiencePath,
    segs: SegmentsDep,
    cascade: Annotated[bool, Query(description="also delete the audiences that use it")] = False,
) -> Response:
    return json_response({"deleted": segs.delete_audience(name, cascade=cascade)})


@router.get(
    "/audiences/{name}/history",
    summary="The definitions an audience has had, oldest first",
    response_model=AudienceHistory,
    responses=_READ_ERRORS,
    dependencies=[ReadAccess],
)
def audience_history(name: AudiencePath, segs: SegmentsDep) -> Response:
    audience = segs.audience(name)
    return json_response(
        {
            "definitions": [
                {"version": d.version, "at": iso_ms(d.at_ms), "expr": d.expr, "description": d.description}
                for d in audience.history
            ]
        }
    )


# -- per-user rule checks -------------------------------------------------------------


@router.post(
    "/users/{user_id}/match",
    summary="Does a user match an expression, or each of some audiences?",
    description='Body `{"expr": ...}` answers `{"user", "match"}`; `{"audiences": [names]}` answers '
    '`{"user", "audiences": {name: bool}}`. Only the user\'s shard is read (never the whole audience).',
    tags=["users"],
    response_model=MatchResponse,
    responses=_QUERY_ERRORS,
    openapi_extra={**json_body(MATCH_BODY), **BEARER_SECURITY},
)
async def match_user(request: Request, user_id: UserIdPath) -> Response:
    authorize(request, "read")
    uid = parse_user_id(user_id)
    raw = await query_body(request)
    segs = await get_segments(request)
    return json_response(await run_in_threadpool(_match_user, segs, uid, raw))


async def match_user_by_request(request: Request) -> Response:
    """``match_user`` for ``api.fastpath``: the user ID read from the matched path."""
    return await match_user(request, request.path_params["user_id"])


def _match_user(segs: Segments, uid: int, raw: RawBody) -> dict[str, Any]:
    body = parse_model(raw, MatchRequest)
    if (body.expr is None) == (body.audiences is None):
        raise ApiError(
            400, "invalid_request", "give either 'expr' or 'audiences' (a list of names), not both"
        )
    if body.expr is not None:
        return {"user": uid, "match": segs.matches(uid, body.expr)}
    assert body.audiences is not None
    names = [check_name(n) for n in dict.fromkeys(body.audiences)]
    return {"user": uid, "audiences": {n: segs.matches(uid, n) for n in names}}


@router.post(
    "/match",
    summary=f"Which of up to {MAX_BATCH_USERS:,} users match an expression",
    description='Body `{"users": [IDs], "expr": ...}`; the answer `{"matches": [bool, ...]}` is in the '
    "order of `users`. Only the users' shards are read.",
    tags=["users"],
    response_model=BatchMatchResponse,
    responses=_QUERY_ERRORS,
    openapi_extra={**json_body(BATCH_MATCH_BODY), **BEARER_SECURITY},
)
async def match_batch(request: Request) -> Response:
    authorize(request, "read")
    limits: Limits = request.app.state.limits
    limit = dataclasses.replace(
        limits.json, what="a batch match body", advice=f"send at most {MAX_BATCH_USERS} users per request"
    )
    raw = await read_body(request, limit)
    segs = await get_segments(request)
    return json_response(await run_in_threadpool(_match_batch, segs, raw))


def _match_batch(segs: Segments, raw: RawBody) -> dict[str, Any]:
    body = parse_model(raw, BatchMatchRequest)
    if len(body.users) > MAX_BATCH_USERS:
        raise ApiError(
            400,
            "invalid_request",
            f"a batch match takes at most {MAX_BATCH_USERS} users, got {len(body.users)}: split the batch",
            limit=MAX_BATCH_USERS,
        )
    users = [check_user_id(u) for u in body.users]
    return {"matches": segs.match_many(users, body.expr)}


# -- insights -------------------------------------------------------------------------


@router.post(
    "/insights",
    summary="Which segments over- and under-index in an audience",
    description="For each segment (`segments`, or every segment but the universe): users in both, the share "
    "of the audience and of the universe in it, and the index (share of the audience / share of the universe "
    "x 100), sorted by index, highest first (null last). One version of every segment is read.",
    response_model=InsightsResponse,
    responses=_QUERY_ERRORS,
    openapi_extra=json_body(INSIGHTS_BODY),
    dependencies=[ReadAccess],
)
def insights(raw: QueryBody, segs: SegmentsDep) -> Response:
    body = parse_model(raw, InsightsRequest)
    started = time.perf_counter()
    result = segs.insights(body.expr, body.segments)
    took = time.perf_counter() - started
    return json_response(
        {
            "reach": result.reach,
            "universe": result.universe,
            "rows": [
                {
                    "segment": row.segment,
                    "both": row.both,
                    "share_of_audience": row.share_of_audience,
                    "share_of_universe": row.share_of_universe,
                    "index": row.index,
                }
                for row in result.rows
            ],
            "segments": result.versions,
            "audiences": result.audiences,
            "took_ms": round(took * 1000, 3),
        }
    )
