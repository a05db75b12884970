"""The shared log formatters."""

from __future__ import annotations

import json
import logging

import pytest

from segments.logs import JsonFormatter, TextFormatter, logging_context, parse_log_format


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("ingest.sink", logging.INFO, __file__, 1, msg, None, None)
    for k, v in extra.items():
        setattr(record, k, v)
    return record


def test_json_lines_carry_context_and_extra_fields() -> None:
    with logging_context(batch="segment-updates/0@10-20"):
        line = JsonFormatter().format(_record("applied segment=a", segment="a", version=3))
    entry = json.loads(line)
    assert entry["msg"] == "applied segment=a" and entry["level"] == "info" and entry["logger"] == "ingest.sink"
    assert entry["batch"] == "segment-updates/0@10-20" and entry["segment"] == "a" and entry["version"] == 3
    assert entry["ts"].endswith("Z")
    assert "batch" not in json.loads(JsonFormatter().format(_record("outside")))


def test_text_lines_name_the_context() -> None:
    with logging_context(batch="t/1@5-5"):
        assert TextFormatter().format(_record("hello")).endswith("hello [batch=t/1@5-5]")


def test_exceptions_are_one_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exc"]


def test_log_format_values() -> None:
    assert parse_log_format(None) == "json" and parse_log_format(" TEXT ") == "text"
    with pytest.raises(ValueError):
        parse_log_format("xml")
