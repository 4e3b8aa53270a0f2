"""perseid_jobs.core.recurrence against independent oracles: croniter, plain arithmetic, counting.

Every difference from croniter must be accounted for by a documented policy
(tests/recurrence_oracles.py quotes docs/recurrence.md for each), or the test fails and
prints the cases that none explains.
"""

from __future__ import annotations

import collections
import random
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from perseid_jobs.core.recurrence import CatchUp, Recurrence, first_start, make_recurrence, next_run

from . import recurrence_oracles as oracles
from .recurrence_oracles import Case

SECOND = 1000
SEED = 20


def ours_after(rec: Recurrence, s: int) -> int:
    """Our first occurrence strictly after epoch second ``s``, in epoch seconds."""
    return first_start(rec, s * SECOND + 1) // SECOND


def samples(rng: random.Random, zone: str) -> list[int]:
    """Instants within six hours of each of the zone's offset changes, on whole minutes."""
    out = []
    for change in oracles.transitions(zone):
        out += [change + d for d in (-1, 0, -21 * 60, 21 * 60)]
        out += [(change + rng.randint(-6 * 3600, 6 * 3600)) // 60 * 60 for _ in range(6)]
    return out


FIXED_EXPRESSIONS = [
    "0 */2 * * *",  # the Lord Howe loss of issue 20
    "0 * * * *",
    "*/15 * * * *",
    "30 1 * * *",
    "15 2 * * *",
    "0,20,40 2 * * *",
    "45 2 * * *",
    "0 3 * * *",
    "*/7 1-3 * * *",
    "6-37 * * * *",
    "0 0 */2 * 1-5",
]


def differences() -> tuple[list[Case], collections.Counter[str], int]:
    rng = random.Random(SEED)
    cases, seen, compared = [], collections.Counter[str](), 0
    for zone in oracles.ZONES:
        expressions = FIXED_EXPRESSIONS + [oracles.random_expression(rng) for _ in range(6)]
        instants = samples(rng, zone)
        for expr in expressions:
            rec = make_recurrence(cron=expr, tz=zone)
            for s in instants:
                compared += 1
                ours, theirs = ours_after(rec, s), oracles.croniter_next(expr, zone, s)
                if ours != theirs:
                    case = Case(expr, zone, s, ours, theirs)
                    policy = oracles.explain(case, oracles.POLICIES)
                    if policy is None:
                        cases.append(case)
                    else:
                        seen[policy.name] += 1
    return cases, seen, compared


def test_every_difference_from_croniter_is_a_documented_policy() -> None:
    unexplained, seen, compared = differences()
    assert compared > 5000
    assert not unexplained, "differences no documented policy explains:\n" + "\n".join(
        c.show() for c in unexplained[:20]
    )
    # Each listed policy is still needed (a stale entry would hide nothing, but lie).
    assert set(seen) == {p.name for p in oracles.POLICIES}, seen


@pytest.mark.parametrize("policy", oracles.POLICIES, ids=lambda p: p.name)
def test_each_policy_quotes_the_docs(policy: oracles.Policy) -> None:
    assert oracles.doc_says(policy.quote), policy.quote


def test_lord_howe_fall_back_keeps_the_two_oclock_run() -> None:
    # 2026-04-05: 02:00 LHDT (+11:00) becomes 01:30 LHST (+10:30). 02:00+10:30 exists
    # once (15:30 UTC) and matches `0 */2`; cronsim alone goes on to 04:00.
    zone = "Australia/Lord_Howe"
    rec = make_recurrence(cron="0 */2 * * *", tz=zone)
    start = int(datetime(2026, 4, 5, 0, 0, tzinfo=ZoneInfo(zone)).timestamp())
    nxt = ours_after(rec, start)
    assert oracles.local(zone, nxt).isoformat() == "2026-04-05T02:00:00+10:30"
    assert nxt == oracles.croniter_next("0 */2 * * *", zone, start)
    assert nxt == oracles.elapsed_oracle("0 */2 * * *", zone, start)


@pytest.mark.parametrize("zone", ["Australia/Lord_Howe", "Pacific/Chatham", "America/Santiago"])
def test_elapsed_time_patterns_match_a_minute_by_minute_scan(zone: str) -> None:
    # The docs' own rule, applied by brute force: every real instant whose local
    # time matches, and nothing else, over a day on each side of every change.
    rng = random.Random(SEED)
    for change in oracles.transitions(zone)[:4]:
        expr = rng.choice(["0 */2 * * *", "*/20 * * * *", "30 */3 * * *", "0,45 1-4 * * *"])
        if oracles.is_wall_clock(expr):
            expr = "15 */2 * * *"
        rec = make_recurrence(cron=expr, tz=zone)
        s, end = change - 86400, change + 86400
        while s < end:
            expected = oracles.elapsed_oracle(expr, zone, s)
            assert ours_after(rec, s) == expected, (expr, oracles.local(zone, s))
            assert expected is not None
            s = expected


# --- the interval grid against plain arithmetic ------------------------------------------


def grid_points(origin: int, every: int, upto: int) -> list[int]:
    """The grid, stepped one point at a time (no division), up to and including ``upto``."""
    points, t = [], origin
    while t <= upto:
        points.append(t)
        t += every
    return points


def expected_step(points: list[int], current: int, bound: int) -> tuple[int, int]:
    """The first point at or after ``bound``, and how many lie strictly between."""
    start = next(p for p in points if p >= bound)
    return start, sum(1 for p in points if current < p < bound)


def test_interval_grid_next_run_and_skipped_match_stepping_the_grid() -> None:
    rng = random.Random(SEED)
    for _ in range(3000):
        every = rng.choice([1, 7, 250, 1000, 60_000, 3_600_000, 86_400_000, rng.randint(1, 10**7)])
        origin = rng.randint(0, 2 * 10**12)
        current = origin + every * rng.randint(0, 50)
        now = current + rng.choice(
            [-every, 0, every, 3 * every + 1, rng.randint(-2 * every, 90 * every)]
        )
        window = rng.choice([None, 0, every, 5 * every - 1, 5 * every, rng.randint(1, 40 * every)])
        rec = Recurrence(
            every_ms=every,
            catch_up=CatchUp.SKIP if window is None else CatchUp.ALL,
            catch_up_window_ms=window,
        )
        assert first_start(rec, origin) == origin
        points = grid_points(origin, every, max(now, current) + 2 * every)
        # skip: "the first occurrence **after** `now`"; all: "the **oldest** missed
        # occurrence no older than `now - W`", and never the current one again.
        bound = max(now, current) + 1 if window is None else max(now - window, current + 1)
        got = next_run(rec, origin_ms=origin, current_start_ms=current, now_ms=now)
        assert (got.start_ms, got.skipped) == expected_step(points, current, bound), (
            every, origin, current, now, window,
        )  # fmt: skip


# --- catch-up counts against a list of occurrences built from croniter ----------------------


def croniter_occurrences(expr: str, zone: str, after: int, until: int) -> list[int]:
    """croniter's occurrences in (after, until], each step checked against ours: where they
    differ, a documented policy must explain it, and the policy's answer is taken."""
    out, s = [], after
    rec = make_recurrence(cron=expr, tz=zone)
    while s <= until:
        theirs, ours = oracles.croniter_next(expr, zone, s), ours_after(rec, s)
        if theirs != ours:
            policy = oracles.explain(Case(expr, zone, s, ours, theirs), oracles.POLICIES)
            assert policy is not None, Case(expr, zone, s, ours, theirs).show()
            theirs = ours
        out.append(theirs)
        s = theirs
    return out


@pytest.mark.parametrize("zone", ["Australia/Lord_Howe", "Pacific/Chatham", "Europe/Paris", "UTC"])
def test_cron_catch_up_counts_match_counting_the_occurrences(zone: str) -> None:
    rng = random.Random(SEED)
    changes = oracles.transitions(zone) or [int(datetime(2026, 4, 5).timestamp())]
    for _ in range(24):
        expr = rng.choice(
            ["*/15 * * * *", "0 */2 * * *", "30 1 * * *", "*/20 1-3 * * *", "0 * * * *"]
        )
        at = rng.choice(changes) + rng.randint(-8 * 3600, 2 * 3600)
        rec = make_recurrence(cron=expr, tz=zone)
        current = ours_after(rec, at)
        occurrences = croniter_occurrences(expr, zone, current, current + 26 * 3600)
        window = rng.choice([None, 60, 900, 3600, rng.randint(1, 20 * 3600)])
        # Now anywhere, or exactly on an occurrence, or with one exactly at `now - W`.
        on = rng.choice(occurrences[:-1])
        now = rng.choice([current + rng.randint(-600, 24 * 3600), on, on + (window or 0)])
        if window is None:
            bound = max(now, current) + 1
            rec2 = rec
        else:
            bound = max(now - window, current + 1)
            rec2 = make_recurrence(cron=expr, tz=zone, catch_up="all", catch_up_window=window)
        start = next(o for o in occurrences if o >= bound)
        skipped = sum(1 for o in occurrences if current < o < bound)
        got = next_run(
            rec2, origin_ms=current * SECOND, current_start_ms=current * SECOND, now_ms=now * SECOND
        )
        assert (got.start_ms // SECOND, got.skipped) == (start, skipped), (
            expr,
            current,
            now,
            window,
        )
