"""Repeated, interleaved measurements: medians, p99s and side-by-side ratios.

The machines these run on are shared and noisy, so methods are never timed
one after the other in blocks: every round runs each method once, in a
rotating order, and a comparison is the ratio of two medians taken over the
same rounds. Every call's answer is checked against the expected one.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np


class WrongAnswer(AssertionError):
    """A method disagreed with the reference answer."""


@dataclass
class Timing:
    """Samples of one method, in seconds."""

    samples: list[float] = field(default_factory=list)
    answer: int | None = None

    @property
    def median(self) -> float:
        return float(np.median(self.samples)) if self.samples else float("nan")

    @property
    def p99(self) -> float:
        return float(np.percentile(self.samples, 99)) if self.samples else float("nan")

    @property
    def best(self) -> float:
        return min(self.samples) if self.samples else float("nan")

    def as_dict(self) -> dict[str, object]:
        return {
            "median_s": self.median,
            "p99_s": self.p99,
            "best_s": self.best,
            "n": len(self.samples),
            "answer": self.answer,
        }


Method = Callable[[], int]


def interleaved(
    methods: Mapping[str, Method],
    rounds: int,
    *,
    expect: int | None = None,
    warmup: int = 1,
    budget_s: float | None = None,
    slow_rounds: Mapping[str, int] | None = None,
    check: bool = True,
) -> dict[str, Timing]:
    """Time every method ``rounds`` times, one call per method per round, rotating the order.

    ``expect`` is the reference answer (else the first method's answer is).
    ``slow_rounds`` caps the rounds of slow methods (they run in the first
    rounds only); ``budget_s`` stops early once every method has at least
    five samples and the time is spent. Raises ``WrongAnswer`` on any
    disagreement (``check=False``: methods return unrelated values, e.g. timing parts of one query).
    """
    names = list(methods)
    out = {name: Timing() for name in names}
    caps = {name: rounds for name in names}
    for name, cap in (slow_rounds or {}).items():
        if name in caps:
            caps[name] = max(1, min(rounds, cap))
    for name in names:
        for _ in range(warmup):
            answer = methods[name]()
            if check:
                _check(name, answer, expect, out)
                if expect is None:
                    expect = answer
            else:
                out[name].answer = answer
    started = time.perf_counter()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                if len(out[name].samples) >= caps[name]:
                    continue
                t0 = time.perf_counter()
                answer = methods[name]()
                out[name].samples.append(time.perf_counter() - t0)
                if check:
                    _check(name, answer, expect, out)
            if r % 16 == 15:
                gc.collect()
            if (
                budget_s is not None
                and time.perf_counter() - started > budget_s
                and all(len(t.samples) >= min(5, caps[n]) for n, t in out.items())
            ):
                break
    finally:
        if gc_was:
            gc.enable()
    return out


def _check(name: str, answer: int, expect: int | None, out: dict[str, Timing]) -> None:
    if not isinstance(answer, int):
        raise WrongAnswer(f"{name} returned {answer!r}, not an int")
    if expect is not None and answer != expect:
        raise WrongAnswer(f"{name} answered {answer}, expected {expect}")
    out[name].answer = answer
