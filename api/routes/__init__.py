"""The API's routers: segments (CRUD, membership, export), queries (reach, overlap, users), health, page."""

from . import health, page, queries, segments

__all__ = ["health", "page", "queries", "segments"]
