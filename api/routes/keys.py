"""String user keys over HTTP (see ``segments.keys``): lookups by key, translation, and what the segment routes use.

* ``GET /v1/users/by-key/{key}/segments``, ``GET /v1/segments/{name}/members/by-key/{key}`` and
  ``POST /v1/users/by-key/{key}/match``: the lookups of ``/v1/users/{id}/...`` by key. A key never
  seen is in no segment: the answers are empty (``false``), nothing is allocated, and the segment
  or expression is still checked (404 for an unknown name, 400 for a bad expression).
* ``POST /v1/keys/translate`` (``create`` needs the ``write`` scope) and ``POST /v1/keys/reverse``,
  for batch jobs that build their own bitmaps.
* :func:`member_ids` turns ``{"keys": [...]}`` bodies of ``PUT /v1/segments/{name}``, ``.../add``
  and ``.../remove`` into IDs (new keys get IDs on replace and add; remove never allocates), and
  :func:`export_keys` streams an export with ``as=keys``.

A key in a path is its UTF-8 bytes percent-encoded (``%2F`` or a plain ``/`` both work: the key is
everything between ``by-key/`` and the route's last segment). Bad keys are 400 ``invalid_user_key``
and nothing is written; at most :data:`~api.schemas.MAX_KEYS_PER_REQUEST` keys or IDs per request
(413 ``too_many_keys``).
"""

from __future__ import annotations

import csv
import io
import json
import urllib.parse
from collections.abc import Iterator, Sequence
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import WithJsonSchema
from pyroaring import BitMap
from starlette.responses import Response, StreamingResponse

from segments import Segments
from segments.errors import InvalidUserKey
from segments.names import check_name

from ..auth import BEARER_SECURITY, ReadAccess, authorize
from ..bodies import Members, RawBody, parse_model, query_body, read_body
from ..deps import SegmentsDep, get_segments
from ..errors import ApiError
from ..limits import Limits
from ..responses import json_response
from ..schemas import (
    MATCH_BODY,
    MAX_KEYS_PER_REQUEST,
    NAME_SCHEMA,
    USER_KEY_SCHEMA,
    KeyMatchResponse,
    KeyMembership,
    KeySegments,
    MatchRequest,
    ReverseRequest,
    ReverseResponse,
    TranslateRequest,
    TranslateResponse,
    json_body,
    responses,
)

router = APIRouter(prefix="/v1", tags=["keys"])

KeyPath = Annotated[str, Path(description="the user key, percent-encoded"), WithJsonSchema(USER_KEY_SCHEMA)]
NamePath = Annotated[str, Path(description="segment name"), WithJsonSchema(NAME_SCHEMA)]

class ExportAs(StrEnum):
    """What an export lists: user IDs, or user keys (``GET /v1/segments/{name}/export?as=keys``)."""

    ids = "ids"
    keys = "keys"


EXPORT_AS_DESCRIPTION = (
    "ids (default), or keys: each member's user key (ndjson: a JSON string per line; csv: a user_key column), "
    "null or an empty field for a member that is no key's ID; streamed in constant memory too"
)

_READ_ERRORS = responses(400, 401, 403, 404, 500, 503)
_BODY_ERRORS = responses(400, 401, 403, 404, 408, 413, 415, 500, 503)
#: IDs reverse-translated at once by an export (one batch read of at most 64 key pages)
EXPORT_BATCH = 16_384


def bounded(values: Sequence[Any], what: str = "keys") -> Sequence[Any]:
    """``values`` if there are at most ``MAX_KEYS_PER_REQUEST`` of them, else 413 ``too_many_keys``."""
    if len(values) > MAX_KEYS_PER_REQUEST:
        raise ApiError(
            413,
            "too_many_keys",
            f"a request takes at most {MAX_KEYS_PER_REQUEST} {what}, got {len(values)}: split it, or send "
            "large sets through Kafka or `segments push --keys`",
            limit=MAX_KEYS_PER_REQUEST,
        )
    return values


def member_ids(segs: Segments, members: Members, *, create: bool) -> Any:
    """The IDs a members body names: its ``ids`` or bitmap as they are, its ``keys`` translated.

    ``create``: keys never seen get new IDs (replace, add); otherwise they are
    left out (remove: such a user is in no segment). Every key is validated
    before anything is allocated (400 ``invalid_user_key``).
    """
    if members.kind == "ids":
        return members.value
    ids = segs.keys.translate(bounded(members.value), create=create)
    return [uid for uid in ids if uid is not None]


def _key_of(segs: Segments, key: str) -> int | None:
    """The ID of ``key`` (``None``: never seen); 400 ``invalid_user_key`` for a bad key. Never allocates."""
    return segs.keys.translate([key])[0]


def path_key(request: Request, key: str) -> str:
    """The key of a path: percent-decoded bytes that are not UTF-8 are refused, not replaced by U+FFFD."""
    if "\ufffd" in key:
        raw = request.scope.get("raw_path") or b""
        try:
            urllib.parse.unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidUserKey(
                f"the user key in the path is not UTF-8 once percent-decoded (byte {exc.start} of the path): "
                "percent-encode the key's UTF-8 bytes"
            ) from None
    return key


# -- lookups by key -----------------------------------------------------------------------------


@router.get(
    "/users/by-key/{key:path}/segments",
    summary="The segments a user belongs to, by user key",
    tags=["users"],
    response_model=KeySegments,
    responses=responses(400, 401, 403, 500, 503),
    openapi_extra=BEARER_SECURITY,
)
async def user_segments_by_key(request: Request, key: KeyPath) -> Response:
    # like GET /v1/users/{id}/segments, auth inline; the key is translated in the threadpool
    authorize(request, "read")
    key = path_key(request, key)
    segs = await get_segments(request)
    uid, names = await run_in_threadpool(_segments_of_key, segs, key)
    return json_response({"key": key, "user_id": uid, "segments": names})


def _segments_of_key(segs: Segments, key: str) -> tuple[int | None, list[str]]:
    uid = _key_of(segs, key)
    return uid, [] if uid is None else segs.segments_of(uid)


@router.get(
    "/segments/{name}/members/by-key/{key:path}",
    summary="Is the user a member of the segment? By user key",
    tags=["segments"],
    response_model=KeyMembership,
    responses=_READ_ERRORS,
    openapi_extra=BEARER_SECURITY,
)
async def is_member_by_key(request: Request, name: NamePath, key: KeyPath) -> Response:
    authorize(request, "read")
    check_name(name)
    key = path_key(request, key)
    segs = await get_segments(request)
    uid, member = await run_in_threadpool(_member, segs, name, key)
    return json_response({"key": key, "user_id": uid, "member": member})


def _member(segs: Segments, name: str, key: str) -> tuple[int | None, bool]:
    uid = _key_of(segs, key)
    # one path for known and unknown keys: no user, no shard read, but the name is still resolved
    # (a segment, an audience or a windowed segment; 404 otherwise)
    found = segs.match_many([] if uid is None else [uid], name)
    return uid, bool(found and found[0])


@router.post(
    "/users/by-key/{key:path}/match",
    summary="Does a user match an expression, or each of some audiences? By user key",
    description='The body and answer of `POST /v1/users/{id}/match`, plus `"key"`; `"user"` is the key\'s ID '
    "(null for a key never seen, which matches nothing).",
    tags=["users"],
    response_model=KeyMatchResponse,
    responses=_BODY_ERRORS,
    openapi_extra={**json_body(MATCH_BODY), **BEARER_SECURITY},
)
async def match_user_by_key(request: Request, key: KeyPath) -> Response:
    authorize(request, "read")
    key = path_key(request, key)
    raw = await query_body(request)
    segs = await get_segments(request)
    return json_response(await run_in_threadpool(_match_key, segs, key, raw))


def _match_key(segs: Segments, key: str, raw: RawBody) -> dict[str, Any]:
    body = parse_model(raw, MatchRequest)
    if (body.expr is None) == (body.audiences is None):
        raise ApiError(400, "invalid_request", "give either 'expr' or 'audiences' (a list of names), not both")
    uid = _key_of(segs, key)
    users = [] if uid is None else [uid]

    def matches(expr: str | dict[str, Any]) -> bool:
        found = segs.match_many(users, expr)  # no user: the expression is still checked
        return bool(found and found[0])

    if body.expr is not None:
        return {"key": key, "user": uid, "match": matches(body.expr)}
    assert body.audiences is not None
    names = [check_name(n) for n in dict.fromkeys(body.audiences)]
    return {"key": key, "user": uid, "audiences": {n: matches(n) for n in names}}


# -- translation ----------------------------------------------------------------------------------


async def _keys_body(request: Request) -> RawBody:
    """A translation body, under the JSON write limit (``SEGMENTS_MAX_JSON_BODY_BYTES``)."""
    limits: Limits = request.app.state.limits
    return await read_body(request, limits.json)


KeysBody = Annotated[RawBody, Depends(_keys_body)]


@router.post(
    "/keys/translate",
    summary="The ID of each user key (with create: new keys get new IDs)",
    description=f"`{{\"keys\": [...], \"create\": false}}` answers `{{\"ids\": [...]}}` in the same order: `null` "
    "for a key never seen. With `\"create\": true` (scope `write`) keys never seen get new IDs, for batch jobs "
    f"that build bitmaps themselves. At most {MAX_KEYS_PER_REQUEST:,} keys.",
    response_model=TranslateResponse,
    responses=_BODY_ERRORS,
    openapi_extra={**json_body(TranslateRequest), **BEARER_SECURITY},
)
async def translate_keys(request: Request) -> Response:
    authorize(request, "read")  # and "write" to create, once the body says so
    raw = await _keys_body(request)
    segs = await get_segments(request)
    return json_response(await run_in_threadpool(_translate, request, segs, raw))


def _translate(request: Request, segs: Segments, raw: RawBody) -> dict[str, Any]:
    body = parse_model(raw, TranslateRequest)
    if body.create:
        authorize(request, "write")
    return {"ids": segs.keys.translate(bounded(body.keys), create=body.create)}


@router.post(
    "/keys/reverse",
    summary="The user key of each ID",
    description=f'`{{"ids": [...]}}` answers `{{"keys": [...]}}` in the same order: `null` for an ID no key has '
    f"(never allocated, a gap, or a raw ID that did not come from the translator). At most "
    f"{MAX_KEYS_PER_REQUEST:,} IDs.",
    response_model=ReverseResponse,
    responses=_BODY_ERRORS,
    openapi_extra=json_body(ReverseRequest),  # the ReadAccess dependency lists the bearer requirement
    dependencies=[ReadAccess],
)
def reverse_ids(raw: KeysBody, segs: SegmentsDep) -> Response:
    body = parse_model(raw, ReverseRequest)
    return json_response({"keys": segs.keys.reverse(bounded(body.ids, "IDs"))})


# -- export -------------------------------------------------------------------------------------------


def export_keys(
    segs: Segments, first: tuple[int, BitMap] | None, rest: Iterator[tuple[int, BitMap]], csv_format: bool,
    headers: dict[str, str],
) -> StreamingResponse:
    """An export's members as user keys, streamed shard by shard in constant memory.

    NDJSON: one JSON string per line; CSV: a ``user_key`` header, then one key per
    line, quoted when needed. A member that is no key's ID (a raw ID that did not come
    from the translator) is ``null`` (NDJSON) or an empty field (CSV).
    """
    return StreamingResponse(
        _key_lines(segs, first, rest, csv_format),
        media_type="text/csv; charset=utf-8" if csv_format else "application/x-ndjson",
        headers=headers,
    )


def _key_lines(
    segs: Segments, first: tuple[int, BitMap] | None, rest: Iterator[tuple[int, BitMap]], csv_format: bool
) -> Iterator[bytes]:
    if csv_format:
        yield b"user_key\n"
    if first is None:
        return
    for members in _shards(first, rest):
        ids = members.to_array().tolist()
        for start in range(0, len(ids), EXPORT_BATCH):
            keys = segs.keys.reverse(ids[start : start + EXPORT_BATCH], cache=False)  # keep the hot pairs
            yield _csv_lines(keys) if csv_format else _ndjson_lines(keys)


def _shards(first: tuple[int, BitMap], rest: Iterator[tuple[int, BitMap]]) -> Iterator[BitMap]:
    yield first[1]
    for _, members in rest:
        yield members


def _ndjson_lines(keys: list[str | None]) -> bytes:
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    return ("\n".join(map(dumps, keys)) + "\n").encode("utf-8")


def _csv_lines(keys: list[str | None]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([k or ""] for k in keys)
    return out.getvalue().encode("utf-8")
