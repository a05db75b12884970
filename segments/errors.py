"""The one exception tree of the segments library.

Every error the library raises on purpose is a ``SegmentsError``::

    SegmentsError
    ├── InvalidInput                 the caller sent something unusable (HTTP 400)
    │   ├── ExpressionError
    │   │   ├── ExpressionSyntaxError    carries ``position`` (0-based) and ``expected``
    │   │   └── ExpressionTooComplex     depth or reference limit exceeded
    │   ├── InvalidSegmentName
    │   ├── InvalidUserId
    │   └── InvalidBitmap                user-supplied roaring bytes failed validation
    ├── SegmentNotFound              names the missing segments (HTTP 404)
    │   └── UniverseNotFound             ``~x`` needs the universe segment
    ├── Conflict                     optimistic concurrency gave up (HTTP 409)
    └── StorageError
        ├── StorageUnavailable       store down or unreachable (HTTP 503)
        │   └── StorageTimeout
        ├── RecordTooLarge           the store refused a record over its size limit
        └── CorruptSegment           stored bytes failed validation

Third-party exceptions (sqlite3, aerospike) are translated where they enter,
with ``raise ... from exc``; none of their types leaves ``segments.storage``.
"""

from __future__ import annotations

from collections.abc import Iterable


class SegmentsError(Exception):
    """Root of every error raised by the segments library."""

    code = "segments_error"


class InvalidInput(SegmentsError):
    """The caller supplied input that cannot be used."""

    code = "invalid_input"


class ExpressionError(InvalidInput):
    """An audience expression is invalid."""

    code = "invalid_expression"

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


class ExpressionSyntaxError(ExpressionError):
    """The expression text (or JSON tree) does not follow the grammar."""

    def __init__(self, message: str, position: int, expected: str = "") -> None:
        super().__init__(message, position)
        self.expected = expected


class ExpressionTooComplex(ExpressionError):
    """The expression is nested too deeply or names too many segments."""


class InvalidSegmentName(InvalidInput):
    """A segment name is not 1-128 characters of ``[A-Za-z0-9_.:]``."""

    code = "invalid_segment_name"


class InvalidUserId(InvalidInput):
    """A user ID is not an integer in ``[0, 2**32)``."""

    code = "invalid_user_id"


class InvalidBitmap(InvalidInput):
    """Bytes supplied as a portable roaring bitmap failed validation."""

    code = "invalid_bitmap"


class SegmentNotFound(SegmentsError):
    """One or more segments do not exist."""

    code = "segment_not_found"

    def __init__(self, names: Iterable[str], message: str | None = None) -> None:
        self.names = sorted(set(names))
        if message is None:
            listed = ", ".join(repr(n) for n in self.names)
            noun = "segment" if len(self.names) == 1 else "segments"
            message = f"unknown {noun}: {listed}"
        super().__init__(message)
        self.message = message


class UniverseNotFound(SegmentNotFound):
    """The complement operator needs the universe segment, which is missing."""

    def __init__(self, universe: str) -> None:
        super().__init__(
            [universe],
            f"complement (~ / NOT) is taken relative to the universe segment "
            f"{universe!r}, which does not exist; create it or configure another universe",
        )
        self.universe = universe


class Conflict(SegmentsError):
    """A conditional write lost to a concurrent writer (and retries ran out)."""

    code = "conflict"


class StorageError(SegmentsError):
    """The store failed."""

    code = "storage_error"


class StorageUnavailable(StorageError):
    """The store cannot be reached; retrying later may succeed."""

    code = "storage_unavailable"


class StorageTimeout(StorageUnavailable):
    """The store did not answer in time."""

    code = "storage_timeout"


class RecordTooLarge(StorageError):
    """The store refused a record larger than its configured limit."""

    code = "record_too_large"


class CorruptSegment(StorageError):
    """Stored bytes could not be decoded."""

    code = "corrupt_data"
