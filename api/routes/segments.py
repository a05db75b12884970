"""``/v1/segments``: write, read, list, delete, membership and export.

Every route that touches the store is a plain ``def``: FastAPI runs it in
its threadpool, because store calls block.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import WithJsonSchema
from pyroaring import BitMap
from starlette.responses import Response, StreamingResponse

from segments.bitmap import MAX_USER_ID, check_user_id, serialize
from segments.errors import InvalidUserId
from segments.names import check_name

from ..auth import BEARER_SECURITY, ReadAccess, WriteAccess, authorize
from ..bodies import MembersBody, parse_members
from ..deps import SegmentsDep, get_segments
from ..responses import info_body, json_response
from ..schemas import (
    NAME_SCHEMA,
    USER_ID_SCHEMA,
    Membership,
    SegmentInfo,
    SegmentList,
    members_body,
    responses,
)

router = APIRouter(prefix="/v1", tags=["segments"])

NamePath = Annotated[str, Path(description="segment name"), WithJsonSchema(NAME_SCHEMA)]
UserIdPath = Annotated[str, Path(description="user ID"), WithJsonSchema(USER_ID_SCHEMA)]

_READ_ERRORS = responses(400, 401, 403, 404, 500, 503)
_WRITE_ERRORS = responses(400, 401, 403, 404, 408, 409, 413, 415, 500, 503)


def parse_user_id(text: str) -> int:
    """A user ID from a URL path: decimal digits only, 0 to 2**32-1; else 400 ``invalid_user_id``."""
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise InvalidUserId(f"user ID {text[:40]!r} is not an unsigned 32-bit integer (0 to {MAX_USER_ID})")
    return check_user_id(int(text))


@router.put(
    "/segments/{name}",
    summary="Replace a segment's members",
    description='Body: `{"ids": [...]}`, `{"expr": "..."}` (saves the expression\'s result), '
    "or `application/octet-stream` with a portable roaring bitmap. Creates the segment if needed.",
    response_model=SegmentInfo,
    responses=_WRITE_ERRORS,
    openapi_extra=members_body(allow_expr=True),
    dependencies=[WriteAccess],
)
def replace_segment(name: NamePath, body: MembersBody, segs: SegmentsDep) -> Response:
    check_name(name)
    members = parse_members(body, allow_expr=True)
    if members.kind == "expr":
        ids, _ = segs.evaluate_detailed(members.value)
        return json_response(info_body(segs.replace(name, ids)))
    return json_response(info_body(segs.replace(name, members.value)))


@router.post(
    "/segments/{name}/add",
    summary="Add members (creates a missing segment)",
    response_model=SegmentInfo,
    responses=_WRITE_ERRORS,
    openapi_extra=members_body(allow_expr=False),
    dependencies=[WriteAccess],
)
def add_members(name: NamePath, body: MembersBody, segs: SegmentsDep) -> Response:
    check_name(name)
    members = parse_members(body, allow_expr=False)
    return json_response(info_body(segs.add(name, members.value)))


@router.post(
    "/segments/{name}/remove",
    summary="Remove members (404 if the segment does not exist)",
    response_model=SegmentInfo,
    responses=_WRITE_ERRORS,
    openapi_extra=members_body(allow_expr=False),
    dependencies=[WriteAccess],
)
def remove_members(name: NamePath, body: MembersBody, segs: SegmentsDep) -> Response:
    check_name(name)
    members = parse_members(body, allow_expr=False)
    return json_response(info_body(segs.remove(name, members.value)))


@router.get(
    "/segments",
    summary="List every segment with its size and freshness",
    response_model=SegmentList,
    responses=responses(401, 403, 500, 503),
    dependencies=[ReadAccess],
)
def list_segments(segs: SegmentsDep) -> Response:
    return json_response({"segments": [info_body(i) for i in segs.infos()]})


@router.get(
    "/segments/{name}",
    summary="A segment's size, version and last update",
    response_model=SegmentInfo,
    responses=_READ_ERRORS,
    dependencies=[ReadAccess],
)
def get_segment(name: NamePath, segs: SegmentsDep) -> Response:
    return json_response(info_body(segs.info(name)))


@router.delete(
    "/segments/{name}",
    summary="Delete a segment",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "deleted"}, **_READ_ERRORS, **responses(409)},
    dependencies=[WriteAccess],
)
def delete_segment(name: NamePath, segs: SegmentsDep) -> Response:
    segs.delete(name)
    return Response(status_code=204)


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
    return json_response({"member": await run_in_threadpool(segs.contains, name, uid)})


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
Every member of the segment, in ascending ID order.

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
) -> Response:
    check_name(name)
    disposition = {"Content-Disposition": f'attachment; filename="{name}.{format.value}"'}
    if format is ExportFormat.roaring:
        whole = BitMap()
        for _, members in segs.iter_shards(name):
            whole |= members
        whole.run_optimize()
        return Response(serialize(whole), media_type=_MEDIA[format], headers=disposition)
    header = b"user_id\n" if format is ExportFormat.csv else b""
    shards = segs.iter_shards(name)
    # Read the first shard here, so a missing segment or a store error becomes a proper
    # error response rather than a stream cut short after a 200.
    first = next(shards, None)
    return StreamingResponse(
        _text_stream(first, shards, header), media_type=_MEDIA[format], headers=disposition
    )
