"""Dependencies: the process's ``Segments`` (opened by the lifespan), its settings and metrics."""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from segments import Segments
from segments.errors import StorageUnavailable
from segments.storage import open_store

from .metrics import Metrics
from .settings import Settings


class Connection:
    """The process's one ``Segments``: opened by the lifespan or, after an outage, on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._segments: Segments | None = None
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        """Allow opening (again): the lifespan calls this on every startup."""
        with self._lock:
            self._closed = False

    def open(self) -> Segments:
        segs = self._segments
        if segs is not None:
            return segs
        with self._lock:
            if self._segments is None:
                if self._closed:
                    raise StorageUnavailable("the API is shutting down")
                self._segments = Segments(
                    open_store(self.settings.store),
                    universe=self.settings.universe,
                    cache_bytes=self.settings.cache_bytes,
                    lookup_staleness=self.settings.lookup_staleness,
                )
            return self._segments

    @property
    def current(self) -> Segments | None:
        return self._segments

    def close(self) -> None:
        with self._lock:
            self._closed = True
            segs, self._segments = self._segments, None
        if segs is not None:
            segs.close()


# The dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in its
# threadpool, and a thread hop per dependency would cost more than the bitmap work of a query.


async def get_segments(request: Request) -> Segments:
    """The one ``Segments`` of this process, shared by every request (it is thread-safe)."""
    connection: Connection = request.app.state.connection
    segs = connection.current
    if segs is not None:
        return segs
    return await run_in_threadpool(connection.open)  # reconnecting may block: not on the event loop


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


SegmentsDep = Annotated[Segments, Depends(get_segments)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
