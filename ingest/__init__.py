"""Kafka ingest of segment updates: the consumer (``segments ingest``) and the producer side.

Batch jobs written in Python publish with :class:`SegmentProducer`; jobs in
other languages produce the message format described in :mod:`ingest.codec`.
"""

from __future__ import annotations

from .codec import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TOPIC, REASONS, DecodeError, Update, decode, encode
from .producer import DeliveryError, SegmentProducer, Sent, new_batch_id

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TOPIC",
    "REASONS",
    "DecodeError",
    "DeliveryError",
    "SegmentProducer",
    "Sent",
    "Update",
    "decode",
    "encode",
    "new_batch_id",
]
