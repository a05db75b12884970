"""The HTTP baseline: a bare Starlette app under uvicorn, answering the benchmark's routes with fixed JSON.

``python -m bench.bare_app --port P`` serves, on 127.0.0.1, the same paths the
API benchmark asks (``POST /v1/reach``, ``GET /v1/users/{id}/segments``,
``POST /v1/users/{id}/match``, ``GET /healthz``) with no store, no engine and
no middleware: the body is read and decoded, a constant answer is written with
``json.dumps``. Timed by the same client process as ``segments serve`` in the
same run, it is the round trip an API cannot beat on this machine (loopback,
uvicorn's protocol, Starlette routing, JSON both ways).
"""

from __future__ import annotations

import argparse
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def _json(body: object) -> Response:
    return Response(json.dumps(body), media_type="application/json")


async def reach(request: Request) -> Response:
    body = json.loads(await request.body())
    return _json({"reach": 0, "took_ms": 0.0, "expr": body.get("expr")})


async def user_segments(request: Request) -> Response:
    return _json({"user_id": int(request.path_params["user_id"]), "segments": []})


async def match(request: Request) -> Response:
    body = json.loads(await request.body())
    return _json({"user": int(request.path_params["user_id"]), "match": bool(body)})


async def healthz(request: Request) -> Response:
    return _json({"status": "ok"})


app = Starlette(
    routes=[
        Route("/v1/reach", reach, methods=["POST"]),
        Route("/v1/users/{user_id}/segments", user_segments, methods=["GET"]),
        Route("/v1/users/{user_id}/match", match, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.bare_app")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", server_header=False)


if __name__ == "__main__":
    main()
