"""Small JSON responses without a response-model round trip (the hot paths use these)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

from segments import SegmentInfo, WindowConfig


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def info_body(info: SegmentInfo) -> dict[str, Any]:
    return info.as_dict()


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as an ISO 8601 UTC timestamp (the form of every time in the API)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def windowed_body(config: WindowConfig, cardinality: int) -> dict[str, Any]:
    """A windowed segment as the API shows it: its settings, buckets and whole-retention reach."""
    buckets = config.buckets
    return {
        "name": config.name,
        "windowed": True,
        "granularity": config.granularity,
        "retention": config.retention,
        "buckets": len(buckets),
        "oldest": config.start_of(buckets[0]).isoformat() if buckets else None,
        "newest": config.start_of(buckets[-1]).isoformat() if buckets else None,
        "cardinality": cardinality,
        "created_at": iso_ms(config.created_ms),
    }
