"""Segment names: 1-128 characters of ``[A-Za-z0-9_.:]``, not an operator keyword."""

from __future__ import annotations

import re

from .errors import InvalidSegmentName

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:]{1,128}")
#: Words of the expression language; a segment cannot be called one of these.
KEYWORDS = frozenset({"and", "or", "not", "xor", "except"})


def check_name(name: object) -> str:
    """Return ``name`` if it is a valid segment name, else raise ``InvalidSegmentName``."""
    if not isinstance(name, str):
        raise InvalidSegmentName(f"segment names are strings, got {type(name).__name__}")
    if not NAME_PATTERN.fullmatch(name):
        if not name:
            reason = "it is empty"
        elif len(name) > 128:
            reason = f"it is {len(name)} characters long (at most 128)"
        else:
            bad = next(c for c in name if not NAME_PATTERN.fullmatch(c))
            reason = f"it contains {bad!r}"
        raise InvalidSegmentName(
            f"invalid segment name {name[:140]!r}: {reason}; "
            "names are 1-128 characters of letters, digits, '_', '.' and ':'"
        )
    if name.lower() in KEYWORDS:
        raise InvalidSegmentName(
            f"invalid segment name {name!r}: it is a keyword of the expression language"
        )
    return name
