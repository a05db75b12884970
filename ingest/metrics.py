"""Prometheus metrics of the ingest consumer, in a registry of their own (one per consumer)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class IngestMetrics:
    """Every metric ``segments ingest`` exports (all names start with ``segments_ingest_``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "segments_ingest_messages_applied", "Messages whose update was applied to the store", ["op"], registry=r
        )
        self.ids = Counter("segments_ingest_ids_applied", "User IDs carried by applied messages", ["op"], registry=r)
        self.skipped = Counter(
            "segments_ingest_messages_skipped",
            "Messages with no effect: replayed (at or below the segment's watermark), duplicate_part, stale_batch",
            ["reason"],
            registry=r,
        )
        self.dead_letters = Counter(
            "segments_ingest_dead_letters", "Messages sent to the dead-letter topic", ["reason"], registry=r
        )
        self.dead_letters_lost = Counter(
            "segments_ingest_dead_letters_lost",
            "Rejected messages the dead-letter topic refused even in the smallest form (logged, then skipped)",
            ["reason"],
            registry=r,
        )
        self.writes = Counter("segments_ingest_segment_writes", "Segment writes (one per segment per batch)", registry=r)
        self.batch_seconds = Histogram(
            "segments_ingest_batch_seconds",
            "Time to apply and commit one batch, retries included",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.batch_messages = Histogram(
            "segments_ingest_batch_messages",
            "Messages per batch",
            buckets=(1, 10, 100, 1000, 5000, 10_000, 50_000, 100_000, 1_000_000),
            registry=r,
        )
        self.lag = Gauge(
            "segments_ingest_consumer_lag",
            "Messages in the partition after the committed offset",
            ["topic", "partition"],
            registry=r,
        )
        self.committed = Gauge(
            "segments_ingest_committed_offset", "Last committed offset", ["topic", "partition"], registry=r
        )
        self.retries = Counter(
            "segments_ingest_batch_retries",
            "Failed batch attempts, retried with backoff (kind: the store error's code, such as "
            "storage_unavailable, storage_timeout, storage_full, conflict; or dead_letter_delivery)",
            ["kind"],
            registry=r,
        )
        self.store_up = Gauge("segments_ingest_store_up", "1 when the last store write succeeded", registry=r)
        self.store_up.set(1)
        self.commits = Counter("segments_ingest_commits", "Successful offset commits", registry=r)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` over HTTP on a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)

    def forget_partition(self, topic: str, partition: int) -> None:
        for gauge in (self.lag, self.committed):
            try:
                gauge.remove(topic, str(partition))
            except KeyError:
                pass


__all__ = ["IngestMetrics"]
