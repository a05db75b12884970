"""Skips for something a test needs that is not there, and no such skip in CI.

A test that needs a server, a browser or a broker which is not available skips with a reason
that starts with :data:`MISSING`, through :func:`require` (or ``reason=missing(...)`` on a
``skipif`` mark). ``tests/conftest.py`` turns exactly those skips into failures when the ``CI``
environment variable is set, so CI never passes by not running a test; outside CI they stay
skips, with the same message.
"""

from __future__ import annotations

import os

import pytest

#: how every "something is not there" skip reason starts
MISSING = "missing: "


def missing(what: str) -> str:
    """The skip reason for ``what`` not being available (``what`` says how to get it)."""
    return f"{MISSING}{what}"


def in_ci() -> bool:
    """True when the ``CI`` environment variable is set (to anything but empty, ``0`` or ``false``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def require(what: str, available: bool) -> None:
    """Skip the calling test (fail it in CI) unless ``available``; ``what`` names what is missing."""
    if not available:
        pytest.skip(missing(what))
