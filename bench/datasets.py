"""Seeded workloads: a universe of users and segments of several shapes, cached on disk.

Every segment is drawn with numpy from its own generator seeded with
``(seed, users, segment index)``, so one segment's data does not depend on
which others exist, and the same ``(seed, users)`` always gives the same
bitmaps. Shapes:

* ``s1``, ``s10``, ``s30``, ``s60``: uniformly random members at 1 %, 10 %, 30 %
  and 60 % density.
* ``clustered``: a few contiguous ID ranges, about 10 % of the universe (the
  newest 4 % of IDs plus older blocks: what recent sign-ups and imported
  cohorts look like).
* ``skewed``: the density varies by shard, log-normally (median 3 %, a few
  shards almost full), so the segment mixes array and bitmap containers.
* ``all``: the universe, every ID in ``[0, users)``.

A data set is written once into a SQLite store with ``Segments.replace`` and
kept under ``bench/.cache/<seed>-<users>/`` with the portable serialization of
every bitmap, so a repeated run only deserializes.
"""

from __future__ import annotations

import array
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyroaring import BitMap

import segments

from .processes import Log

CACHE_ROOT = Path(__file__).resolve().parent / ".cache"
#: bump when a generator changes, so stale caches are rebuilt
FORMAT = 3

UNIVERSE = "all"
SHAPES: tuple[str, ...] = ("s1", "s10", "s30", "s60", "clustered", "skewed", UNIVERSE)
DENSITIES = {"s1": 0.01, "s10": 0.10, "s30": 0.30, "s60": 0.60}


def bitmap_from_array(ids: np.ndarray) -> BitMap:
    """A BitMap from a numpy array of IDs (through ``array('I')``, ~10x faster than numpy directly)."""
    return BitMap(array.array("I", np.ascontiguousarray(ids, dtype=np.uint32).tobytes()))


def array_from_bitmap(bitmap: BitMap) -> np.ndarray:
    """The sorted members as a numpy ``uint32`` array."""
    return np.frombuffer(bitmap.to_array(), dtype=np.uint32)


def _rng(seed: int, users: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, users, index])


def _uniform(users: int, density: float, rng: np.random.Generator) -> np.ndarray:
    chunks = []
    step = 1 << 24  # bounded temporaries: 64 MiB of float32 at a time
    for start in range(0, users, step):
        stop = min(users, start + step)
        chunks.append(np.flatnonzero(rng.random(stop - start, dtype=np.float32) < density) + start)
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)


def _clustered(users: int, rng: np.random.Generator) -> np.ndarray:
    # The newest 4 % of IDs plus four older blocks of 1.5 % each, at random places.
    tail = int(users * 0.04)
    block = max(1, int(users * 0.015))
    starts = np.sort(rng.integers(0, max(1, users - tail - block), size=4))
    ranges = [np.arange(s, s + block) for s in starts.tolist()]
    ranges.append(np.arange(users - tail, users))
    return np.unique(np.concatenate(ranges))


def _skewed(users: int, rng: np.random.Generator) -> np.ndarray:
    shards = (users + (1 << 16) - 1) >> 16
    density = np.minimum(1.0, np.exp(rng.normal(np.log(0.03), 1.5, size=shards))).astype(np.float32)
    chunks = []
    step = 1 << 24
    for start in range(0, users, step):
        stop = min(users, start + step)
        per_id = density[np.arange(start, stop) >> 16]
        chunks.append(np.flatnonzero(rng.random(stop - start, dtype=np.float32) < per_id) + start)
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)


def generate(users: int, seed: int, name: str) -> np.ndarray:
    """The members of one shape (see the module docstring) as a sorted numpy array."""
    index = SHAPES.index(name)
    rng = _rng(seed, users, index)
    if name in DENSITIES:
        return _uniform(users, DENSITIES[name], rng)
    if name == "clustered":
        return _clustered(users, rng)
    if name == "skewed":
        return _skewed(users, rng)
    return np.arange(users, dtype=np.int64)


def membership_segments(users: int, seed: int, count: int) -> dict[str, np.ndarray]:
    """``count`` segments ``m000``... with log-uniform densities from 0.01 % to 10 %.

    Members are drawn with replacement and deduplicated: cheap at any density.
    """
    out = {}
    for i in range(count):
        rng = _rng(seed, users, 1000 + i)
        density = float(10 ** rng.uniform(-4, -1))
        size = max(1, int(users * density))
        out[f"m{i:03d}"] = np.unique(rng.integers(0, users, size=size))
    return out


@dataclass
class Dataset:
    """One generated data set: bitmaps in memory plus the SQLite store holding them."""

    users: int
    seed: int
    bitmaps: dict[str, BitMap]
    store_url: str
    directory: Path
    build_seconds: float
    from_cache: bool

    def array(self, name: str) -> np.ndarray:
        return array_from_bitmap(self.bitmaps[name])

    def serialized_bytes(self, name: str) -> int:
        return len(self.bitmaps[name].serialize())


def _directory(users: int, seed: int, kind: str) -> Path:
    return CACHE_ROOT / f"{kind}-f{FORMAT}-seed{seed}-users{users}"


def load(
    users: int,
    seed: int,
    *,
    kind: str = "shapes",
    membership_count: int = 0,
    log: Log = print,
) -> Dataset:
    """The data set for ``(users, seed)``: from ``bench/.cache`` when present, else built and cached.

    ``kind="shapes"``: the shapes of the module docstring. ``kind="membership"``:
    ``membership_count`` segments of ``membership_segments`` plus the universe.
    """
    directory = _directory(users, seed, f"{kind}{membership_count or ''}")
    manifest_path = directory / "manifest.json"
    db = directory / "segments.db"
    url = f"sqlite:///{db}"
    if manifest_path.exists() and db.exists():
        started = time.perf_counter()
        manifest = json.loads(manifest_path.read_text())
        bitmaps = {}
        for name, card in manifest["cardinalities"].items():
            bitmap = BitMap.deserialize((directory / f"{name}.roaring").read_bytes())
            if len(bitmap) != card:
                break
            bitmaps[name] = bitmap
        else:
            with segments.connect(url) as check:
                infos = {i.name: i.cardinality for i in check.infos()}
            if infos == manifest["cardinalities"]:
                return Dataset(users, seed, bitmaps, url, directory, time.perf_counter() - started, True)
        log(f"  cache {directory.name} is inconsistent: rebuilding")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    started = time.perf_counter()
    if kind == "shapes":
        arrays = {name: generate(users, seed, name) for name in SHAPES}
    else:
        arrays = membership_segments(users, seed, membership_count)
        arrays[UNIVERSE] = np.arange(users, dtype=np.int64)
    bitmaps = {name: bitmap_from_array(ids) for name, ids in arrays.items()}
    del arrays
    for bitmap in bitmaps.values():
        bitmap.run_optimize()
        bitmap.shrink_to_fit()
    with segments.connect(url) as store:
        for name, bitmap in bitmaps.items():
            store.replace(name, bitmap)
    for name, bitmap in bitmaps.items():
        (directory / f"{name}.roaring").write_bytes(bitmap.serialize())
    manifest = {"users": users, "seed": seed, "cardinalities": {n: len(b) for n, b in bitmaps.items()}}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    seconds = time.perf_counter() - started
    log(f"  built {kind} data set: {users:,} users, {len(bitmaps)} segments in {seconds:.1f} s")
    return Dataset(users, seed, bitmaps, url, directory, seconds, False)
