"""``python -m ingest`` / ``segments ingest``: wire settings, store, metrics and consumer; handle signals."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from confluent_kafka import KafkaException

import segments
from segments.errors import SegmentsError

from .consumer import IngestConsumer
from .metrics import IngestMetrics
from .settings import IngestSettings

log = logging.getLogger("ingest")


def run(settings: IngestSettings) -> int:
    """Run the consumer until SIGTERM/SIGINT; return the exit status."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        segs = segments.connect(settings.store, set_prefix=settings.set_prefix, cache_bytes=64 << 20)
    except SegmentsError as exc:
        log.error("cannot open the store %s: %s", settings.store, exc)
        return 2
    metrics = IngestMetrics()
    if settings.metrics_port:
        try:
            metrics.serve(settings.metrics_port, settings.metrics_host)
        except OSError as exc:
            log.error("cannot serve metrics on port %d: %s", settings.metrics_port, exc)
            segs.close()
            return 2
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    consumer = IngestConsumer(settings, segs, metrics)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: finishing the batch in flight, committing and leaving the group",
                 signal.Signals(signum).name)
        consumer.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        consumer.run()
    except KafkaException as exc:
        log.error("Kafka failed: %s", exc)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        segs.close()
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from segments.cli import main as segments_main

    return segments_main(["ingest", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
