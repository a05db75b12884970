"""Prometheus metrics of one API process, served at ``/metrics``.

* ``segments_http_requests_total{method,route,status}`` and
  ``segments_http_request_duration_seconds{method,route}``: every request,
  labelled by the route *template* (``/v1/segments/{name}``) so label values
  stay bounded; requests that matched no route are labelled ``<unmatched>``.
* ``segments_reach_seconds``: engine time of reach queries (the ``took_ms`` of
  the responses), and ``segments_reach_total{outcome}``.
* ``segments_lookups_total{path}``: ``GET /v1/users/{id}/segments`` answered on the
  ``event_loop`` (fresh metadata snapshot, cached shards: no I/O) or in the
  ``threadpool`` (the lookup had to read the store; see ``api.lookups``).
* ``segments_cache_hits_total`` / ``segments_cache_misses_total`` /
  ``segments_cache_shard_fetches_total`` / ``segments_cache_evictions_total``,
  ``segments_cache_bytes``, ``segments_cache_entries``: the in-process bitmap cache.
* ``segments_damaged_reads_total``: reads that found a segment's records really gone or
  unreadable (``CorruptSegment``: 500 ``corrupt_data``, or the segment left out of a user
  lookup), and ``segments_read_retries_total``: reads started over because a writer moved
  the records they followed.
* ``segments_store_up``: 1 if the store answered a ping during this scrape, else 0 (and the
  error is logged as a warning of the ``api.metrics`` logger). A scrape answers 200 either
  way: failing it would hide every other metric exactly when they matter.
* ``segments_segments``: number of segments in the store, from ``Segments.catalog``: the
  metadata snapshot shared with user lookups, read again at most every
  ``CATALOG_MAX_AGE`` seconds (a scrape does not scan the store each time). Left out,
  with a logged error, when it cannot be read.

Each app has its own ``CollectorRegistry``. With ``--workers N`` (N > 1)
every worker process keeps its own counters and a scrape sees only the
worker that answered it: scrape each replica, or run one worker per
process/container behind the load balancer (the recommended layout).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from segments import Segments
from segments.errors import SegmentsError

log = logging.getLogger("api.metrics")
#: Seconds ``segments_segments`` may reuse the metadata snapshot it was read from.
CATALOG_MAX_AGE = 10.0

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "segments_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "segments_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.reach_latency = Histogram(
            "segments_reach_seconds",
            "Engine time of reach queries.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.reach_total = Counter(
            "segments_reach", "Reach queries by outcome.", ["outcome"], registry=self.registry
        )
        self.lookups = Counter(
            "segments_lookups",
            "User segment lookups by where they ran: event_loop (no I/O needed) or threadpool.",
            ["path"],
            registry=self.registry,
        )
        # children resolved once: the hot route pays no label lookup
        self.lookups_inline = self.lookups.labels("event_loop")
        self.lookups_threaded = self.lookups.labels("threadpool")

    def watch(self, segments: Callable[[], Segments | None], *, max_age: float = CATALOG_MAX_AGE) -> None:
        """Export the cache, the store's health and the catalog of the process's ``Segments`` at scrape time.

        ``segments`` returns ``None`` while the store is not connected (it was down at startup).
        """
        self.registry.register(_SegmentsCollector(segments, max_age))


def _failed(what: str, exc: Exception) -> None:
    if isinstance(exc, SegmentsError):
        log.warning("%s: %s: %s", what, exc.code, exc)
    else:  # not a store failure: a bug
        log.error("%s: unexpected %s: %s", what, type(exc).__name__, exc, exc_info=exc)


class _SegmentsCollector(Collector):
    def __init__(self, segments: Callable[[], Segments | None], max_age: float) -> None:
        self._segments = segments
        self._max_age = max_age

    def describe(self) -> list[GaugeMetricFamily]:
        """Nothing: else registering would call ``collect`` (and reach the store) to learn the names."""
        return []

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        segs = self._segments()
        store_up = "segments_store_up"
        up_help = "1 if the store answered a ping during this scrape, else 0."
        if segs is None:
            yield GaugeMetricFamily(store_up, up_help, value=0)
            return
        stats = segs.cache.stats
        yield CounterMetricFamily("segments_cache_hits", "Segment reads served from cache.", value=stats.hits)
        yield CounterMetricFamily(
            "segments_cache_misses", "Segment reads that fetched shards.", value=stats.misses
        )
        yield CounterMetricFamily(
            "segments_cache_shard_fetches", "Shard records fetched from the store.", value=stats.shard_fetches
        )
        yield CounterMetricFamily(
            "segments_cache_evictions", "Segments evicted from the cache.", value=stats.evictions
        )
        yield GaugeMetricFamily("segments_cache_bytes", "Bytes of cached bitmaps.", value=segs.cache.nbytes)
        yield GaugeMetricFamily("segments_cache_entries", "Segments in the cache.", value=len(segs.cache))
        reads = segs.reader.stats
        yield CounterMetricFamily(
            "segments_damaged_reads", "Reads that found a segment's records damaged.", value=reads.damaged
        )
        yield CounterMetricFamily(
            "segments_read_retries", "Reads started over because a writer moved records.", value=reads.moved_retries
        )
        try:
            segs.ping()
        except Exception as exc:
            _failed("metrics: the store did not answer", exc)
            yield GaugeMetricFamily(store_up, up_help, value=0)
            return
        yield GaugeMetricFamily(store_up, up_help, value=1)
        try:
            count = len(segs.catalog(self._max_age))
        except Exception as exc:
            _failed("metrics: could not read the catalog of segments", exc)
            return
        yield GaugeMetricFamily("segments_segments", "Segments in the store.", value=count)


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route: BaseRoute | None = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "")
            if method not in _METHODS:
                method = "OTHER"
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
