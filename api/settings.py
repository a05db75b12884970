"""Settings of the HTTP API process: one class, read once from ``SEGMENTS_*`` variables, injected.

| variable | default | meaning |
| --- | --- | --- |
| ``SEGMENTS_STORE`` | ``sqlite:///./data/segments.db`` | store URL |
| ``SEGMENTS_HOST`` / ``SEGMENTS_PORT`` | ``127.0.0.1`` / ``8000`` | listen address |
| ``SEGMENTS_WORKERS`` | ``1`` | uvicorn worker processes |
| ``SEGMENTS_API_KEYS`` | unset (open) | ``key:scope[,scope];key2:scope``, scopes ``read``, ``write`` |
| ``SEGMENTS_MAX_BODY_BYTES`` | 64 MiB | largest request body accepted (413 above); a roaring bitmap may be this large |
| ``SEGMENTS_MAX_JSON_BODY_BYTES`` | 8 MiB | largest JSON body of a write (``ids``, ``expr``) |
| ``SEGMENTS_MAX_QUERY_BODY_BYTES`` | 64 KiB | largest reach or overlap body |
| ``SEGMENTS_BODY_TIMEOUT`` | ``30`` | seconds a request body may take to arrive (408 after) |
| ``SEGMENTS_UNIVERSE`` | ``all`` | the segment ``~x`` is taken relative to |
| ``SEGMENTS_CACHE_BYTES`` | 4 GiB | memory for hot segment bitmaps, per process |
| ``SEGMENTS_LOOKUP_STALENESS`` | ``0.25`` | seconds ``/v1/users/{id}/segments`` may reuse metadata (0: read it on every call) |
| ``SEGMENTS_WARM`` | off | load every segment into the cache before reporting ready |
| ``SEGMENTS_DEMO`` / ``SEGMENTS_DEMO_USERS`` / ``SEGMENTS_DEMO_SEED`` | off / 10M / fixed | demo data on an empty store |
| ``SEGMENTS_LOG_LEVEL`` | ``info`` | uvicorn log level |
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from segments.demo import DEFAULT_SEED, DEFAULT_USERS
from segments.errors import InvalidSegmentName
from segments.names import check_name

from .auth import ApiKey, parse_api_keys

DEFAULT_STORE = "sqlite:///./data/segments.db"


class Settings(BaseSettings):
    """Everything the API process needs; every field is also a ``SEGMENTS_<NAME>`` variable."""

    model_config = SettingsConfigDict(env_prefix="SEGMENTS_", extra="ignore", frozen=True)

    store: str = Field(
        default=DEFAULT_STORE, description="store URL (memory://, sqlite:///path, aerospike://...)"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=256)
    api_keys: str | None = Field(default=None, description="key:scope[,scope];key2:scope (unset: no auth)")
    max_body_bytes: int = Field(default=64 << 20, ge=1024)
    max_json_body_bytes: int = Field(default=8 << 20, ge=1024, description="largest JSON body of a write")
    max_query_body_bytes: int = Field(default=64 << 10, ge=1024, description="largest reach or overlap body")
    body_timeout: float = Field(default=30.0, gt=0, description="seconds a request body may take to arrive")
    universe: str = "all"
    cache_bytes: int = Field(default=4 << 30, ge=0)
    lookup_staleness: float = Field(
        default=0.25,
        ge=0,
        description="seconds GET /v1/users/{id}/segments may reuse segment metadata (0: read it every call)",
    )
    warm: bool = Field(default=False, description="load every segment into the cache before serving")
    demo: bool = False
    demo_users: int = Field(default=DEFAULT_USERS, ge=1, le=1 << 32)
    demo_seed: int = Field(default=DEFAULT_SEED, ge=0)
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if not re.match(r"^(memory|sqlite|aerospike)://", value):
            raise ValueError(
                f"{value!r} is not a store URL: use memory://, sqlite:///path or aerospike://host:port/namespace"
            )
        return value

    @field_validator("universe")
    @classmethod
    def _universe(cls, value: str) -> str:
        try:
            return check_name(value)
        except InvalidSegmentName as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("api_keys")
    @classmethod
    def _api_keys(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_api_keys(value)  # raises ValueError with a precise message
        return value

    @property
    def keys(self) -> list[ApiKey]:
        """The parsed API keys (empty: authentication is off)."""
        return parse_api_keys(self.api_keys) if self.api_keys else []

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
