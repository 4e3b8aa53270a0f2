"""Recurrence arithmetic: interval grids, cron in a time zone, and catch-up after missed runs.

Pure functions of their arguments. All instants are UTC epoch milliseconds taken
from Redis's clock by the caller; this module never reads a clock. The worker
computes the next start here and passes it into the Lua scripts.
See docs/recurrence.md for the semantics, written for users of cron and Celery beat.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from cronsim import CronSim, CronSimError

from perseid_jobs.core.durations import DurationError, parse_duration

__all__ = [
    "CRON_COUNT_LIMIT",
    "CatchUp",
    "NextRun",
    "Recurrence",
    "RecurrenceError",
    "first_start",
    "make_recurrence",
    "next_run",
]

CRON_COUNT_LIMIT = 10_000
"""Most missed cron occurrences counted one by one; beyond it ``skipped`` saturates."""

NICKNAMES: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The cron nicknames accepted, with the 5-field expression each stands for."""

# How far ahead a fall-back can still repeat a local time that is already past; the
# largest in the tz database moved a clock back by 24 hours (Alaska, 1867).
_FALL_BACK_HORIZON_H = 26

# Any fixed instant works for validating an expression; this one keeps it reproducible.
_VALIDATION_INSTANT = datetime(2000, 1, 1, tzinfo=UTC)


class RecurrenceError(ValueError):
    """A recurrence that cannot be used; the message says what to change."""


class CatchUp(enum.StrEnum):
    """What happens to occurrences that passed while the previous run was still going."""

    SKIP = "skip"
    ALL = "all"


class Recurrence(msgspec.Struct, frozen=True):
    """A validated schedule: exactly one of ``every_ms`` and ``cron``. Build it with
    :func:`make_recurrence`."""

    every_ms: int | None = None
    cron: str | None = None
    tz: str = "UTC"
    catch_up: CatchUp = CatchUp.SKIP
    catch_up_window_ms: int | None = None


class NextRun(msgspec.Struct, frozen=True):
    """The next run of a series: when it starts and how many occurrences were dropped."""

    start_ms: int
    skipped: int


def make_recurrence(
    *,
    every: str | int | None = None,
    cron: str | None = None,
    tz: str | None = None,
    catch_up: str = "skip",
    catch_up_window: str | int | None = None,
) -> Recurrence:
    """Validate user input and return a :class:`Recurrence`.

    ``every`` is a duration (see :func:`perseid_jobs.core.durations.parse_duration`);
    ``cron`` a 5-field expression or a nickname such as ``@daily``, evaluated in
    ``tz`` (an IANA zone, default UTC). ``catch_up`` is ``"skip"`` or ``"all"``;
    ``"all"`` needs ``catch_up_window``, ``"skip"`` refuses one.

    Raises:
        RecurrenceError: with a one-line message naming the problem.
    """
    if every is not None and cron is not None:
        raise RecurrenceError("give either --every or --cron, not both")
    if every is None and cron is None:
        raise RecurrenceError("a recurrence needs --every or --cron")
    if every is not None and tz is not None:
        raise RecurrenceError(f"--tz {tz!r} applies to --cron only; an --every grid is plain time")
    mode = _parse_catch_up(catch_up)
    window_ms = _parse_window(mode, catch_up_window)
    if every is not None:
        try:
            every_ms = parse_duration(every)
        except DurationError as exc:
            raise RecurrenceError(f"invalid --every: {exc}") from None
        return Recurrence(every_ms=every_ms, catch_up=mode, catch_up_window_ms=window_ms)
    assert cron is not None
    zone = tz if tz is not None else "UTC"
    _zone(zone)
    expression = " ".join(cron.split())
    _cron_fields(expression)
    return Recurrence(cron=expression, tz=zone, catch_up=mode, catch_up_window_ms=window_ms)


def first_start(rec: Recurrence, at_ms: int) -> int:
    """Return the first start of a new series created at ``at_ms``.

    An interval grid starts at ``at_ms`` itself (the grid origin); a cron series
    at the first occurrence at or after ``at_ms``.
    """
    if rec.every_ms is not None:
        return at_ms
    return next(_cron_occurrences(rec, at_ms - 1))


def next_run(rec: Recurrence, *, origin_ms: int, current_start_ms: int, now_ms: int) -> NextRun:
    """Return the run that follows the one scheduled at ``current_start_ms``.

    Called when that run ends (or is reaped) at Redis time ``now_ms``. Occurrences
    strictly after ``current_start_ms`` and at or before ``now_ms`` were missed.
    With ``SKIP`` the next run is the first occurrence after ``now_ms`` and every
    missed one counts as skipped. With ``ALL`` the oldest missed occurrence within
    the window (``>= now_ms - window``) is next, due at once; only those older than
    the window are skipped. The next start is always after ``current_start_ms``,
    even if ``now_ms`` is earlier (a clock step back after a failover).

    For cron, at most :data:`CRON_COUNT_LIMIT` skipped occurrences are counted.
    """
    if rec.catch_up is CatchUp.ALL:
        # Occurrences from `bound` on are run; those between current and bound are skipped.
        # A Recurrence built by hand with no window catches up without limit.
        window_ms = rec.catch_up_window_ms
        earliest = now_ms - window_ms if window_ms is not None else current_start_ms
        bound = max(earliest, current_start_ms + 1)
    else:
        bound = max(now_ms, current_start_ms) + 1
    if rec.every_ms is not None:
        if rec.every_ms <= 0:
            raise RecurrenceError(f"every_ms must be positive, got {rec.every_ms}")
        return _grid_next(origin_ms, rec.every_ms, current_start_ms, bound)
    return _cron_next(rec, current_start_ms, bound)


def _grid_next(origin_ms: int, every_ms: int, current_ms: int, bound_ms: int) -> NextRun:
    """First grid point ``>= bound_ms`` and the count of grid points in ``(current, bound)``."""
    if bound_ms <= origin_ms:
        start = origin_ms
    else:
        start = origin_ms - (origin_ms - bound_ms) // every_ms * every_ms  # ceiling step
    skipped = max(
        0,
        _grid_count_upto(origin_ms, every_ms, bound_ms - 1)
        - _grid_count_upto(origin_ms, every_ms, current_ms),
    )
    return NextRun(start_ms=start, skipped=skipped)


def _grid_count_upto(origin_ms: int, every_ms: int, t_ms: int) -> int:
    """Number of grid points ``origin + k*every`` (k >= 0) that are ``<= t_ms``."""
    if t_ms < origin_ms:
        return 0
    return (t_ms - origin_ms) // every_ms + 1


def _cron_next(rec: Recurrence, current_ms: int, bound_ms: int) -> NextRun:
    """First cron occurrence ``>= bound_ms`` and the (capped) count in ``(current, bound)``."""
    skipped = 0
    for occurrence in _cron_occurrences(rec, current_ms):
        if occurrence >= bound_ms:
            return NextRun(start_ms=occurrence, skipped=skipped)
        skipped += 1
        if skipped >= CRON_COUNT_LIMIT:
            break
    # Too many to count one by one: jump straight to the bound.
    return NextRun(start_ms=next(_cron_occurrences(rec, bound_ms - 1)), skipped=skipped)


def _cron_occurrences(rec: Recurrence, after_ms: int) -> Iterator[int]:
    """Yield the cron occurrences strictly after ``after_ms``, increasing, in UTC ms.

    Wall-clock expressions go through cronsim with the zone, which evaluates them
    on naive local time and shifts a skipped time forward (as Debian cron does).
    Elapsed-time patterns are matched on naive local time here and each match is
    mapped to the real instants that have that local time (none, one, or two):
    cronsim's own handling steps hours in real time and loses a match when an
    offset changes by less than an hour (docs/recurrence.md, Australia/Lord_Howe).
    Either way, non-increasing instants (a second pass of a repeated hour that
    cronsim maps back to the first) are dropped.
    """
    if rec.cron is None:
        raise RecurrenceError("a recurrence needs every_ms or cron")
    zone = _zone(rec.tz)
    expression = _expand(rec.cron)
    moments = (
        _wall_clock_instants(expression, zone, after_ms)
        if _is_wall_clock(expression)
        else _elapsed_instants(expression, zone, after_ms)
    )
    last = after_ms
    try:
        for instant in moments:
            if instant > last:
                last = instant
                yield instant
    except CronSimError as exc:
        raise RecurrenceError(f"invalid cron expression {rec.cron!r}: {exc}") from None
    raise RecurrenceError(f"cron expression {rec.cron!r} has no occurrence in 50 years")


def _is_wall_clock(expression: str) -> bool:
    """cronsim's (and Debian cron's) test: both the minute and the hour field are fixed."""
    minute, hour = expression.split()[:2]
    return not minute.startswith("*") and not hour.startswith("*")


def _wall_clock_instants(expression: str, zone: ZoneInfo, after_ms: int) -> Iterator[int]:
    # cronsim works in whole seconds and yields instants strictly after its start.
    start = datetime.fromtimestamp(after_ms // 1000, tz=UTC).astimezone(zone)
    for moment in CronSim(expression, start):
        yield int(moment.timestamp()) * 1000


def _elapsed_instants(expression: str, zone: ZoneInfo, after_ms: int) -> Iterator[int]:
    """Every real instant whose local time matches, increasing (maybe some <= after_ms).

    Naive local matches come in increasing local time. Their first-pass instants
    (fold=0) increase with local time, and so do their second-pass ones (fold=1),
    so an instant is final once it is below the first-pass instant of the latest
    match: nothing later in the naive sequence can come before it.
    """
    pending: list[int] = []
    for naive in CronSim(expression, _earliest_local_time(zone, after_ms // 1000)):
        first, instants = _real_instants(naive, zone)
        for instant in instants:
            heapq.heappush(pending, instant)
        while pending and pending[0] <= first:
            yield heapq.heappop(pending) * 1000


def _earliest_local_time(zone: ZoneInfo, after_s: int) -> datetime:
    """A naive local time before that of every instant after ``after_s``.

    After a fall-back the local time drops: a local time earlier than that of
    ``after_s`` may still have its second pass ahead. The lowest offset of the
    next day (sampled hourly; no offset change is shorter) covers that.
    """
    moment = datetime.fromtimestamp(after_s, tz=UTC)
    lowest = min(
        _offset(zone, moment + timedelta(hours=hours)) for hours in range(_FALL_BACK_HORIZON_H)
    )
    # One second back, since cronsim yields matches strictly after its start.
    return (moment + lowest).replace(tzinfo=None) - timedelta(seconds=1)


def _offset(zone: ZoneInfo, moment: datetime) -> timedelta:
    offset = moment.astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always knows its offset at an aware instant
    return offset


def _real_instants(naive: datetime, zone: ZoneInfo) -> tuple[int, list[int]]:
    """The first-pass epoch second of a local time, and the epoch seconds that have it."""
    first = int(naive.replace(tzinfo=zone, fold=0).timestamp())
    instants = []
    for fold in (0, 1):
        epoch = int(naive.replace(tzinfo=zone, fold=fold).timestamp())
        # A skipped local time does not come back from UTC: it has no instant.
        if datetime.fromtimestamp(epoch, tz=zone).replace(tzinfo=None) != naive:
            continue
        if epoch not in instants:
            instants.append(epoch)
    return first, instants


def _parse_catch_up(catch_up: str) -> CatchUp:
    try:
        return CatchUp(catch_up.strip().lower() if isinstance(catch_up, str) else catch_up)
    except ValueError:
        raise RecurrenceError(f"invalid --catch-up {catch_up!r}: use skip or all") from None


def _parse_window(mode: CatchUp, window: str | int | None) -> int | None:
    if mode is CatchUp.SKIP:
        if window is not None:
            raise RecurrenceError("--catch-up-window applies to --catch-up all only")
        return None
    if window is None:
        raise RecurrenceError(
            "--catch-up all needs --catch-up-window (how far back missed runs are still run)"
        )
    try:
        return parse_duration(window)
    except DurationError as exc:
        raise RecurrenceError(f"invalid --catch-up-window: {exc}") from None


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RecurrenceError(
            f"unknown time zone {name!r}: use an IANA name such as UTC or Europe/Paris"
        ) from None


def _expand(expression: str) -> str:
    return NICKNAMES.get(expression.lower(), expression)


def _cron_fields(expression: str) -> None:
    """Refuse what cronsim refuses, quoting its reason, and anything but 5 fields."""
    if expression.startswith("@") and expression.lower() not in NICKNAMES:
        names = ", ".join(NICKNAMES)
        raise RecurrenceError(f"invalid cron expression {expression!r}: nicknames are {names}")
    fields = _expand(expression).split()
    if len(fields) != 5:
        raise RecurrenceError(
            f"invalid cron expression {expression!r}: expected 5 fields "
            f"(minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    try:
        CronSim(_expand(expression), _VALIDATION_INSTANT)
    except CronSimError as exc:
        raise RecurrenceError(f"invalid cron expression {expression!r}: {exc}") from None
