"""Real-time audience segmentation: sharded roaring bitmaps and set algebra.

>>> import segments
>>> s = segments.connect("memory://")
>>> s.replace("all", range(10)); s.replace("a", [1, 2, 3]); s.replace("b", [3, 4])  # doctest: +ELLIPSIS
SegmentInfo(...)
>>> s.reach("a | b"), s.reach("~a"), sorted(s.evaluate("a - b"))
(4, 7, [1, 2])
"""

from __future__ import annotations

from .audiences import Audience, Definition
from .bitmap import MAX_USER_ID, SHARD_BITS
from .catalog import SegmentInfo
from .client import DEFAULT_UNIVERSE, Overlap, Segments, connect
from .engine import InsightRow, Insights, ReachResult
from .errors import (
    AudienceCycle,
    BadTime,
    Conflict,
    CorruptSegment,
    ExpressionError,
    ExpressionSyntaxError,
    ExpressionTooComplex,
    Fault,
    InUse,
    InvalidBitmap,
    InvalidInput,
    InvalidSegmentName,
    InvalidUserId,
    InvalidUserKey,
    NameTaken,
    RecordTooLarge,
    SegmentNotFound,
    SegmentsError,
    StorageError,
    StorageFull,
    StorageMisconfigured,
    StorageTimeout,
    StorageUnavailable,
    UniverseNotFound,
)
from .expressions import Expr, parse, to_json, to_text
from .history import Point
from .keys import KeyTable, KeyTableReport, check_user_key
from .staging import PartOutcome, SegmentStaging, StagingStore
from .storage import Store, open_store
from .windows import WindowConfig

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_UNIVERSE",
    "MAX_USER_ID",
    "SHARD_BITS",
    "Audience",
    "AudienceCycle",
    "BadTime",
    "Conflict",
    "CorruptSegment",
    "Definition",
    "Expr",
    "ExpressionError",
    "ExpressionSyntaxError",
    "ExpressionTooComplex",
    "Fault",
    "InUse",
    "InsightRow",
    "Insights",
    "InvalidBitmap",
    "InvalidInput",
    "InvalidSegmentName",
    "InvalidUserId",
    "InvalidUserKey",
    "KeyTable",
    "KeyTableReport",
    "NameTaken",
    "Overlap",
    "PartOutcome",
    "Point",
    "ReachResult",
    "RecordTooLarge",
    "SegmentInfo",
    "SegmentNotFound",
    "SegmentStaging",
    "Segments",
    "SegmentsError",
    "StagingStore",
    "StorageError",
    "StorageFull",
    "StorageMisconfigured",
    "StorageTimeout",
    "StorageUnavailable",
    "Store",
    "UniverseNotFound",
    "WindowConfig",
    "check_user_key",
    "connect",
    "open_store",
    "parse",
    "to_json",
    "to_text",
    "__version__",
]
