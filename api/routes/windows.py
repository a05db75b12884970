"""Time: windowed segments, the size history of a segment, and the reach of an expression over time.

* ``PUT /v1/segments/{name}/window`` creates a windowed segment (members kept
  per UTC day or hour bucket for ``retention`` buckets; idempotent). Writes to
  it go through the usual ``/v1/segments`` routes with ``at``.
* ``GET /v1/segments/{name}/history``: one point per published version
  (bounded, see ``segments.history``); of a windowed segment, one point per
  bucket (its current size), which is the trend a windowed segment has.
* ``POST /v1/reach/history``: the reach as of each step between two moments.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from segments import Segments
from segments.errors import BadTime, SegmentNotFound
from segments.history import Point
from segments.names import check_name
from segments.windows import WindowConfig, parse_time

from ..auth import ReadAccess, WriteAccess
from ..bodies import QueryBody, parse_model
from ..deps import SegmentsDep
from ..responses import iso_ms, json_response, windowed_body
from ..schemas import (
    REACH_HISTORY_BODY,
    TIME_QUERY_SCHEMA,
    ReachHistory,
    ReachHistoryRequest,
    SegmentHistory,
    WindowedInfo,
    WindowRequest,
    json_body,
    responses,
)
from .segments import NamePath, windowed_or_raise

router = APIRouter(prefix="/v1", tags=["time"])

_READ_ERRORS = responses(400, 401, 403, 404, 500, 503)

#: the moments a request may name (``as_of``, ``from``, ``to``, ``since``, ``until``)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def moment(value: object, what: str) -> datetime:
    """A moment of a request (see ``segments.windows.parse_time``), from 1970 up to the year 9999."""
    parsed = parse_time(value, what)
    if not EARLIEST <= parsed < LATEST:
        raise BadTime(f"{what}={value!r} is out of range: moments are from 1970-01-01 to 9998-12-31 (UTC)")
    return parsed


@router.put(
    "/segments/{name}/window",
    summary="Create a windowed segment (members kept per UTC day or hour)",
    description="Idempotent: the same settings again answer the segment as it is; other settings for an "
    "existing windowed segment, or a name that is a plain segment or an audience, are 409 `name_taken`. "
    'Query it over a window (`name[7d]`, `name[24h]`, `name[2026-11-01..2026-11-30]`; JSON: `{"segment": '
    '"name", "window": "7d"}`) or whole (every retained bucket). Buckets older than the retention are '
    "deleted on write and by `segments admin expire`.",
    response_model=WindowedInfo,
    responses=responses(400, 401, 403, 408, 409, 413, 415, 500, 503),
    openapi_extra=json_body(WindowRequest),
    dependencies=[WriteAccess],
)
def create_window(name: NamePath, raw: QueryBody, segs: SegmentsDep) -> Response:
    check_name(name)
    body = parse_model(raw, WindowRequest)
    config = segs.create_windowed(name, granularity=body.granularity, retention=body.retention)
    return json_response(windowed_body(config, segs.reach(name)))


TimeQuery = Annotated[
    str | None, Query(description=TIME_QUERY_SCHEMA["description"], min_length=1, max_length=64)
]


@router.get(
    "/segments/{name}/history",
    summary="A segment's size over time: one point per published version",
    description="At most the last 1,000 versions as they are, then one point per hour for 30 days, then one "
    "per day. `since` and `until` (inclusive) narrow it. Of a windowed segment: one point per bucket, at the "
    "bucket's start, with the bucket's current size (`op` is `bucket`). Deleting a segment deletes its "
    "history.",
    response_model=SegmentHistory,
    responses=_READ_ERRORS,
    dependencies=[ReadAccess],
)
def segment_history(
    name: NamePath, segs: SegmentsDep, since: TimeQuery = None, until: TimeQuery = None
) -> Response:
    check_name(name)
    start = None if since is None else moment(since, "since")
    end = None if until is None else moment(until, "until")
    try:
        points = [_point(p) for p in segs.history(name, since=start, until=end)]
    except SegmentNotFound as exc:
        windowed_or_raise(segs, name, exc)
        config = segs.windows.config(name)
        if config is None:
            raise
        points = _bucket_points(segs, config, start_ms=_ms(start), end_ms=_ms(end))
    return json_response({"points": points})


def _ms(moment: Any) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _point(point: Point) -> dict[str, Any]:
    return {
        "version": point.version,
        "at": iso_ms(point.at_ms),
        "cardinality": point.cardinality,
        "op": point.op,
        "added": point.added,
        "removed": point.removed,
    }


def _bucket_points(
    segs: Segments, config: WindowConfig, *, start_ms: int | None, end_ms: int | None
) -> list[dict[str, Any]]:
    """One point per bucket of a windowed segment: its start and current size (one batch read)."""
    starts = {b: int(config.start_of(b).timestamp() * 1000) for b in config.buckets}
    chosen = [
        b
        for b, ms in starts.items()
        if (start_ms is None or ms >= start_ms) and (end_ms is None or ms <= end_ms)
    ]
    metas = segs.reader.metas([config.segment(b) for b in chosen])
    points = []
    for bucket in chosen:
        meta = metas[config.segment(bucket)]
        if meta is None:  # expired since the config was read
            continue
        points.append(
            {
                "version": meta.version,
                "at": iso_ms(starts[bucket]),
                "cardinality": meta.cardinality,
                "op": "bucket",
                "added": None,
                "removed": None,
            }
        )
    return points


@router.post(
    "/reach/history",
    summary="The reach of an expression as of each step between two moments",
    description='`{"expr": "paid_bill[7d] & card_gold", "from": "2026-09-01", "to": "2026-11-30", "step": '
    '"1d"}` evaluates the expression as of every step (at most 1,000 points); windows slide with each step. '
    "Segments that are not windowed count as they are now at every step.",
    response_model=ReachHistory,
    responses=responses(400, 401, 403, 404, 408, 413, 415, 500, 503),
    openapi_extra=json_body(REACH_HISTORY_BODY),
    dependencies=[ReadAccess],
)
def reach_history(raw: QueryBody, segs: SegmentsDep) -> Response:
    body = parse_model(raw, ReachHistoryRequest)
    start, end = moment(body.start, "from"), moment(body.end, "to")
    points = segs.reach_history(body.expr, start=start, end=end, step=body.step)
    return json_response({"points": [{"at": at.isoformat(), "reach": reach} for at, reach in points]})
