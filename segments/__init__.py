"""Real-time audience segmentation: sharded roaring bitmaps and set algebra.

>>> import segments
>>> s = segments.connect("memory://")
>>> s.replace("all", range(10)); s.replace("a", [1, 2, 3]); s.replace("b", [3, 4])  # doctest: +ELLIPSIS
SegmentInfo(...)
>>> s.reach("a | b"), s.reach("~a"), sorted(s.evaluate("a - b"))
(4, 7, [1, 2])
"""

from __future__ import annotations

from .bitmap import MAX_USER_ID, SHARD_BITS
from .catalog import SegmentInfo
from .client import DEFAULT_UNIVERSE, Overlap, Segments, connect
from .engine import ReachResult
from .errors import (
    Conflict,
    CorruptSegment,
    ExpressionError,
    ExpressionSyntaxError,
    ExpressionTooComplex,
    InvalidBitmap,
    InvalidInput,
    InvalidSegmentName,
    InvalidUserId,
    InvalidUserKey,
    RecordTooLarge,
    SegmentNotFound,
    SegmentsError,
    StorageError,
    StorageTimeout,
    StorageUnavailable,
    UniverseNotFound,
)
from .expressions import Expr, parse, to_json, to_text
from .keys import KeyTable, KeyTableReport, check_user_key
from .staging import PartOutcome, SegmentStaging, StagingStore
from .storage import Store, open_store

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_UNIVERSE",
    "MAX_USER_ID",
    "SHARD_BITS",
    "Conflict",
    "CorruptSegment",
    "Expr",
    "ExpressionError",
    "ExpressionSyntaxError",
    "ExpressionTooComplex",
    "InvalidBitmap",
    "InvalidInput",
    "InvalidSegmentName",
    "InvalidUserId",
    "InvalidUserKey",
    "KeyTable",
    "KeyTableReport",
    "Overlap",
    "PartOutcome",
    "ReachResult",
    "RecordTooLarge",
    "SegmentInfo",
    "SegmentNotFound",
    "SegmentStaging",
    "Segments",
    "SegmentsError",
    "StagingStore",
    "StorageError",
    "StorageTimeout",
    "StorageUnavailable",
    "Store",
    "UniverseNotFound",
    "__version__",
    "check_user_key",
    "connect",
    "open_store",
    "parse",
    "to_json",
    "to_text",
]
