"""Measure proposed engine changes without touching ``segments/``.

Each file in ``bench/patches/`` is a unified diff against ``segments/engine.py``;
they apply in name order, each on top of the previous ones. ``variants()``
applies them to a temporary copy of the current ``segments/engine.py`` (with
the ``patch`` tool) and imports every cumulative step as its own module
inside the ``segments`` package, so the code measured is exactly the code the
patch proposes. ``install(client, module)`` points a ``Segments`` client at a
variant's ``Engine``.

When the lead has applied a patch, it no longer applies (or applies as a
no-op): that step is reported as such and measured as the current engine.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import segments
import segments.engine

PATCH_DIR = Path(__file__).resolve().parent / "patches"
ENGINE = Path(segments.engine.__file__)


@dataclass
class Variant:
    key: str  #: patch file stem, e.g. "1-bitmask-planner"
    title: str  #: first line of the patch's description
    module: ModuleType | None
    note: str = ""


def _title(patch: Path) -> str:
    for line in patch.read_text().splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return patch.stem


def variants() -> list[Variant]:
    """Every cumulative step of ``bench/patches`` as an importable engine module."""
    patches = sorted(PATCH_DIR.glob("*.patch"))
    if not patches:
        return []
    if shutil.which("patch") is None:
        return [Variant(p.stem, _title(p), None, "the `patch` tool is missing") for p in patches]
    work = Path(tempfile.mkdtemp(prefix="bench-proposals-"))
    (work / "segments").mkdir()
    target = work / "segments" / "engine.py"
    shutil.copy(ENGINE, target)
    out: list[Variant] = []
    broken = False
    for index, patch in enumerate(patches):
        if broken:
            out.append(Variant(patch.stem, _title(patch), None, "an earlier patch did not apply"))
            continue
        result = subprocess.run(
            ["patch", "--forward", "--batch", "-p1", "-d", str(work), "-i", str(patch)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            broken = True
            applied = "Reversed (or previously applied) patch detected" in result.stdout
            note = (
                "already applied to segments/engine.py" if applied else "does not apply to the current engine"
            )
            out.append(Variant(patch.stem, _title(patch), None, note))
            continue
        name = f"segments._bench_engine_{index}"
        step = work / "segments" / f"engine_after_{index + 1}.py"
        shutil.copy(target, step)
        spec = importlib.util.spec_from_file_location(name, step)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        # Writers and the client catch the real module's ``_Moved``: share it.
        module._Moved = segments.engine._Moved  # type: ignore[attr-defined]
        out.append(Variant(patch.stem, _title(patch), module))
    return out


def install(client: segments.Segments, module: ModuleType) -> None:
    """Make ``client`` answer queries with ``module.Engine`` (same store, same cache)."""
    engine = module.Engine(client.store, client.sets, client.cache, client.universe)
    client.engine = engine
    client.writer.engine = engine


def connect_variant(url: str, module: ModuleType | None, **kwargs: object) -> segments.Segments:
    client = segments.connect(url, **kwargs)  # type: ignore[arg-type]
    if module is not None:
        install(client, module)
    return client
