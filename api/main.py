"""Wiring of the HTTP API: settings -> store -> ``Segments`` -> routes, middleware and handlers.

``create_app(settings)`` builds the app; its lifespan opens ONE ``Segments``
per process (the library keeps hot segments cached as whole bitmaps, so
every request must share it) and closes it on shutdown. ``app_factory`` is
what uvicorn imports (``api.main:app_factory`` with ``factory=True``), so
every worker process builds its own app from the ``SEGMENTS_*`` environment.

If the store cannot be reached at startup (an Aerospike outage), the app
starts anyway: ``/healthz`` answers, ``/readyz`` and store-backed routes
answer 503 with ``Retry-After`` and reconnection is tried on the next
request, so a replica recovers on its own when the store comes back.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from starlette.staticfiles import StaticFiles

import segments
from segments.errors import SegmentsError, StorageUnavailable

from . import errors, fastpath
from .deps import Connection
from .limits import BodyGuardMiddleware, Limits
from .logging import RequestIdMiddleware
from .metrics import Metrics, MetricsMiddleware
from .protocol import HeadMiddleware
from .routes import audiences, docs, health, keys, page, queries, windows
from .routes import segments as segment_routes
from .routes.page import STATIC
from .runtime import tune_malloc
from .schemas import ERROR_BODY, EXPRESSION_TREE_SCHEMA
from .settings import Settings, get_settings

log = logging.getLogger("api")

DESCRIPTION = """\
Real-time audience segmentation over roaring bitmaps: replace, add to and remove from
segments; compose them with `| & - ^ ~` and get the exact reach; ask which segments a
user is in. Audiences are live named expressions; windowed segments keep members per
day or hour and are queried over rolling windows. Errors are always
`{"error": {"code", "message", ...}}`.

When `SEGMENTS_API_KEYS` is set, every `/v1` route needs `Authorization: Bearer <key>`:
reads need the `read` scope, changes the `write` scope.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    tune_malloc()  # before any worker thread allocates: see api.runtime
    connection = Connection(settings)
    metrics = Metrics()
    metrics.watch(lambda: connection.current)
    limits = Limits.of(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        connection.start()
        try:
            segs = connection.open()
        except StorageUnavailable as exc:
            log.warning("store %s is unavailable at startup (%s); will retry on use", settings.store, exc)
        else:
            if settings.warm:
                try:
                    count = await run_in_threadpool(segs.warm)
                    log.info("cached %d segments", count)
                except SegmentsError as exc:  # a cold cache is slower, not broken: serve anyway
                    log.warning("could not warm the cache: %s", exc)
        try:
            yield
        finally:
            connection.close()

    app = FastAPI(
        title="Segments API",
        version=segments.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url=None,  # api.routes.docs serves /docs with Swagger UI from a package, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.api_keys = settings.keys
    app.state.metrics = metrics
    app.state.connection = connection
    app.state.limits = limits

    errors.install(app)
    app.add_middleware(HeadMiddleware)  # innermost: the routes see a GET (see api.protocol)
    app.add_middleware(BodyGuardMiddleware, limit=limits.body, timeout=limits.timeout)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)  # outermost: every response gets an ID and an access line
    routers = [
        segment_routes.router,
        windows.router,
        queries.router,
        audiences.router,
        keys.router,
        health.router,
        page.router,
        docs.router,
    ]
    for router in routers:
        app.include_router(router)
    # the hottest routes skip FastAPI's routing and dependency solving (see api.fastpath)
    fastpath.install(
        app,
        [route for router in routers for route in router.routes],
        {
            queries.user_segments: queries.user_segments_by_request,
            queries.reach: queries.reach,
            audiences.match_user: audiences.match_user_by_request,
            audiences.match_batch: audiences.match_batch,
            health.healthz: health.healthz_by_request,
        },
    )
    # path pattern -> methods, so a 405 can name every allowed method (see api.errors)
    app.state.route_methods = [
        (route.path_regex, frozenset(route.methods or ()))
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
    ]
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _tidy_openapi(app, secured=bool(settings.keys))
    return app


def _tidy_openapi(app: FastAPI, *, secured: bool) -> None:
    """Make ``/openapi.json`` say exactly what this process does.

    * validation errors answer 400 in the common error shape: drop FastAPI's default 422 entries;
    * the expression tree and error body schemas go into the components (bodies refer to them);
    * the bearer security requirement is listed only when API keys are configured.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                if isinstance(operation, dict):
                    operation.get("responses", {}).pop("422", None)
                    if not secured:
                        operation.pop("security", None)
        components = schema.setdefault("components", {})
        models = components.setdefault("schemas", {})
        models.pop("HTTPValidationError", None)
        models.pop("ValidationError", None)
        models["ExpressionTree"] = EXPRESSION_TREE_SCHEMA
        models["ErrorBody"] = ERROR_BODY
        if not secured:
            components.pop("securitySchemes", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_factory() -> FastAPI:
    """The uvicorn entry point: ``uvicorn api.main:app_factory --factory``."""
    return create_app(get_settings())
