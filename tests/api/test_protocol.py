"""HTTP details over a real uvicorn process: malformed requests, HEAD, body charsets, ``expr: null``.

* Requests uvicorn's parser refuses before the app sees them get the JSON
  error shape too (``api.protocol``), with ``Connection: close``.
* ``HEAD`` answers on every GET route as the GET would, without the body.
* JSON bodies are UTF-8: a UTF-8 byte order mark is ignored, UTF-16 / UTF-32
  bodies are 400 ``invalid_json`` and a ``charset`` other than UTF-8 is 415,
  the same on every route that takes JSON (writes, reach, overlap).
"""

from __future__ import annotations

import codecs
import json
import socket

import httpx
import pytest

from tests.api.conftest import SEED
from tests.api.test_errors import error_of
from tests.support.api_server import ApiServer

#: raw requests uvicorn's HTTP parser refuses (with a plain-text 400 before api.protocol)
MALFORMED: list[bytes] = [
    b"GARBAGE\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Ctl: a\x01b\r\n\r\n",
    b"POST /v1/reach HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n",
    b"POST /v1/reach HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n",
    b"POST /v1/reach HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /v1/reach HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"GET /he\x00althz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS ClientHello on the plain port
]


def _read_all(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


@pytest.mark.parametrize("raw", MALFORMED, ids=[repr(r[:24]) for r in MALFORMED])
def test_requests_the_http_parser_refuses_get_the_json_error_shape(api: ApiServer, raw: bytes) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=30) as sock:
        sock.sendall(raw)
        reply = _read_all(sock)  # the server closes the connection after the answer
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert lines[0] == "HTTP/1.1 400 Bad Request", reply[:300]
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_request"
    assert "HTTP" in error["message"]


GET_ROUTES = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/",
    "/static/app.js",
    "/v1/segments",
    "/v1/segments/even",
    "/v1/segments/even/members/4",
    "/v1/segments/even/members/5",
    "/v1/segments/vip/export",
    "/v1/segments/vip/export?format=csv",
    "/v1/segments/vip/export?format=roaring",
    "/v1/users/4/segments",
    "/v1/segments/zz_missing",  # errors too: same status and headers, no body
    "/v1/segments/bad-name",
    "/v1/users/x/segments",
    "/v2/nothing",
]


@pytest.mark.parametrize("path", GET_ROUTES)
def test_head_answers_like_get_without_the_body(client: httpx.Client, path: str) -> None:
    get = client.get(path)
    head = client.head(path)
    assert head.status_code == get.status_code, head.headers
    assert head.content == b""
    assert head.headers.get("content-type") == get.headers.get("content-type")
    if "content-length" in get.headers and path != "/metrics":  # metrics change between the two calls
        assert head.headers["content-length"] == get.headers["content-length"]


def test_every_documented_get_route_takes_head(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert client.put("/v1/audiences/head_check", json={"expr": "even & triple"}).status_code == 200
    for template, operations in paths.items():
        if "get" not in operations:
            continue
        name = "head_check" if template.startswith("/v1/audiences/") else "even"
        path = template.replace("{name}", name).replace("{user_id}", "4")
        assert client.head(path).status_code == 200, template


def test_405_lists_head_with_get(client: httpx.Client) -> None:
    response = client.patch("/v1/segments/even", json={})
    error_of(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "PUT", "DELETE"}
    response = client.put("/healthz")
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
    assert client.head("/v1/reach").status_code == 405


# -- charsets ----------------------------------------------------------------------------------------

REACH = {"expr": "even & triple"}
REACH_ANSWER = len(SEED["even"] & SEED["triple"])


def _bodies(value: object) -> dict[str, bytes]:
    text = json.dumps(value)
    return {
        "utf-8": text.encode(),
        "utf-8 with BOM": codecs.BOM_UTF8 + text.encode(),
        "utf-16-le with BOM": codecs.BOM_UTF16_LE + text.encode("utf-16-le"),
        "utf-16-be without BOM": text.encode("utf-16-be"),
        "utf-32 with BOM": text.encode("utf-32"),
    }


@pytest.mark.parametrize(
    ("encoding", "status", "code"),
    [
        ("utf-8", 200, None),
        ("utf-8 with BOM", 200, None),
        ("utf-16-le with BOM", 400, "invalid_json"),
        ("utf-16-be without BOM", 400, "invalid_json"),
        ("utf-32 with BOM", 400, "invalid_json"),
    ],
)
def test_json_bodies_are_utf8_the_same_on_every_route(
    client: httpx.Client, fresh_name: str, encoding: str, status: int, code: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    responses = {
        "put": client.put(
            f"/v1/segments/{fresh_name}", content=_bodies({"ids": [1, 2, 3]})[encoding], headers=headers
        ),
        "add": client.post(
            f"/v1/segments/{fresh_name}_b/add", content=_bodies({"ids": [4]})[encoding], headers=headers
        ),
        "put expr": client.put(
            f"/v1/segments/{fresh_name}_c", content=_bodies(REACH)[encoding], headers=headers
        ),
        "reach": client.post("/v1/reach", content=_bodies(REACH)[encoding], headers=headers),
        "overlap": client.post(
            "/v1/overlap", content=_bodies({"segments": ["even", "vip"]})[encoding], headers=headers
        ),
    }
    for route, response in responses.items():
        if code is None:
            assert response.status_code == 200, (route, response.text)
        else:
            error = error_of(response, status, code)
            assert "UTF-8" in str(error["message"]), (route, error)
    if code is None:
        assert responses["put"].json()["cardinality"] == 3
        assert responses["put expr"].json()["cardinality"] == REACH_ANSWER
        assert responses["reach"].json()["reach"] == REACH_ANSWER
    else:
        assert client.get(f"/v1/segments/{fresh_name}").status_code == 404  # nothing was written


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json; charset=utf-8", 200),
        ("application/json; charset=UTF-8", 200),
        ('application/json; charset="utf-8"', 200),
        ("application/json;charset=utf8", 200),
        ("application/json; charset=latin-1", 415),
        ("application/json; charset=iso-8859-1", 415),
        ("application/json; charset=utf-16", 415),
    ],
)
def test_charset_parameter(client: httpx.Client, fresh_name: str, content_type: str, status: int) -> None:
    headers = {"Content-Type": content_type}
    for response in [
        client.put(f"/v1/segments/{fresh_name}", content=json.dumps({"ids": [7]}).encode(), headers=headers),
        client.post("/v1/reach", content=json.dumps(REACH).encode(), headers=headers),
        client.post("/v1/overlap", content=json.dumps({"segments": ["vip"]}).encode(), headers=headers),
    ]:
        if status == 200:
            assert response.status_code == 200, response.text
        else:
            error = error_of(response, 415, "unsupported_media_type")
            assert "UTF-8" in str(error["message"]) and "charset" in str(error["message"])


def test_null_expression_is_an_invalid_expression(client: httpx.Client, fresh_name: str) -> None:
    error = error_of(client.put(f"/v1/segments/{fresh_name}", json={"expr": None}), 400, "invalid_expression")
    assert "NoneType" in str(error["message"]) or "null" in str(error["message"])
    error_of(client.post("/v1/reach", json={"expr": None}), 400, "invalid_request")
    assert client.get(f"/v1/segments/{fresh_name}").status_code == 404
