"""Settings of ``segments ingest`` and ``segments push``: command-line flags over ``SEGMENTS_*`` env vars.

Read once, in ``ingest/__main__.py`` / ``ingest/cli.py``, and passed down.
``SEGMENTS_KAFKA_OPTIONS`` takes a JSON object of extra librdkafka settings
(``{"security.protocol": "SASL_SSL", ...}``); ``-X key=value`` does the same
on the command line.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .codec import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TOPIC

DEFAULT_STORE = "sqlite:///./data/segments.db"
_TOPIC = re.compile(r"[A-Za-z0-9._\-]{1,249}")
LogLevel = Literal["debug", "info", "warning", "error"]


def _check_topic(value: str) -> str:
    if not _TOPIC.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"{value!r} is not a valid Kafka topic name (1-249 characters of [A-Za-z0-9._-])")
    return value


class KafkaSettings(BaseSettings):
    """What both commands need to reach Kafka."""

    model_config = SettingsConfigDict(env_prefix="SEGMENTS_", extra="ignore", frozen=True)

    bootstrap_servers: str = Field("localhost:9092", min_length=1, description="Kafka bootstrap servers, host:port[,...]")
    topic: str = Field(DEFAULT_TOPIC, description="topic of segment updates")
    kafka_options: dict[str, str] = Field(default_factory=dict, description="extra librdkafka settings")
    log_level: LogLevel = "info"
    log_format: Literal["json", "text"] = Field("json", description="log lines as JSON objects or text")

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return _check_topic(value)

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"bootstrap server {server!r} is not host:port")
        return value


class IngestSettings(KafkaSettings):
    """``segments ingest``: the consumer process."""

    group: str = Field("segments-ingest", min_length=1, max_length=255, description="consumer group id")
    dlq_topic: str = Field("segment-updates.dlq", description="dead-letter topic")
    store: str = Field(DEFAULT_STORE, description="store URL")
    set_prefix: str = Field("", description="set-name prefix of the segments store")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port (0: off)")
    metrics_host: str = Field(
        "127.0.0.1", min_length=1, description="address /metrics listens on (0.0.0.0: every interface)"
    )
    batch_max_messages: int = Field(50_000, ge=1, le=1_000_000)
    batch_max_ids: int = Field(20_000_000, ge=1)
    batch_max_wait: float = Field(0.5, gt=0, le=60)
    write_threads: int = Field(0, ge=0, le=256, description="segments written at once (0: 8 on Aerospike, else 1)")
    cache_bytes: int = Field(
        512 << 20, ge=1 << 20,
        description="the process's cache budget: bitmaps, and a quarter of it for user-key translations",
    )
    backoff_initial: float = Field(0.2, gt=0, le=60)
    backoff_max: float = Field(30.0, gt=0, le=3600)

    @field_validator("dlq_topic")
    @classmethod
    def _dlq(cls, value: str) -> str:
        return _check_topic(value)

    @model_validator(mode="after")
    def _distinct(self) -> IngestSettings:
        if self.dlq_topic == self.topic:
            raise ValueError("the dead-letter topic must differ from the update topic")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")
        return self


class PushSettings(KafkaSettings):
    """``segments push``: the producer command."""

    max_message_bytes: int = Field(DEFAULT_MAX_MESSAGE_BYTES, ge=16 * 1024, le=100 * 1024 * 1024)
    delivery_timeout: float = Field(120.0, gt=0)


__all__ = ["DEFAULT_STORE", "IngestSettings", "KafkaSettings", "LogLevel", "PushSettings"]
