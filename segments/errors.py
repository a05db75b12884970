"""The one exception tree of the segments library.

Every error the library raises on purpose is a ``SegmentsError``::

    SegmentsError
    ├── InvalidInput                 the caller sent something unusable (HTTP 400)
    │   ├── ExpressionError
    │   │   ├── ExpressionSyntaxError    carries ``position`` (0-based) and ``expected``
    │   │   ├── ExpressionTooComplex     depth or reference limit exceeded
    │   │   └── AudienceCycle            an audience would use itself (``cycle`` lists the path)
    │   ├── InvalidSegmentName
    │   ├── InvalidUserId
    │   ├── BadTime                      an ``at`` outside the retention, in the future, or on a plain segment
    │   ├── InvalidUserKey               not 1-256 bytes of UTF-8 without control characters
    │   └── InvalidBitmap                user-supplied roaring bytes failed validation
    ├── SegmentNotFound              names the missing segments (HTTP 404)
    │   └── UniverseNotFound             ``~x`` needs the universe segment
    ├── NameTaken                    the name is a segment and an audience is asked for, or back (409)
    ├── InUse                        audiences use it (``dependents``); delete them or cascade (409)
    ├── Conflict                     optimistic concurrency gave up (HTTP 409)
    └── StorageError
        ├── StorageUnavailable       store down or unreachable (HTTP 503)
        │   ├── StorageTimeout
        │   └── StorageFull              out of space / stop-writes: the operator must act
        ├── StorageMisconfigured     unknown namespace, bad credentials, refused setting
        ├── RecordTooLarge           the store refused a record over its size limit
        └── CorruptSegment           stored records are damaged or missing (names the segment)

Every class says, once, what its errors mean for whoever handles them, in
``fault`` (one of :class:`Fault`); the HTTP layer and the ingest consumer
decide from it (and from nothing else) whether to retry, refuse or stop:

=========== ================================================= ===================== ===========================
``fault``   meaning                                           HTTP                  ingest
=========== ================================================= ===================== ===========================
CALLER      the input is unusable; the same input fails again 4xx                   dead-letter the message
TRANSIENT   retrying later succeeds without anyone acting     503 (409 ``Conflict``) pause, retry the batch
CAPACITY    the store is full; succeeds once space is freed   503                   pause, retry the batch
OPERATOR    the store is misconfigured; nothing will succeed  503                   stop with a fatal log
DATA        stored data of one segment is damaged            500 ``corrupt_data``  dead-letter that segment's
                                                                                    messages, others go on
=========== ================================================= ===================== ===========================

Third-party exceptions (sqlite3, aerospike) are translated where they enter,
with ``raise ... from exc``; none of their types leaves ``segments.storage``.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Fault(StrEnum):
    """Whose problem an error is, and so what handling it needs (see the module docstring)."""

    CALLER = "caller"
    TRANSIENT = "transient"
    CAPACITY = "capacity"
    OPERATOR = "operator"
    DATA = "data"

    @property
    def retryable(self) -> bool:
        """Retrying the same request later may succeed."""
        return self in (Fault.TRANSIENT, Fault.CAPACITY)


class SegmentsError(Exception):
    """Root of every error raised by the segments library."""

    code = "segments_error"
    #: an error of no more specific class is treated as a bug of the library
    fault = Fault.OPERATOR


class InvalidInput(SegmentsError):
    """The caller supplied input that cannot be used."""

    code = "invalid_input"
    fault = Fault.CALLER


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


class AudienceCycle(ExpressionError):
    """An audience definition would use itself, directly or through other audiences."""

    code = "audience_cycle"

    def __init__(self, cycle: list[str]) -> None:
        super().__init__("audience definitions would form a cycle: " + " -> ".join(cycle))
        self.cycle = cycle


class InvalidSegmentName(InvalidInput):
    """A segment name is not 1-128 characters of ``[A-Za-z0-9_.:]``."""

    code = "invalid_segment_name"


class InvalidUserId(InvalidInput):
    """A user ID is not an integer in ``[0, 2**32)``."""

    code = "invalid_user_id"


class InvalidUserKey(InvalidInput):
    """A string user key is not 1-256 bytes of UTF-8 without control characters (category Cc)."""

    code = "invalid_user_key"


class BadTime(InvalidInput):
    """A write's ``at`` (or a window) cannot be used: outside the retention, in the future, or not windowed."""

    code = "bad_time"


class InvalidBitmap(InvalidInput):
    """Bytes supplied as a portable roaring bitmap failed validation."""

    code = "invalid_bitmap"


class SegmentNotFound(SegmentsError):
    """One or more segments do not exist."""

    code = "segment_not_found"
    fault = Fault.CALLER

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


class NameTaken(SegmentsError):
    """Segments and audiences share one namespace: the name already means the other kind."""

    code = "name_taken"
    fault = Fault.CALLER


class InUse(SegmentsError):
    """Audiences use the segment or audience to be deleted (``dependents`` names them)."""

    code = "in_use"
    fault = Fault.CALLER

    def __init__(self, name: str, dependents: Iterable[str]) -> None:
        self.name = name
        self.dependents = sorted(set(dependents))
        super().__init__(
            f"{name!r} is used by the audiences {', '.join(map(repr, self.dependents))}: "
            "delete or redefine them first, or delete with cascade"
        )


class Conflict(SegmentsError):
    """A conditional write lost to a concurrent writer (and retries ran out)."""

    code = "conflict"
    fault = Fault.TRANSIENT


class StorageError(SegmentsError):
    """The store failed (an unclassified failure counts as temporary)."""

    code = "storage_error"
    fault = Fault.TRANSIENT


class StorageUnavailable(StorageError):
    """The store cannot be reached; retrying later may succeed."""

    code = "storage_unavailable"
    fault = Fault.TRANSIENT


class StorageTimeout(StorageUnavailable):
    """The store did not answer in time."""

    code = "storage_timeout"


class StorageFull(StorageUnavailable):
    """The store refuses writes for lack of space (stop-writes, disk full) until the operator acts."""

    code = "storage_full"
    fault = Fault.CAPACITY


class StorageMisconfigured(StorageError):
    """The store is set up wrongly for this service (namespace, credentials, a refused setting)."""

    code = "storage_misconfigured"
    fault = Fault.OPERATOR


class RecordTooLarge(StorageError):
    """The store refused a record larger than its configured limit (the input is too large)."""

    code = "record_too_large"
    fault = Fault.CALLER


class CorruptSegment(StorageError):
    """A segment's stored records are damaged or missing: re-reading will not help.

    ``segment`` names it when known; ``admin verify --fix`` repairs it.
    """

    code = "corrupt_data"
    fault = Fault.DATA

    def __init__(self, message: str, segment: str | None = None) -> None:
        super().__init__(message)
        self.segment = segment
