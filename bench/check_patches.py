"""``python -m bench.check_patches``: the proposed engines give exact answers on multi-shard data.

For every cumulative step of ``bench/patches`` (and the committed engine),
random expressions over random segments spread across 40 shards (full
shards, ranges, sparse and dense random shards) are answered by a client
with a warm whole-segment cache, by a fresh client whose cache was made
partial by narrower queries first, and again after updates; every answer
(``reach`` and ``evaluate``) is compared with naive pyroaring. Region
clipping and partial cache entries only differ from whole evaluation on
such data, which the core's property tests (small ID ranges) rarely build.
"""

from __future__ import annotations

import random
import sys
import uuid

import numpy as np
from pyroaring import BitMap

from segments.expressions import And, Diff, Expr, Not, Or, Ref, Xor

from .expressions import naive_count, naive_eval
from .proposals import connect_variant, variants

NAMES = ("a", "b", "c", "d", "e")
SHARDS = 40


def random_segments(rng: random.Random, nrng: np.random.Generator) -> dict[str, BitMap]:
    out: dict[str, BitMap] = {}
    for name in NAMES:
        bitmap = BitMap()
        for shard in range(SHARDS):
            roll = rng.random()
            if roll < 0.4:
                continue
            base = shard << 16
            if roll < 0.6:
                bitmap.add_range(base + rng.randrange(1000), base + 65536 - rng.randrange(1000))
            else:
                size = rng.choice([10, 2000, 20000])
                bitmap.update((base + nrng.integers(0, 65536, size=size)).tolist())
        out[name] = bitmap
    universe = BitMap()
    universe.add_range(0, SHARDS << 16)
    out["all"] = universe
    return out


def random_expr(rng: random.Random, depth: int = 0) -> Expr:
    if depth > 3 or rng.random() < 0.3:
        return Ref(rng.choice(NAMES))
    if rng.random() < 0.15:
        return Not(random_expr(rng, depth + 1))
    operands = tuple(random_expr(rng, depth + 1) for _ in range(rng.choice([2, 2, 3])))
    kind = rng.choice("&|-^&-")
    if kind == "&":
        return And(operands)
    if kind == "|":
        return Or(operands)
    if kind == "-":
        return Diff(operands)
    return Xor(operands)


def check(module: object, trials: int, seed: int) -> int:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    checked = 0
    for _ in range(trials):
        data = random_segments(rng, nrng)
        url = f"memory://check-{uuid.uuid4().hex}"
        main = connect_variant(url, module)  # type: ignore[arg-type]
        for name, bitmap in data.items():
            main.replace(name, bitmap)
        main.overlap(list(data))
        for _ in range(25):
            expr = random_expr(rng)
            if isinstance(expr, Ref):
                continue
            want = naive_count(expr, data)
            _expect(main.reach(expr), want, expr, "warm")
            _expect(main.evaluate(expr), naive_eval(expr, data), expr, "evaluate")
            partial = connect_variant(url, module)  # type: ignore[arg-type]
            for _ in range(3):
                narrow = random_expr(rng)
                if not isinstance(narrow, Ref):
                    _expect(partial.reach(narrow), naive_count(narrow, data), narrow, "narrow")
            _expect(partial.reach(expr), want, expr, "partial cache")
            checked += 1
        for name in NAMES[:2]:
            extra = BitMap(nrng.integers(0, SHARDS << 16, size=500).tolist())
            main.add(name, extra)
            data[name] |= extra
        for _ in range(10):
            expr = random_expr(rng)
            if not isinstance(expr, Ref):
                _expect(main.reach(expr), naive_count(expr, data), expr, "after update")
                checked += 1
    return checked


def _expect(got: object, want: object, expr: Expr, where: str) -> None:
    if got != want:
        raise AssertionError(f"{where}: {expr} gave {got!r}, expected {want!r}")


def main(argv: list[str]) -> int:
    trials = int(argv[0]) if argv else 20
    steps = [("committed engine", None)] + [(v.key, v.module) for v in variants() if v.module is not None]
    for label, module in steps:
        count = check(module, trials, seed=7)
        print(f"{label}: {count} expressions exact")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
