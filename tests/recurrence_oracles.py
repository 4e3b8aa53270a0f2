"""Independent oracles for the recurrence tests: croniter, brute-force scans, the DST calendar.

croniter is a second cron library written without reference to cronsim; where it
and perseid_jobs.core.recurrence disagree, the test must name the policy of
docs/recurrence.md that accounts for the difference (a :class:`Policy`), or fail.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from croniter import croniter

DOC = (Path(__file__).resolve().parents[1] / "docs" / "recurrence.md").read_text()

# Zones with DST rules: a 30-minute shift (Lord Howe), a +12:45/+13:45 zone (Chatham),
# the southern hemisphere (Sydney, Auckland, Santiago), changes at midnight (Santiago,
# Havana, Cairo), at 01:00 UTC (London, Paris) and at local 02:00 (New York).
ZONES = [
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Australia/Sydney",
    "Pacific/Auckland",
    "America/Santiago",
    "America/Havana",
    "Africa/Cairo",
    "Europe/London",
    "Europe/Paris",
    "America/New_York",
]
YEARS = range(2025, 2028)


def transitions(zone: str) -> list[int]:
    """Epoch seconds at which the zone's UTC offset changes during YEARS."""
    tz = ZoneInfo(zone)

    def offset(s: int) -> timedelta | None:
        return datetime.fromtimestamp(s, tz=tz).utcoffset()

    out = []
    step = 6 * 3600  # changes in these zones are months apart
    s = int(datetime(YEARS.start, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(YEARS.stop, 1, 1, tzinfo=UTC).timestamp())
    while s < end:
        if offset(s) != offset(s + step):
            lo, hi = s, s + step
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if offset(mid) == offset(lo) else (lo, mid)
            out.append(hi)
        s += step
    return out


def random_expression(rng: random.Random) -> str:
    """A 5-field expression in the syntax both libraries share.

    Never a degenerate range such as ``8-8``: croniter 7.0 reads it as ``*``
    (``27 8-8 * * *`` runs at 12:27), a parsing defect unrelated to time zones.
    """

    def field(lo: int, hi: int, steps: list[int]) -> str:
        kind = rng.random()
        if kind < 0.25:
            return "*"
        if kind < 0.45:
            return f"*/{rng.choice(steps)}"
        if kind < 0.7:
            return str(rng.randint(lo, hi))
        a = rng.randint(lo, hi - 1)
        b = rng.randint(a + 1, hi)
        if kind < 0.8:
            return f"{a}-{b}/{rng.choice(steps)}"
        if kind < 0.9:
            return f"{a}-{b}"
        return ",".join(str(v) for v in sorted(rng.sample(range(lo, hi + 1), 3)))

    minute = field(0, 59, [2, 5, 7, 15, 20, 30])
    hour = field(0, 23, [2, 3, 4, 6])
    dom = rng.choice(["*"] * 8 + ["*/2", "1,15", "1-20", "5"])
    dow = rng.choice(["*"] * 8 + ["1-5", "0,6", "*/2", "3"])
    return f"{minute} {hour} {dom} * {dow}"


def local(zone: str, s: int) -> datetime:
    return datetime.fromtimestamp(s, tz=ZoneInfo(zone))


def matches(expr: str, naive: datetime) -> bool:
    """Whether a local time matches the expression: set membership, no zone involved."""
    minutes, hours, days, months, weekdays = _fields(expr)
    if naive.minute not in minutes or naive.hour not in hours or naive.month not in months:
        return False
    in_days, in_weekdays = naive.day in days, naive.isoweekday() % 7 in weekdays
    return in_days and in_weekdays if debian_and(expr) else in_days or in_weekdays


@functools.cache
def _fields(expr: str) -> tuple[frozenset[int], ...]:
    """The values of each field, for the syntax random_expression writes (``7`` is Sunday)."""
    bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
    out = []
    for text, (lo, hi) in zip(expr.split(), bounds, strict=True):
        values: set[int] = set()
        for part in text.split(","):
            span, _, step = part.partition("/")
            first, _, last = span.partition("-")
            a, b = (lo, hi) if span == "*" else (int(first), int(last or first))
            values.update(range(a, b + 1, int(step or 1)))
        out.append(frozenset(v % 7 if hi == 7 else v for v in values))
    return tuple(out)


def second_pass(zone: str, s: int) -> bool:
    """Whether ``s`` is the second of two instants with the same local time."""
    moment = local(zone, s)
    return moment.fold == 1 and int(moment.replace(fold=0).timestamp()) != s


def croniter_next(expr: str, zone: str, s: int, *, day_or: bool = True) -> int:
    start = local(zone, s)
    return int(croniter(expr, start, day_or=day_or).get_next(datetime).timestamp())


def elapsed_oracle(expr: str, zone: str, s: int, horizon_s: int = 3 * 86400) -> int | None:
    """The first real minute after ``s`` whose local time matches, by scanning minutes."""
    for t in range(s // 60 * 60 + 60, s + horizon_s, 60):
        if matches(expr, local(zone, t).replace(tzinfo=None)):
            return t
    return None


def is_wall_clock(expr: str) -> bool:
    minute, hour = expr.split()[:2]
    return not minute.startswith("*") and not hour.startswith("*")


@dataclass(frozen=True)
class Case:
    expr: str
    zone: str
    start: int  # epoch seconds; both answers are the first occurrence after it
    ours: int
    theirs: int

    def show(self) -> str:
        def w(s: int) -> str:
            return local(self.zone, s).isoformat()

        head = f"{self.expr!r} {self.zone} after {w(self.start)}"
        return f"{head}: ours {w(self.ours)}, croniter {w(self.theirs)}"


@dataclass(frozen=True)
class Policy:
    name: str
    quote: str  # the words of docs/recurrence.md that decide the case
    explains: Callable[[Case], bool]


def _theirs_matches(case: Case) -> bool:
    return matches(case.expr, local(case.zone, case.theirs).replace(tzinfo=None))


def _skipped_times_do_not_happen(case: Case) -> bool:
    # croniter moved a local time that does not exist to after the gap, where the
    # local time no longer matches; ours is the first real instant that does.
    return (
        not is_wall_clock(case.expr)
        and not _theirs_matches(case)
        and case.ours == elapsed_oracle(case.expr, case.zone, case.start)
    )


def _repeated_hour_runs_twice(case: Case) -> bool:
    # croniter skips the second pass of a repeated hour; ours runs it.
    return (
        not is_wall_clock(case.expr)
        and case.theirs > case.ours
        and second_pass(case.zone, case.ours)
        and case.ours == elapsed_oracle(case.expr, case.zone, case.start)
    )


def _repeated_time_runs_once(case: Case) -> bool:
    # croniter runs a wall-clock time again in its second pass, when its first pass
    # is at or before the start; ours goes on to croniter's next that is no repeat.
    if not is_wall_clock(case.expr):
        return False
    t = case.theirs
    for _ in range(10):
        if not second_pass(case.zone, t):
            return t == case.ours
        first_pass = int(local(case.zone, t).replace(fold=0).timestamp())
        if first_pass > case.start and first_pass != case.ours:
            return False
        t = croniter_next(case.expr, case.zone, t, day_or=not debian_and(case.expr))
    return False


def debian_and(expr: str) -> bool:
    """Debian's rule (cronsim's): AND if either day field starts with ``*``."""
    dom, _, dow = expr.split()[2:5]
    return dom.startswith("*") or dow.startswith("*")


def _debian_day_rule(case: Case) -> bool:
    # croniter ORs the day fields unless one is exactly `*`; `*/2` with `1-5` it ORs,
    # Debian ANDs. croniter told to AND must then agree, or differ by another policy.
    dom, _, dow = case.expr.split()[2:5]
    if not debian_and(case.expr) or "*" in (dom, dow):
        return False
    theirs = croniter_next(case.expr, case.zone, case.start, day_or=False)
    anded = Case(case.expr, case.zone, case.start, case.ours, theirs)
    return theirs == case.ours or explain(anded, DST_POLICIES) is not None


DST_POLICIES = [
    Policy(
        "elapsed-time: a skipped local time does not happen",
        "Local times that were skipped do not happen",
        _skipped_times_do_not_happen,
    ),
    Policy(
        "elapsed-time: a repeated hour runs twice",
        "a repeated hour runs twice",
        _repeated_hour_runs_twice,
    ),
    Policy(
        "wall-clock: a repeated local time runs once, at the first",
        "a local time that **happens twice** (clocks fall back) runs **once, at\n     the first**",
        _repeated_time_runs_once,
    ),
]
POLICIES = [
    *DST_POLICIES,
    Policy(
        "day-of-month and day-of-week: Debian's rule",
        "if either starts with `*`\n  both must match; otherwise either may match",
        _debian_day_rule,
    ),
]


def explain(case: Case, policies: list[Policy]) -> Policy | None:
    """The first documented policy that accounts for the difference, if any."""
    for policy in policies:
        if policy.explains(case):
            return policy
    return None


def doc_says(quote: str) -> bool:
    """Whether docs/recurrence.md has these words (line breaks and indentation aside)."""
    return re.sub(r"\s+", " ", quote) in re.sub(r"\s+", " ", DOC)
