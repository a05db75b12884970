"""Small JSON responses without a response-model round trip (the hot paths use these)."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from segments import SegmentInfo


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def info_body(info: SegmentInfo) -> dict[str, Any]:
    return info.as_dict()
