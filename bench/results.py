"""What one benchmark run measured, repetition by repetition."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.ceilings import ClaimRates, WakeTimes
from bench.claims import PerseidClaims, Scale
from bench.profile import CpuShare, Profile
from bench.scenarios import Idle, Latency, Throughput
from bench.stats import Spread

SCENARIOS = ("noop", "slow", "latency", "idle", "noop_write", "slow_write")


@dataclass
class SystemRuns:
    """Every repetition of every scenario of one system."""

    name: str
    runs: str
    isolates: str
    version: str = ""
    noop: list[Throughput] = field(default_factory=list)
    slow: list[Throughput] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    idle: list[Idle] = field(default_factory=list)
    noop_write: list[Throughput] = field(default_factory=list)
    """No-op jobs that write one record to Redis over their own client."""
    slow_write: list[Throughput] = field(default_factory=list)
    """50 ms jobs that write one record to Redis over their own client."""

    def spread(self, scenario: str, measure: str) -> Spread:
        """Median [min–max] of one measure of one scenario over the repetitions."""
        runs: list[Any] = getattr(self, scenario)
        return Spread.of([float(getattr(r, measure)) for r in runs])

    def errors(self) -> list[str]:
        """The failure of each failed repetition."""
        found = []
        for scenario in SCENARIOS:
            found += [f"{scenario}: {r.error}" for r in getattr(self, scenario) if r.error]
        return found


@dataclass
class Results:
    """One run of ``python -m bench``."""

    machine: dict[str, str]
    config: dict[str, Any]
    systems: list[SystemRuns] = field(default_factory=list)
    fork_one: list[float] = field(default_factory=list)
    fork_two: list[float] = field(default_factory=list)
    fork_warm: list[float] = field(default_factory=list)
    raw_claims: list[ClaimRates] = field(default_factory=list)
    wake: list[WakeTimes] = field(default_factory=list)
    claims: list[PerseidClaims] = field(default_factory=list)
    scale_small: list[Scale] = field(default_factory=list)
    scale_big: list[Scale] = field(default_factory=list)
    profile: Profile | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    """Systems asked for that could not run, and why (reused mode before its decorator exists)."""

    def system(self, name: str) -> SystemRuns | None:
        """The runs of the system called ``name``, if it ran."""
        return next((s for s in self.systems if s.name == name), None)

    def save(self, path: Path) -> None:
        """Write everything as JSON (NaN for what failed)."""
        path.write_text(json.dumps(asdict(self), indent=1, default=str))

    @classmethod
    def load(cls, path: Path) -> Results:
        """Read back what :meth:`save` wrote."""
        d = json.loads(path.read_text())
        profile = d.get("profile")
        return cls(
            machine=d["machine"],
            config=d["config"],
            systems=[_system_runs(s) for s in d["systems"]],
            fork_one=d["fork_one"],
            fork_two=d["fork_two"],
            fork_warm=d["fork_warm"],
            raw_claims=[ClaimRates(**c) for c in d["raw_claims"]],
            wake=[WakeTimes(**w) for w in d.get("wake", [])],  # absent in older files
            claims=[PerseidClaims(ClaimRates(**c["rates"]), c["batch64"]) for c in d["claims"]],
            scale_small=[Scale(**c) for c in d["scale_small"]],
            scale_big=[Scale(**c) for c in d["scale_big"]],
            skipped=d.get("skipped", {}),
            profile=None
            if profile is None
            else Profile(
                CpuShare(**profile["cpu"]),
                profile["samples"],
                {k: [(fn, n) for fn, n in v] for k, v in profile["top_self"].items()},
                profile["raw_path"],
            ),
        )


def _system_runs(d: dict[str, Any]) -> SystemRuns:
    return SystemRuns(
        d["name"],
        d["runs"],
        d["isolates"],
        d.get("version", ""),
        noop=[Throughput(**r) for r in d["noop"]],
        slow=[Throughput(**r) for r in d["slow"]],
        latency=[Latency(**r) for r in d["latency"]],
        idle=[Idle(**r) for r in d["idle"]],
        noop_write=[Throughput(**r) for r in d.get("noop_write", [])],  # absent in older files
        slow_write=[Throughput(**r) for r in d.get("slow_write", [])],
    )


def spread_of(values: list[Any], measure: str) -> Spread:
    """Median [min–max] of ``measure`` over a list of dataclass repetitions."""
    return Spread.of([float(getattr(v, measure)) for v in values])


def nested(values: list[Any], first: str, second: str) -> Spread:
    """Median [min–max] of ``value.first.second`` over repetitions."""
    return Spread.of([float(getattr(getattr(v, first), second)) for v in values])


def median_or_nan(spread: Spread) -> float:
    """The median, NaN when nothing ran."""
    return spread.median if spread.runs else math.nan
