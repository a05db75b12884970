"""Structured logging shared by every process (API, consumer, tools).

``json`` (the default) writes one JSON object per line: ``ts``, ``level``,
``logger``, ``msg``, the fields of the current log context (a request ID, a
batch ID ...), any ``extra=`` fields, and ``exc`` for tracebacks. ``text``
writes the same records as readable lines.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final, Literal

LogFormat = Literal["json", "text"]

#: fields added to every line logged in the current context (thread pools inherit it)
log_context: ContextVar[dict[str, str] | None] = ContextVar("segments_log_context", default=None)

#: attributes every ``LogRecord`` has; anything else on a record came from ``extra=`` and is logged
_STANDARD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "color_message"}
)


def parse_log_format(raw: str | None) -> LogFormat:
    """``json`` or ``text`` (empty: ``json``); anything else raises ``ValueError``."""
    text = (raw or "").strip().lower() or "json"
    if text in ("json", "text"):
        return text  # type: ignore[return-value]
    raise ValueError(f"log format {raw!r}: expected json or text")


@contextmanager
def logging_context(**fields: str) -> Iterator[None]:
    """Add ``fields`` to every line logged inside the ``with`` block."""
    token = log_context.set({**(log_context.get() or {}), **fields})
    try:
        yield
    finally:
        log_context.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def __init__(self, use_colors: bool | None = None, **_ignored: Any) -> None:
        # uvicorn may pass ``use_colors`` to the formatters it knows by name: accepted, unused.
        super().__init__()

    def context(self, record: logging.LogRecord) -> dict[str, str]:
        """Fields of the current context; subclasses may add their own."""
        return dict(log_context.get() or {})

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in self.context(record).items():
            entry.setdefault(key, value)
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """Readable lines: ``time level logger: msg [key=value ...]``."""

    def __init__(self, use_colors: bool | None = None, **_ignored: Any) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def context(self, record: logging.LogRecord) -> dict[str, str]:
        return dict(log_context.get() or {})

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in self.context(record).items() if f"{k}=" not in line)
        return f"{line} [{extra}]" if extra else line


def configure(fmt: LogFormat, level: str | int = "INFO") -> None:
    """Send every logger of a (non-uvicorn) process to stderr in ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
