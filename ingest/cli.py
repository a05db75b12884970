"""``segments ingest`` (filled in by the Kafka ingest work)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Placeholder until the Kafka ingest lands."""
