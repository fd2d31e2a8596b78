"""Timing helpers: a summary statistic, repeated calls, and A/B interleaving.

Every comparison in the suite is a ratio of two measurements taken in the same process,
alternating A and B (ABBA order) so that drift of a shared, noisy machine hits both sides.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Stat:
    """Median, min and max of repeated measurements."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """The statistic of ``values`` (at least one)."""
        if not values:
            raise ValueError("no measurements")
        return cls(
            float(statistics.median(values)), float(min(values)), float(max(values)), len(values)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def call_times(fn: Callable[[], object], calls: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``calls`` calls of ``fn``, after ``warmup`` untimed calls.

    The warm-up also absorbs the cost the previous side left behind (thread pools of another
    library still spinning, caches filled with its data).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def interleave(
    a: Callable[[], float], b: Callable[[], float], rounds: int
) -> tuple[list[float], list[float]]:
    """Run ``a`` and ``b`` alternately, ``rounds`` times each, in ABBA order.

    Each callable measures itself and returns one figure (seconds, or any quantity).
    Returns the figures of ``a`` and of ``b``, pair ``i`` measured next to each other.
    """
    got_a: list[float] = []
    got_b: list[float] = []
    for i in range(rounds):
        if i % 2 == 0:
            got_a.append(a())
            got_b.append(b())
        else:
            got_b.append(b())
            got_a.append(a())
    return got_a, got_b


def ratios(top: Sequence[float], bottom: Sequence[float]) -> list[float]:
    """Pairwise ``top[i] / bottom[i]``."""
    return [t / u for t, u in zip(top, bottom, strict=True)]
