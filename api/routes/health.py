"""Liveness, readiness and Prometheus metrics (no authentication: probes and scrapers call them)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from ..deps import MetricsDep, SegmentsDep
from ..responses import json_response
from ..schemas import Status, responses

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive", response_model=Status)
async def healthz() -> Response:
    return json_response({"status": "ok"})


async def healthz_by_request(request: Request) -> Response:
    """``healthz`` for ``api.fastpath``."""
    return await healthz()


@router.get(
    "/readyz",
    summary="The store is reachable",
    response_model=Status,
    responses=responses(500, 503),
)
def readyz(segs: SegmentsDep) -> Response:
    segs.ping()
    return json_response({"status": "ready"})


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
