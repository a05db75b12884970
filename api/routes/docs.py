"""The interactive API docs at ``/docs``: Swagger UI served by the app itself, so they work offline.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN, which a machine with
no internet cannot reach, so ``api.main`` turns it off (``docs_url=None``) and
this router serves the same page with the Swagger UI build taken from the
``fastapi-offline`` package (a dependency of the API, installed with it):
``swagger-ui-bundle.js``, ``swagger-ui.css`` and a favicon, under
``/docs/assets/``. Nothing else of that package is used.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, HTMLResponse, Response

__all__ = ["ASSETS", "ASSETS_DIR", "ASSETS_URL", "router"]

#: Where the installed ``fastapi-offline`` package keeps its Swagger UI build.
ASSETS_DIR = Path(str(resources.files("fastapi_offline").joinpath("static")))
ASSETS_URL = "/docs/assets"
#: The files the page loads, with their media types; any other name is a 404.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    app = request.app
    return get_swagger_ui_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} · docs",
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        oauth2_redirect_url=None,
        # no badge that would ask the public validator service about the schema
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/docs/assets/{name}")
async def swagger_ui_asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404)
    return FileResponse(
        ASSETS_DIR / name,
        media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
