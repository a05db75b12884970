"""``segments serve`` (filled in by the HTTP API work)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Placeholder until the HTTP API lands."""
