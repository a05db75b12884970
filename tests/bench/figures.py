"""The numbers of a report and the numbers its results can account for.

A *figure* is a maximal run of digits (with ``.`` or ``,`` between digits)
that does not continue a word, with the unit that follows it if any:
``3.80×``, ``423 µs``, ``1.93 MiB``, ``1,064,417``, ``50M``, ``3.11.7``, but
not the digits of identifiers such as ``s10``, ``q5``, ``p99``, ``L3`` or
``mallinfo2``. A results dict accounts for a figure when the figure is one of:

* a figure of one of its strings or keys (versions, dates, query texts);
* a number of it printed by one of ``report.FORMATTERS`` or
  ``report.UNIT_FORMATS``, unit included (a ratio is accounted for by a
  ratio, not by a time with the same digits). Numbers inside lists of numbers
  (raw samples, progress traces) do not count: the report prints none of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from bench import report

FIGURE = re.compile(r"(?<![\w.,])\d+(?:[.,]\d+)*(?:(?: (?:µs|ms|s|B|KiB|MiB|GiB|GB/s)|×|M)(?!\w))?")


def figures(text: str) -> list[str]:
    """Every figure of ``text``, in order."""
    return FIGURE.findall(text)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numbers(node: Any) -> Iterator[float]:
    """Every number of a results dict outside lists of numbers."""
    if isinstance(node, dict):
        for value in node.values():
            yield from numbers(value)
    elif isinstance(node, list):
        if not any(_is_number(v) or isinstance(v, list) for v in node):
            for value in node:
                yield from numbers(value)
    elif _is_number(node):
        yield float(node)


def strings(node: Any) -> Iterator[str]:
    """Every string and key of a results dict."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


def string_figures(results: dict[str, Any]) -> set[str]:
    return {f for s in strings(results) for f in figures(s)}


def accounted(results: dict[str, Any]) -> set[str]:
    """Every figure ``results`` accounts for (see the module docstring)."""
    out = string_figures(results)
    formats = (*report.FORMATTERS, *report.UNIT_FORMATS.values())
    for value in set(numbers(results)):
        for fmt in formats:
            out.update(figures(fmt(value)))
    return out


def unaccounted(markdown: str, results: dict[str, Any]) -> list[str]:
    """The figures of ``markdown`` that ``results`` does not account for."""
    known = accounted(results)
    return [f for f in figures(markdown) if f not in known]
