"""Recurrence: interval grids, cron in a time zone across DST, catch-up counting."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from perseid_jobs.core.recurrence import (
    CRON_COUNT_LIMIT,
    CatchUp,
    NextRun,
    Recurrence,
    RecurrenceError,
    first_start,
    make_recurrence,
    next_run,
)

SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
ORIGIN = 1_700_000_000_123  # deliberately not on a whole second


def local_ms(zone: str, y: int, mo: int, d: int, h: int = 0, mi: int = 0, fold: int = 0) -> int:
    """Epoch ms of a local wall-clock time (fold=0: the first of a repeated time)."""
    moment = datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(zone), fold=fold)
    return int(moment.timestamp()) * SECOND


def wall(zone: str, ms: int) -> str:
    """A readable local time with its UTC offset, for assertions."""
    return datetime.fromtimestamp(ms / SECOND, tz=ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M%z")


def series(rec: Recurrence, at_ms: int, until_ms: int) -> list[int]:
    """Starts of a series whose every run ends the instant it starts (nothing missed)."""
    starts = [first_start(rec, at_ms)]
    while starts[-1] < until_ms:
        step = next_run(rec, origin_ms=starts[0], current_start_ms=starts[-1], now_ms=starts[-1])
        assert step.skipped == 0
        starts.append(step.start_ms)
    return starts[:-1]


# --- interval grid ---------------------------------------------------------------------------


def test_interval_series_starts_at_its_origin() -> None:
    assert first_start(make_recurrence(every="1m"), ORIGIN) == ORIGIN


def test_run_ending_mid_interval_is_followed_by_the_next_grid_point() -> None:
    rec = make_recurrence(every="1m")
    step = next_run(rec, origin_ms=ORIGIN, current_start_ms=ORIGIN, now_ms=ORIGIN + 30 * SECOND)
    assert step == NextRun(start_ms=ORIGIN + MINUTE, skipped=0)


def test_run_ending_exactly_on_a_grid_point_skips_that_point() -> None:
    rec = make_recurrence(every="1m")
    step = next_run(rec, origin_ms=ORIGIN, current_start_ms=ORIGIN, now_ms=ORIGIN + MINUTE)
    assert step == NextRun(start_ms=ORIGIN + 2 * MINUTE, skipped=1)


def test_run_overrunning_several_intervals_counts_the_skipped_runs() -> None:
    rec = make_recurrence(every="1m")
    now = ORIGIN + 3 * MINUTE + 30 * SECOND
    step = next_run(rec, origin_ms=ORIGIN, current_start_ms=ORIGIN, now_ms=now)
    assert step == NextRun(start_ms=ORIGIN + 4 * MINUTE, skipped=3)


def test_grid_never_drifts_over_many_steps() -> None:
    every = 7_919  # a prime, so any rounding error would show
    rec = make_recurrence(every=f"{every}ms")
    current = ORIGIN
    for k in range(1, 20_001):
        run_time = (k * 7_877) % every  # each run takes a different time, always < every
        step = next_run(rec, origin_ms=ORIGIN, current_start_ms=current, now_ms=current + run_time)
        assert step == NextRun(start_ms=ORIGIN + k * every, skipped=0)
        current = step.start_ms


def test_week_of_missed_one_second_runs_is_counted_arithmetically() -> None:
    rec = make_recurrence(every="1s")
    now = ORIGIN + 7 * DAY + 500
    started = time.perf_counter()
    step = next_run(rec, origin_ms=ORIGIN, current_start_ms=ORIGIN, now_ms=now)
    assert time.perf_counter() - started < 0.01
    assert step == NextRun(start_ms=ORIGIN + 7 * DAY + SECOND, skipped=7 * 86_400)


def test_catch_up_all_runs_missed_runs_in_the_window_oldest_first() -> None:
    rec = make_recurrence(every="1s", catch_up="all", catch_up_window="10s")
    now = ORIGIN + 60 * SECOND + 500
    step = next_run(rec, origin_ms=ORIGIN, current_start_ms=ORIGIN, now_ms=now)
    # The window reaches back to ORIGIN+50.5s: 1s..50s are skipped, 51s is due at once.
    assert step == NextRun(start_ms=ORIGIN + 51 * SECOND, skipped=50)
    # Each catch-up run takes 100 ms; they follow one another until the grid is back in the future.
    starts = [step.start_ms]
    skipped = step.skipped
    while starts[-1] <= now:
        now += 100
        step = next_run(rec, origin_ms=ORIGIN, current_start_ms=starts[-1], now_ms=now)
        skipped += step.skipped
        starts.append(step.start_ms)
    # 61s was missed while catching up, so it runs too; 62s is back on schedule.
    assert starts == [ORIGIN + k * SECOND for k in range(51, 63)]
    assert starts[-1] > now
    assert skipped == 50


def test_catch_up_all_with_nothing_missed_waits_for_the_next_grid_point() -> None:
    rec = make_recurrence(every="1m", catch_up="all", catch_up_window="1h")
    step = next_run(rec, origin_ms=ORIGIN, current_start_ms=ORIGIN, now_ms=ORIGIN + 10 * SECOND)
    assert step == NextRun(start_ms=ORIGIN + MINUTE, skipped=0)


def test_catch_up_all_with_a_window_wider_than_the_outage_skips_nothing() -> None:
    rec = make_recurrence(every="1m", catch_up="all", catch_up_window="1d")
    step = next_run(rec, origin_ms=ORIGIN, current_start_ms=ORIGIN, now_ms=ORIGIN + 5 * HOUR)
    assert step == NextRun(start_ms=ORIGIN + MINUTE, skipped=0)


def test_missed_run_exactly_at_the_window_edge_is_still_run() -> None:
    rec = make_recurrence(every="1m", catch_up="all", catch_up_window="2m")
    now = ORIGIN + 5 * MINUTE
    step = next_run(rec, origin_ms=ORIGIN, current_start_ms=ORIGIN, now_ms=now)
    assert step == NextRun(start_ms=ORIGIN + 3 * MINUTE, skipped=2)


@pytest.mark.parametrize("catch_up", ["skip", "all"])
def test_clock_stepping_back_never_repeats_the_current_run(catch_up: str) -> None:
    window = "1h" if catch_up == "all" else None
    rec = make_recurrence(every="1m", catch_up=catch_up, catch_up_window=window)
    current = ORIGIN + 10 * MINUTE
    step = next_run(rec, origin_ms=ORIGIN, current_start_ms=current, now_ms=current - 5 * SECOND)
    assert step == NextRun(start_ms=current + MINUTE, skipped=0)


def brute_force(
    origin: int, every: int, current: int, now: int, window: int | None
) -> tuple[int, int]:
    """(next start, skipped) by enumerating the grid point by point."""
    grid = [origin + j * every for j in range((now - origin) // every + 2)]
    missed = [t for t in grid if current < t <= now]
    future = next(t for t in grid if t > now)
    if window is None:
        return future, len(missed)
    kept = [t for t in missed if t >= now - window]
    return (kept[0] if kept else future), len(missed) - len(kept)


@given(
    origin=st.integers(min_value=0, max_value=10**13),
    every=st.integers(min_value=1, max_value=5_000),
    k=st.integers(min_value=0, max_value=50),
    elapsed=st.integers(min_value=0, max_value=300_000),
    window=st.none() | st.integers(min_value=1, max_value=400_000),
)
def test_next_run_is_a_grid_point_with_the_brute_force_skip_count(
    origin: int, every: int, k: int, elapsed: int, window: int | None
) -> None:
    current = origin + k * every
    now = current + elapsed
    rec = Recurrence(
        every_ms=every,
        catch_up=CatchUp.SKIP if window is None else CatchUp.ALL,
        catch_up_window_ms=window,
    )
    step = next_run(rec, origin_ms=origin, current_start_ms=current, now_ms=now)
    assert (step.start_ms - origin) % every == 0
    assert step.start_ms > current
    if window is None:
        assert step.start_ms > now
    assert (step.start_ms, step.skipped) == brute_force(origin, every, current, now, window)


# --- cron ----------------------------------------------------------------------------------


def test_cron_first_start_is_the_first_occurrence_at_or_after() -> None:
    rec = make_recurrence(cron="0 9 * * *")
    nine = local_ms("UTC", 2024, 5, 1, 9)
    assert first_start(rec, nine) == nine
    assert first_start(rec, nine - 1) == nine
    assert first_start(rec, nine + 1) == nine + DAY


def test_cron_weekdays_in_paris_follow_local_nine_oclock_across_dst() -> None:
    rec = make_recurrence(cron="0 9 * * MON-FRI", tz="Europe/Paris")
    friday = local_ms("Europe/Paris", 2024, 3, 29)
    starts = series(rec, friday, friday + 6 * DAY)
    assert [wall("Europe/Paris", s) for s in starts] == [
        "2024-03-29 09:00+0100",
        "2024-04-01 09:00+0200",
        "2024-04-02 09:00+0200",
        "2024-04-03 09:00+0200",
    ]


def test_cron_accepts_lowercase_names_and_month_names() -> None:
    rec = make_recurrence(cron="30 12 * jan,jul sat")
    starts = series(rec, local_ms("UTC", 2024, 1, 1), local_ms("UTC", 2024, 12, 31))
    assert len(starts) == 4 + 4  # Saturdays in January and July 2024
    assert wall("UTC", starts[0]) == "2024-01-06 12:30+0000"
    assert wall("UTC", starts[4]) == "2024-07-06 12:30+0000"


@pytest.mark.parametrize(
    ("nickname", "expected"),
    [
        ("@hourly", "2024-05-01 11:00+0200"),
        ("@daily", "2024-05-02 00:00+0200"),
        ("@midnight", "2024-05-02 00:00+0200"),
        ("@weekly", "2024-05-05 00:00+0200"),
        ("@monthly", "2024-06-01 00:00+0200"),
        ("@yearly", "2025-01-01 00:00+0100"),
        ("@ANNUALLY", "2025-01-01 00:00+0100"),
    ],
)
def test_cron_nicknames_stand_for_their_expressions(nickname: str, expected: str) -> None:
    rec = make_recurrence(cron=nickname, tz="Europe/Paris")
    at = local_ms("Europe/Paris", 2024, 5, 1, 10, 5)
    assert wall("Europe/Paris", first_start(rec, at)) == expected


def test_cron_fixed_times_in_a_zone_with_whole_second_instants() -> None:
    rec = make_recurrence(cron="*/5 * * * *", tz="Asia/Kolkata")
    start = first_start(rec, ORIGIN)
    assert start % (5 * MINUTE) == 0 and start >= ORIGIN


@pytest.mark.parametrize(
    ("zone", "expr", "day", "expected"),
    [
        ("Europe/Paris", "30 2 * * *", (2024, 3, 31), "2024-03-31 03:00+0200"),
        ("America/New_York", "30 2 * * *", (2024, 3, 10), "2024-03-10 03:00-0400"),
        ("Australia/Lord_Howe", "15 2 * * *", (2024, 10, 6), "2024-10-06 02:30+1100"),
    ],
)
def test_daily_time_skipped_by_spring_forward_runs_at_the_first_valid_instant_after_it(
    zone: str, expr: str, day: tuple[int, int, int], expected: str
) -> None:
    rec = make_recurrence(cron=expr, tz=zone)
    starts = series(rec, local_ms(zone, *day) - DAY, local_ms(zone, *day) + 2 * DAY)
    assert [wall(zone, s) for s in starts][1] == expected
    assert len(starts) == 3  # one run per day, none lost, none doubled


@pytest.mark.parametrize(
    ("zone", "expr", "day", "expected"),
    [
        ("Europe/Paris", "30 2 * * *", (2024, 10, 27), "2024-10-27 02:30+0200"),
        ("America/New_York", "30 1 * * *", (2024, 11, 3), "2024-11-03 01:30-0400"),
        ("Australia/Lord_Howe", "45 1 * * *", (2024, 4, 7), "2024-04-07 01:45+1100"),
    ],
)
def test_daily_time_repeated_by_fall_back_runs_once_at_the_first(
    zone: str, expr: str, day: tuple[int, int, int], expected: str
) -> None:
    rec = make_recurrence(cron=expr, tz=zone)
    starts = series(rec, local_ms(zone, *day) - DAY, local_ms(zone, *day) + 2 * DAY)
    assert [wall(zone, s) for s in starts][1] == expected
    assert len(starts) == 3


def test_skipped_times_landing_on_the_same_instant_run_once() -> None:
    rec = make_recurrence(cron="0,30 2 * * *", tz="Europe/Paris")
    day = local_ms("Europe/Paris", 2024, 3, 31)
    starts = series(rec, day, day + DAY)
    assert [wall("Europe/Paris", s) for s in starts] == ["2024-03-31 03:00+0200"]


def wall_clock_oracle(zone: str, day: date, hour: int, minute: int) -> int:
    """When a daily HH:MM job must run on `day`: at that local time (the first if it repeats),
    or, if the clocks skip it, at the first instant after it."""
    tz = ZoneInfo(zone)
    naive = datetime(day.year, day.month, day.day, hour, minute)
    first = naive.replace(tzinfo=tz, fold=0)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive:
        return int(first.timestamp()) * SECOND
    candidate = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)  # before the gap
    while candidate.astimezone(tz).replace(tzinfo=None) <= naive:
        candidate += timedelta(minutes=1)
    return int(candidate.timestamp()) * SECOND


@pytest.mark.parametrize("zone", ["Europe/Paris", "America/New_York", "Australia/Lord_Howe"])
@pytest.mark.parametrize(("hour", "minute"), [(0, 0), (1, 30), (1, 45), (2, 0), (2, 15), (2, 30)])
def test_daily_job_matches_the_wall_clock_rule_every_day_of_two_years(
    zone: str, hour: int, minute: int
) -> None:
    rec = make_recurrence(cron=f"{minute} {hour} * * *", tz=zone)
    days = [date(2024, 1, 1) + timedelta(days=n) for n in range(731)]
    expected = [wall_clock_oracle(zone, d, hour, minute) for d in days]
    assert series(rec, expected[0], expected[-1] + 1) == expected


DST_DAYS = [
    ("Europe/Paris", (2024, 3, 31)),
    ("Europe/Paris", (2024, 10, 27)),
    ("America/New_York", (2024, 3, 10)),
    ("America/New_York", (2024, 11, 3)),
    ("Australia/Lord_Howe", (2024, 4, 7)),
    ("Australia/Lord_Howe", (2024, 10, 6)),
]


@pytest.mark.parametrize(("zone", "day"), DST_DAYS)
def test_every_15_minutes_across_a_dst_change_has_no_duplicate_and_no_gap(
    zone: str, day: tuple[int, int, int]
) -> None:
    rec = make_recurrence(cron="*/15 * * * *", tz=zone)
    midnight = local_ms(zone, *day)
    starts = series(rec, midnight, midnight + DAY)
    assert all(b - a == 15 * MINUTE for a, b in itertools.pairwise(starts))
    assert len(starts) == len(set(starts))
    # Every real instant whose local minute is a quarter, and nothing else.
    oracle = [
        t
        for t in range(midnight, midnight + DAY, MINUTE)
        if datetime.fromtimestamp(t / SECOND, tz=ZoneInfo(zone)).minute % 15 == 0
    ]
    assert starts == oracle


def test_hourly_job_runs_every_real_hour_through_fall_back() -> None:
    rec = make_recurrence(cron="0 * * * *", tz="Europe/Paris")
    midnight = local_ms("Europe/Paris", 2024, 10, 27)
    starts = series(rec, midnight, midnight + 5 * HOUR)
    assert [wall("Europe/Paris", s) for s in starts] == [
        "2024-10-27 00:00+0200",
        "2024-10-27 01:00+0200",
        "2024-10-27 02:00+0200",
        "2024-10-27 02:00+0100",
        "2024-10-27 03:00+0100",
    ]


def test_series_created_during_the_repeated_hour_does_not_start_in_the_past() -> None:
    rec = make_recurrence(cron="30 1 * * *", tz="America/New_York")
    second_pass = local_ms("America/New_York", 2024, 11, 3, 1, 10, fold=1)  # 01:10 EST
    start = first_start(rec, second_pass)
    assert wall("America/New_York", start) == "2024-11-04 01:30-0500"


def test_cron_skip_counts_the_missed_occurrences() -> None:
    rec = make_recurrence(cron="0 * * * *")
    ten = local_ms("UTC", 2024, 5, 1, 10)
    step = next_run(rec, origin_ms=ten, current_start_ms=ten, now_ms=ten + 3 * HOUR + 30 * MINUTE)
    assert step == NextRun(start_ms=ten + 4 * HOUR, skipped=3)


def test_cron_catch_up_all_runs_the_oldest_missed_in_the_window_at_once() -> None:
    rec = make_recurrence(cron="0 * * * *", catch_up="all", catch_up_window="2h")
    ten = local_ms("UTC", 2024, 5, 1, 10)
    now = ten + 3 * HOUR + 30 * MINUTE
    step = next_run(rec, origin_ms=ten, current_start_ms=ten, now_ms=now)
    assert step == NextRun(start_ms=ten + 2 * HOUR, skipped=1)  # 11:00 skipped, 12:00 due now
    step = next_run(rec, origin_ms=ten, current_start_ms=step.start_ms, now_ms=now + MINUTE)
    assert step == NextRun(start_ms=ten + 3 * HOUR, skipped=0)
    step = next_run(rec, origin_ms=ten, current_start_ms=step.start_ms, now_ms=now + 2 * MINUTE)
    assert step == NextRun(start_ms=ten + 4 * HOUR, skipped=0)


def test_cron_catch_up_all_with_nothing_missed_waits_for_the_next_occurrence() -> None:
    rec = make_recurrence(cron="0 * * * *", catch_up="all", catch_up_window="2h")
    ten = local_ms("UTC", 2024, 5, 1, 10)
    step = next_run(rec, origin_ms=ten, current_start_ms=ten, now_ms=ten + 20 * MINUTE)
    assert step == NextRun(start_ms=ten + HOUR, skipped=0)


@pytest.mark.parametrize("catch_up", ["skip", "all"])
def test_cron_missed_for_a_year_counts_up_to_the_limit_quickly(catch_up: str) -> None:
    window = "1h" if catch_up == "all" else None
    rec = make_recurrence(cron="*/15 * * * *", catch_up=catch_up, catch_up_window=window)
    start = local_ms("UTC", 2024, 1, 1)
    now = start + 366 * DAY + 7 * MINUTE
    started = time.perf_counter()
    step = next_run(rec, origin_ms=start, current_start_ms=start, now_ms=now)
    assert time.perf_counter() - started < 2.0
    assert step.skipped == CRON_COUNT_LIMIT
    expected = now - 7 * MINUTE + 15 * MINUTE if catch_up == "skip" else now - HOUR + 8 * MINUTE
    assert step.start_ms == expected


# --- validation ----------------------------------------------------------------------------


def test_valid_input_builds_a_recurrence() -> None:
    assert make_recurrence(every="10m") == Recurrence(every_ms=600_000)
    assert make_recurrence(every=30) == Recurrence(every_ms=30_000)
    assert make_recurrence(cron="  0 9  * * MON-FRI ", tz="Europe/Paris") == Recurrence(
        cron="0 9 * * MON-FRI", tz="Europe/Paris"
    )
    assert make_recurrence(cron="@daily").tz == "UTC"
    assert make_recurrence(every="1s", catch_up="ALL", catch_up_window="1h") == Recurrence(
        every_ms=1_000, catch_up=CatchUp.ALL, catch_up_window_ms=3_600_000
    )


def test_hand_built_recurrence_without_a_schedule_is_refused() -> None:
    with pytest.raises(RecurrenceError, match="a recurrence needs every_ms or cron"):
        next_run(Recurrence(), origin_ms=0, current_start_ms=0, now_ms=0)
    with pytest.raises(RecurrenceError, match="every_ms must be positive, got 0"):
        next_run(Recurrence(every_ms=0), origin_ms=0, current_start_ms=0, now_ms=0)


def test_recurrence_round_trips_through_msgspec_json() -> None:
    rec = make_recurrence(cron="0 9 * * *", tz="Europe/Paris", catch_up="all", catch_up_window=60)
    encoded = msgspec.json.encode(rec)
    assert b'"catch_up":"all"' in encoded
    assert msgspec.json.decode(encoded, type=Recurrence) == rec


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": "1m", "cron": "* * * * *"}, "give either --every or --cron, not both"),
        ({}, "a recurrence needs --every or --cron"),
        ({"every": 0}, "invalid --every: duration 0 must be greater than zero"),
        ({"every": "-1s"}, "invalid --every: invalid duration '-1s'"),
        ({"every": "soon"}, "invalid --every: invalid duration 'soon'"),
        ({"every": "1mo"}, "invalid --every: invalid duration '1mo': months and years"),
        ({"cron": "61 * * * *"}, "invalid cron expression '61 * * * *': Bad minute"),
        ({"cron": "0 9 * * FUNDAY"}, "invalid cron expression '0 9 * * FUNDAY': Bad day-of-week"),
        ({"cron": "0 0 31 2 *"}, "invalid cron expression '0 0 31 2 *': Bad day-of-month"),
        (
            {"cron": "* * * *"},
            "expected 5 fields (minute hour day-of-month month day-of-week), got 4",
        ),
        (
            {"cron": "0 0 9 * * *"},
            "expected 5 fields (minute hour day-of-month month day-of-week), got 6",
        ),
        ({"cron": "@reboot"}, "invalid cron expression '@reboot': nicknames are @yearly"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"cron": "* * * * *", "tz": "../etc/passwd"}, "unknown time zone '../etc/passwd'"),
        ({"every": "1m", "tz": "UTC"}, "--tz 'UTC' applies to --cron only"),
        (
            {"every": "1m", "catch_up": "sometimes"},
            "invalid --catch-up 'sometimes': use skip or all",
        ),
        ({"every": "1m", "catch_up": "all"}, "--catch-up all needs --catch-up-window"),
        (
            {"every": "1m", "catch_up_window": "1h"},
            "--catch-up-window applies to --catch-up all only",
        ),
        (
            {"every": "1m", "catch_up": "all", "catch_up_window": "forever"},
            "invalid --catch-up-window: invalid duration 'forever'",
        ),
    ],
)
def test_invalid_recurrence_is_refused_with_a_one_line_reason(
    kwargs: dict[str, str | int], message: str
) -> None:
    with pytest.raises(RecurrenceError) as raised:
        make_recurrence(**kwargs)  # type: ignore[arg-type]
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
