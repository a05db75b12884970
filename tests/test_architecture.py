"""Dependency direction: ``segments`` imports neither ``api`` nor ``ingest``, nor HTTP or Kafka libraries."""

from __future__ import annotations

import ast
from pathlib import Path

import segments

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"api", "ingest", "fastapi", "starlette", "uvicorn", "confluent_kafka", "httpx", "bench", "tests"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_core_imports_no_adapter() -> None:
    files = sorted((ROOT / "segments").rglob("*.py"))
    assert files
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_public_surface_is_exported() -> None:
    for name in segments.__all__:
        assert hasattr(segments, name), name
    for name in ["connect", "Segments", "SegmentsError", "SegmentNotFound", "ExpressionSyntaxError",
                 "StagingStore", "SegmentStaging", "PartOutcome"]:
        assert name in segments.__all__


def test_every_error_class_is_exported_and_states_its_fault() -> None:
    import inspect

    from segments import errors

    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.SegmentsError)]
    assert len(classes) > 15
    for cls in classes:
        assert cls.__name__ in segments.__all__, cls
        assert isinstance(cls.fault, errors.Fault), cls


def test_every_error_is_a_segments_error_with_a_code() -> None:
    errors = [getattr(segments, n) for n in segments.__all__ if n.endswith(("Error", "NotFound", "Conflict"))]
    errors += [segments.InvalidUserId, segments.InvalidSegmentName, segments.InvalidBitmap, segments.CorruptSegment]
    for cls in errors:
        assert issubclass(cls, segments.SegmentsError), cls
        assert isinstance(cls.code, str) and cls.code
