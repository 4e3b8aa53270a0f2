"""Small statistics: percentiles of one run, median [min–max] over repetitions."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100), interpolating between the closest ranks; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class Spread:
    """Median, min and max of one measure over the repetitions (NaN-free values only)."""

    median: float
    lo: float
    hi: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of ``values``, ignoring NaN (a failed repetition)."""
        ok = [v for v in values if not math.isnan(v)]
        if not ok:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(statistics.median(ok), min(ok), max(ok), len(ok))

    def fmt(self, digits: int = 0, unit: str = "") -> str:
        """``median [min–max]unit``, or ``n/a`` when no repetition succeeded."""
        if self.runs == 0:
            return "n/a"
        m, lo, hi = (num(v, digits) for v in (self.median, self.lo, self.hi))
        return f"{m}{unit}" if self.runs == 1 else f"{m} [{lo}–{hi}]{unit}"


def num(value: float, digits: int = 0, unit: str = "") -> str:
    """A number with thousands separators, ``digits`` decimals and ``unit``; ``n/a`` for NaN."""
    if math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when either is missing or ``b`` is zero."""
    if math.isnan(a) or math.isnan(b) or b == 0:
        return math.nan
    return a / b
