"""``/v1/segments``: write, read, list, delete, membership and export.

Every route that touches the store is a plain ``def``: FastAPI runs it in
its threadpool, because store calls block.

Windowed segments (``api.routes.windows`` creates them) are segments here
too: writes take ``at`` (the JSON body's ``"at"`` or the ``?at=`` query
parameter, for binary bodies) and go to the bucket of that moment; the list
shows them under ``windowed`` (their time buckets ``name::bucket`` are not
listed as plain segments); info, membership and export answer for the whole
retention. Audience names work for membership and export (evaluated now).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import WithJsonSchema
from pyroaring import BitMap
from starlette.responses import Response, StreamingResponse

from segments import Segments
from segments.bitmap import MAX_USER_ID, check_user_id, serialize, split_by_shard
from segments.errors import InvalidUserId, SegmentNotFound, UniverseNotFound
from segments.names import check_name

from ..auth import BEARER_SECURITY, ReadAccess, WriteAccess, authorize
from ..bodies import Members, MembersBody, parse_members
from ..deps import SegmentsDep, get_segments
from ..errors import ApiError
from ..responses import info_body, json_response, windowed_body
from ..schemas import (
    NAME_SCHEMA,
    TIME_QUERY_SCHEMA,
    USER_ID_SCHEMA,
    Deleted,
    Membership,
    SegmentInfo,
    SegmentList,
    WindowedInfo,
    members_body,
    responses,
)
from .keys import EXPORT_AS_DESCRIPTION, ExportAs, export_keys, member_ids

router = APIRouter(prefix="/v1", tags=["segments"])

NamePath = Annotated[str, Path(description="segment name"), WithJsonSchema(NAME_SCHEMA)]
UserIdPath = Annotated[str, Path(description="user ID"), WithJsonSchema(USER_ID_SCHEMA)]

_READ_ERRORS = responses(400, 401, 403, 404, 500, 503)
_WRITE_ERRORS = responses(400, 401, 403, 404, 408, 409, 413, 415, 500, 503)

AtQuery = Annotated[
    str | None,
    Query(
        description="windowed segments: the moment whose bucket the write goes to (default now); for binary "
        "bodies (a JSON body may say \"at\" instead). " + TIME_QUERY_SCHEMA["description"],
        min_length=1,
        max_length=64,
    ),
]


def when(members: Members, query_at: str | None) -> dict[str, object]:
    """The ``at`` keyword of a write: from the JSON body or the query, never both; none: ``{}``."""
    if members.at is not None and query_at is not None:
        raise ApiError(400, "invalid_request", "give 'at' once: in the JSON body or as the ?at= parameter")
    at = members.at if members.at is not None else query_at
    return {} if at is None else {"at": at}


def windowed_or_raise(segs: Segments, name: str, exc: SegmentNotFound) -> None:
    """Re-raise ``exc`` unless ``name`` is a windowed segment (which has no segment record of its own)."""
    if isinstance(exc, UniverseNotFound) or segs.windows.config(name, fresh=True) is None:
        raise exc


def parse_user_id(text: str) -> int:
    """A user ID from a URL path: decimal digits only, 0 to 2**32-1; else 400 ``invalid_user_id``."""
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise InvalidUserId(f"user ID {text[:40]!r} is not an unsigned 32-bit integer (0 to {MAX_USER_ID})")
    return check_user_id(int(text))


@router.put(
    "/segments/{name}",
    summary="Replace a segment's members",
    description='Body: `{"ids": [...]}`, `{"expr": "..."}` (saves the expression\'s result: a frozen '
    "snapshot; an audience stays live), or `application/octet-stream` with a portable roaring bitmap. "
    "Creates the segment if needed. On a windowed segment it replaces one bucket, the one of `at` "
    "(default now); the answer is that bucket's info.",
    response_model=SegmentInfo,
    responses=_WRITE_ERRORS,
    openapi_extra=members_body(allow_expr=True),
    dependencies=[WriteAccess],
)
def replace_segment(name: NamePath, body: MembersBody, segs: SegmentsDep, at: AtQuery = None) -> Response:
    check_name(name)
    members = parse_members(body, allow_expr=True)
    at_kw = when(members, at)
    if members.kind == "expr":
        ids, _ = segs.evaluate_detailed(members.value)
        return json_response(info_body(segs.replace(name, ids, **at_kw)))
    return json_response(info_body(segs.replace(name, member_ids(segs, members, create=True), **at_kw)))


@router.post(
    "/segments/{name}/add",
    summary="Add members (creates a missing segment; windowed: to the bucket of `at`)",
    response_model=SegmentInfo,
    responses=_WRITE_ERRORS,
    openapi_extra=members_body(allow_expr=False),
    dependencies=[WriteAccess],
)
def add_members(name: NamePath, body: MembersBody, segs: SegmentsDep, at: AtQuery = None) -> Response:
    check_name(name)
    members = parse_members(body, allow_expr=False)
    at_kw = when(members, at)
    return json_response(info_body(segs.add(name, member_ids(segs, members, create=True), **at_kw)))


@router.post(
    "/segments/{name}/remove",
    summary="Remove members (404 if the segment does not exist; windowed: from the bucket of `at`)",
    response_model=SegmentInfo,
    responses=_WRITE_ERRORS,
    openapi_extra=members_body(allow_expr=False),
    dependencies=[WriteAccess],
)
def remove_members(name: NamePath, body: MembersBody, segs: SegmentsDep, at: AtQuery = None) -> Response:
    check_name(name)
    members = parse_members(body, allow_expr=False)
    at_kw = when(members, at)
    ids = member_ids(segs, members, create=False)
    try:
        return json_response(info_body(segs.remove(name, ids, **at_kw)))
    except SegmentNotFound as exc:
        if at_kw:
            raise
        windowed_or_raise(segs, name, exc)
    # a windowed segment: the library looks for a plain one when a remove does not say when
    return json_response(info_body(segs.remove(name, ids, at=datetime.now(UTC))))


@router.get(
    "/segments",
    summary="List every segment with its size and freshness",
    response_model=SegmentList,
    responses=responses(401, 403, 500, 503),
    dependencies=[ReadAccess],
)
def list_segments(segs: SegmentsDep) -> Response:
    return json_response(
        {
            "segments": [info_body(i) for i in segs.infos()],
            "windowed": [windowed_body(c, segs.reach(c.name)) for c in segs.windowed()],
        }
    )


@router.get(
    "/segments/{name}",
    summary="A segment's size, version and last update (windowed: its settings and whole reach)",
    response_model=SegmentInfo | WindowedInfo,
    responses=_READ_ERRORS,
    dependencies=[ReadAccess],
)
def get_segment(name: NamePath, segs: SegmentsDep) -> Response:
    try:
        return json_response(info_body(segs.info(name)))
    except SegmentNotFound as exc:
        windowed_or_raise(segs, name, exc)
    config = segs.windows.config(name)
    if config is None:  # deleted between the two reads
        raise SegmentNotFound([name])
    return json_response(windowed_body(config, segs.reach(name)))


CascadeQuery = Annotated[
    bool | None,
    Query(
        description="also delete the audiences that use it (false: 409 in_use listing them). Given, the "
        'answer is 200 {"deleted": [...]}; omitted, 204 as before (and no cascade)'
    ),
]


@router.delete(
    "/segments/{name}",
    summary="Delete a segment (plain or windowed)",
    status_code=204,
    response_class=Response,
    responses={
        200: {
            "description": "deleted (with ?cascade=): what was deleted",
            "content": {"application/json": {"schema": Deleted.model_json_schema()}},
        },
        204: {"description": "deleted (without ?cascade=)"},
        **_READ_ERRORS,
        **responses(409),
    },
    dependencies=[WriteAccess],
)
def delete_segment(name: NamePath, segs: SegmentsDep, cascade: CascadeQuery = None) -> Response:
    deleted = segs.delete(name, cascade=bool(cascade))
    if cascade is None:
        return Response(status_code=204)
    return json_response({"deleted": deleted})


@router.get(
    "/segments/{name}/members/{user_id}",
    summary="Is the user a member of the segment?",
    response_model=Membership,
    responses=_READ_ERRORS,
    openapi_extra=BEARER_SECURITY,
)
async def is_member(request: Request, name: NamePath, user_id: UserIdPath) -> Response:
    # A hot lookup: auth inline and one explicit thread hop (see api.routes.queries.reach).
    authorize(request, "read")
    check_name(name)
    uid = parse_user_id(user_id)
    segs = await get_segments(request)
    return json_response({"member": await run_in_threadpool(_contains, segs, name, uid)})


def _contains(segs: Segments, name: str, uid: int) -> bool:
    try:
        return segs.contains(name, uid)  # a segment or an audience
    except SegmentNotFound as exc:
        windowed_or_raise(segs, name, exc)
    return segs.matches(uid, name)  # a windowed segment: its whole retention


class ExportFormat(StrEnum):
    ndjson = "ndjson"
    csv = "csv"
    roaring = "roaring"


_MEDIA = {
    ExportFormat.ndjson: "application/x-ndjson",
    ExportFormat.csv: "text/csv; charset=utf-8",
    ExportFormat.roaring: "application/octet-stream",
}
_EXPORT_DESCRIPTION = """\
Every member of the segment, in ascending ID order. An audience is evaluated now; a windowed segment
is its whole retention.

* `ndjson` (default): one user ID per line, each line a JSON number.
* `csv`: a `user_id` header line, then one ID per line.
* `roaring`: **one** Roaring bitmap in the portable serialization, readable as is by
  `RoaringBitmap.deserialize` (Java), `roaring.Bitmap.ReadFrom` (Go), `roaring_bitmap_portable_deserialize`
  (C) and `BitMap.deserialize` (Python).

`ndjson` and `csv` are streamed shard by shard (65,536 IDs) in constant memory, from one committed
version of the segment: if the segment is replaced while the stream runs, the stream is cut short
(the chunked response ends without its terminating chunk) rather than mixing two versions; retry. `roaring` is built in
memory before it is sent, because the portable format starts with an index of every container: it
needs at most ~8 KiB per non-empty shard, i.e. ~1.2 MiB per 10 million dense users and 512 MiB for
the whole 32-bit ID space.
"""


def _lines(members: BitMap) -> bytes:
    return ("\n".join(map(str, members.to_array().tolist())) + "\n").encode()


def _text_stream(
    first: tuple[int, BitMap] | None, rest: Iterator[tuple[int, BitMap]], header: bytes
) -> Iterator[bytes]:
    if header:
        yield header
    if first is not None:
        yield _lines(first[1])
        for _, members in rest:
            yield _lines(members)


@router.get(
    "/segments/{name}/export",
    summary="Export a segment's members",
    description=_EXPORT_DESCRIPTION,
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "the members",
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **_READ_ERRORS,
    },
    dependencies=[ReadAccess],
)
def export_segment(
    name: NamePath,
    segs: SegmentsDep,
    format: Annotated[ExportFormat, Query(description="ndjson, csv or roaring")] = ExportFormat.ndjson,
    as_: Annotated[ExportAs, Query(alias="as", description=EXPORT_AS_DESCRIPTION)] = ExportAs.ids,
) -> Response:
    check_name(name)
    if as_ is ExportAs.keys and format is ExportFormat.roaring:
        raise ApiError(400, "invalid_request", "as=keys exports ndjson or csv: a roaring bitmap holds IDs only")
    disposition = {"Content-Disposition": f'attachment; filename="{name}.{format.value}"'}
    # Read the first shard here, so a missing segment or a store error becomes a proper
    # error response rather than a stream cut short after a 200.
    first, shards = _first_shard(segs, name)
    if as_ is ExportAs.keys:
        return export_keys(segs, first, shards, format is ExportFormat.csv, disposition)
    if format is ExportFormat.roaring:
        whole = BitMap()
        if first is not None:
            whole |= first[1]
        for _, members in shards:
            whole |= members
        whole.run_optimize()
        return Response(serialize(whole), media_type=_MEDIA[format], headers=disposition)
    header = b"user_id\n" if format is ExportFormat.csv else b""
    return StreamingResponse(
        _text_stream(first, shards, header), media_type=_MEDIA[format], headers=disposition
    )


def _first_shard(segs: Segments, name: str) -> tuple[tuple[int, BitMap] | None, Iterator[tuple[int, BitMap]]]:
    """The first shard of the members and an iterator over the rest (an audience: evaluated now)."""
    try:
        shards = segs.iter_shards(name)
        return next(shards, None), shards
    except SegmentNotFound as exc:
        windowed_or_raise(segs, name, exc)
    shards = split_by_shard(segs.evaluate(name))  # a windowed segment: its whole retention, evaluated now
    return next(shards, None), shards
