"""Fixtures of the library tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

import segments


@pytest.fixture
def connect_fresh(store_url: str) -> Iterator[Callable[[], segments.Segments]]:
    """Each call (e.g. per hypothesis example) gets its own sets inside the backend's store."""
    opened: list[segments.Segments] = []

    def fresh() -> segments.Segments:
        s = segments.connect(store_url, set_prefix=f"p{uuid.uuid4().hex[:8]}_")
        opened.append(s)
        return s

    yield fresh
    for s in opened:
        s.close()
