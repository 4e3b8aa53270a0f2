"""A target of the issue and how it is judged: the pieces every part of the report uses."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.results import SystemRuns, median_or_nan


@dataclass(frozen=True)
class Target:
    """One target of the issue: what it asks, what was measured, whether it holds."""

    name: str
    wanted: str
    measured: str
    met: bool | None

    def row(self) -> str:
        """A table row; ``met`` None means there is nothing to compare (a peer did not run)."""
        verdict = "n/a" if self.met is None else ("**met**" if self.met else "not met")
        return f"| {self.name} | {self.wanted} | {self.measured} | {verdict} |"


def med(runs: SystemRuns | None, scenario: str, measure: str) -> float:
    """The median of one measure of one scenario of a system; NaN if it did not run."""
    return math.nan if runs is None else median_or_nan(runs.spread(scenario, measure))


def check(value: float, ok: bool) -> bool | None:
    """The verdict ``ok``, or None (nothing to compare) when ``value`` is missing."""
    return None if math.isnan(value) else ok
