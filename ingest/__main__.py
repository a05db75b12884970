"""``python -m ingest`` / ``segments ingest``: wire settings, store, metrics and consumer; handle signals."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from confluent_kafka import KafkaException

import segments
from segments.errors import SegmentsError, StorageUnavailable
from segments.logs import configure as configure_logging

from .consumer import FatalStoreError, IngestConsumer
from .metrics import IngestMetrics
from .settings import IngestSettings

log = logging.getLogger("ingest")


class _Shutdown:
    """SIGTERM/SIGINT: stop the consumer if there is one yet, else stop waiting for the store."""

    def __init__(self) -> None:
        self.requested = False
        self.consumer: IngestConsumer | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        log.info("%s: finishing the batch in flight, committing and leaving the group", signal.Signals(signum).name)
        self.requested = True
        if self.consumer is not None:
            self.consumer.stop()


def run(settings: IngestSettings) -> int:
    """Run the consumer until SIGTERM/SIGINT; return the exit status."""
    configure_logging(settings.log_format, settings.log_level)
    shutdown = _Shutdown()
    previous = {sig: signal.signal(sig, shutdown) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        segs = _connect(settings, shutdown)
        if segs is None:
            return 0 if shutdown.requested else 2
        try:
            return _consume(settings, segs, shutdown)
        finally:
            segs.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _connect(settings: IngestSettings, shutdown: _Shutdown) -> segments.Segments | None:
    """Open the store, waiting with capped backoff while it is unavailable."""
    delay = settings.backoff_initial
    while not shutdown.requested:
        try:
            return segments.connect(settings.store, set_prefix=settings.set_prefix, cache_bytes=settings.cache_bytes)
        except StorageUnavailable as exc:
            # only an unreachable store is waited for: a bad URL raises a plain StorageError, whose
            # fault says "transient", but opening it again cannot succeed
            log.warning("store %s unavailable (%s); retrying in %.1fs", settings.store, exc, delay)
        except SegmentsError as exc:
            log.error("cannot open the store %s: %s", settings.store, exc)
            return None
        deadline = time.monotonic() + delay
        while not shutdown.requested and time.monotonic() < deadline:
            time.sleep(0.05)
        delay = min(settings.backoff_max, delay * 2)
    return None


def _consume(settings: IngestSettings, segs: segments.Segments, shutdown: _Shutdown) -> int:
    metrics = IngestMetrics()
    if settings.metrics_port:
        try:
            metrics.serve(settings.metrics_port, settings.metrics_host)
        except OSError as exc:
            log.error("cannot serve metrics on port %d: %s", settings.metrics_port, exc)
            return 2
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    consumer = IngestConsumer(settings, segs, metrics)
    shutdown.consumer = consumer
    if shutdown.requested:
        return 0
    try:
        consumer.run()
    except KafkaException as exc:
        log.error("Kafka failed: %s", exc)
        return 1
    except FatalStoreError:
        log.critical("stopped: fix the store and restart; consumption resumes at the last committed offsets")
        return 3
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from segments.cli import main as segments_main

    return segments_main(["ingest", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
