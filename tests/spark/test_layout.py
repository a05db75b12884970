"""ingest.spark is an adapter of the producer side: nothing in segments, api or the rest of ingest imports it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imports(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved against its package."""
    package = ".".join(path.relative_to(ROOT).parent.parts)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_only_ingest_spark_imports_spark() -> None:
    files = [p for package in ("segments", "api", "ingest") for p in sorted((ROOT / package).rglob("*.py"))
             if p != ROOT / "ingest" / "spark.py"]
    assert len(files) > 20
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imports(p) if m.split(".")[0] in ("pyspark", "pyarrow")
                                                  or m.startswith("ingest.spark"))
                 for p in files}
    assert {path: found for path, found in offenders.items() if found} == {}


def test_ingest_spark_imports_only_the_core_and_ingest() -> None:
    found = {m.split(".")[0] for m in imports(ROOT / "ingest" / "spark.py")}
    assert found - {"__future__", "logging", "operator", "threading", "time", "collections", "contextlib", "dataclasses",
                    "functools", "typing", "pyarrow", "pyspark", "numpy", "pyroaring", "segments",
                    "ingest"} == set()
