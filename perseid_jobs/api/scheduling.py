"""A schedule request on either side of its one script call.

Before the call: the checks that need no Redis (arguments, times, recurrence, the
interval floor) and the request's fingerprint, which the script keeps with an
idempotency key. After it: the reply's refusals, and the notices it calls for,
as Python warnings (the command line prints each as one ``warning:`` line).
"""

from __future__ import annotations

import hashlib
import itertools
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

from ..core.durations import format_duration
from ..core.errors import InvalidArgs, InvalidParents, InvalidTime, KeyConflict, ParentNotFound
from ..core.recurrence import RecurrenceError, first_start, make_recurrence
from ..core.when import When, parse_when
from ..store.script_io import BadParents, KeyHeld, ParentUnknown, Scheduled, ScheduleReply
from .served import STACKLEVEL

MAX_ARGS_BYTES = 1024 * 1024

MAX_PARENTS = 100
"""The most parents a fan-in task waits on (``--after`` given up to this many times)."""

MAX_GROUP_CHARS = 128
"""The longest ``group``: a customer or tenant id, not a payload."""

MIN_EVERY_MS = 1000
"""The shortest ``every``: below it a typo (``1ms`` for ``1m``) floods the workers."""

PAST_NOTICE_MS = 1000
"""How far in the past ``at`` must be for a notice: less is the caller's own round trip."""

# What each part of a fingerprint covers, in order, as named in a KeyConflict.
FINGERPRINT_PARTS = ("job", "--args", "recurrence (--every/--cron/--tz/--catch-up)", "--at",
                     "--after", "--group", "--priority")  # fmt: skip


class DependencyEndedWarning(UserWarning):
    """``after`` named a task that had already failed or been cancelled: the new task was
    created cancelled, as it would have been had that task ended a moment later."""


class PastStartWarning(UserWarning):
    """``at`` is in the past by Redis time: the task is due at once."""


class Request(msgspec.Struct, frozen=True):
    """A checked request: what the script is given, and its fingerprint."""

    args: str  # JSON text, as stored
    when: When  # the start the script is given (for a series: its first run)
    at: When  # the start as the caller gave it
    spec: str  # recurrence spec JSON, or ""
    origin: str  # grid origin (ms) of a series, or ""
    fingerprint: str


def prepare(
    job: str,
    args: dict[str, Any] | None,
    *,
    at: datetime | str | None,
    every: str | int | None,
    cron: str | None,
    tz: str | None,
    after: str | None,
    catch_up: str,
    catch_up_window: str | int | None,
    now_ms: Callable[[], int],
) -> Request:
    """Check a request; raises a ConfigError subclass with a one-line message."""
    encoded = encode_args(args)
    given = parse_when(at)
    if after is not None and (at is not None or every is not None or cron is not None):
        raise InvalidTime(
            "--after cannot be combined with --at, --every or --cron: a task after another"
            " starts when that one completes"
        )
    when, spec, origin = given, "", ""
    if every is not None or cron is not None:
        try:
            rec = make_recurrence(
                every=every, cron=cron, tz=tz, catch_up=catch_up, catch_up_window=catch_up_window
            )
        except (RecurrenceError, ValueError) as exc:
            raise InvalidTime(str(exc)) from None
        if rec.every_ms is not None and rec.every_ms < MIN_EVERY_MS:
            raise InvalidTime(
                f"--every {every!r} is under the 1s floor (a series runs at most once a"
                " second): give 1s or more; a minute is 1m"
            )
        spec = msgspec.json.encode(rec).decode()
        at_ms = given.absolute_ms(now_ms) if (cron or given.delay_ms) else given.at_ms
        if at_ms is not None:
            origin = str(at_ms)
            when = When(at_ms=first_start(rec, at_ms))
    elif tz is not None or catch_up != "skip" or catch_up_window is not None:
        raise InvalidTime("--tz and --catch-up apply to --every/--cron series only")
    parts = (job, orjson.dumps(args or {}, option=orjson.OPT_SORT_KEYS).decode(), spec,
             _start_text(given), after or "")  # fmt: skip
    return Request(encoded, when, given, spec, origin, fingerprint(parts))


def check_parents(after: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """The parents of ``after`` (one id, or a fan-in's ids), else raise with the fix."""
    if after is None:
        return []
    parents = [after] if isinstance(after, str) else list(after)
    if not parents or not all(isinstance(p, str) and p for p in parents):
        raise InvalidParents("--after: give task ids (one or more), e.g. --after A --after B")
    if len(parents) > MAX_PARENTS:
        raise InvalidParents(
            f"--after given {len(parents)} times; a task waits on at most {MAX_PARENTS}"
            " parents: group them behind intermediate tasks"
        )
    twice = next((p for i, p in enumerate(parents) if p in parents[:i]), None)
    if twice is not None:
        raise InvalidParents(f"--after {twice} given twice: name each parent once")
    return parents


def parents_text(after: str | list[str] | tuple[str, ...] | None) -> str | None:
    """The checked parents as the script and the fingerprint take them: comma-separated."""
    return ",".join(check_parents(after)) or None


def check_group(group: str | None) -> str:
    """``group`` as stored ("" for none), else raise with the fix."""
    if group is None:
        return ""
    if (
        not group
        or len(group) > MAX_GROUP_CHARS
        or any(ord(c) < 32 or ord(c) == 127 for c in group)
    ):
        raise InvalidArgs(
            f"--group {group[:40]!r}: give 1-{MAX_GROUP_CHARS} characters without control"
            " characters (a customer or tenant id)"
        )
    return group


def fingerprint(parts: tuple[str, ...]) -> str:
    """One short hash per part, so a mismatch can say which part differs."""
    return ".".join(hashlib.sha256(p.encode()).hexdigest()[:12] for p in parts)


def with_flow(fp: str, group: str, priority: int) -> str:
    """A request's fingerprint with its group and priority as last parts (none when it has
    neither, so the fingerprints of keys held from before they existed still match)."""
    return f"{fp}.{fingerprint((group, str(priority)))}" if group or priority else fp


def check_priority(priority: int) -> int:
    """``priority`` if it is an integer from -100 to 100, else raise with the fix."""
    if not isinstance(priority, int) or isinstance(priority, bool) or not -100 <= priority <= 100:
        raise InvalidArgs(
            f"--priority {priority!r}: give an integer from -100 to 100 (higher runs first;"
            " 0 is the default)"
        )
    return priority


def differences(held: str, asked: str) -> list[str]:
    """The names of the parts in which two fingerprints differ."""
    pairs = itertools.zip_longest(held.split("."), asked.split("."), fillvalue="")
    names = [n for n, (a, b) in zip(FINGERPRINT_PARTS, pairs, strict=False) if a != b]
    return names or ["request"]


def _start_text(when: When) -> str:
    # The start as asked for, not as resolved: `--at +10m` repeated is the same request.
    if when.at_ms is not None:
        return f"@{when.at_ms}"
    return f"+{when.delay_ms}" if when.delay_ms else ""


def check_reply(reply: ScheduleReply, *, key: str, req: Request, after: str) -> Scheduled:
    """Raise the error a refused schedule reply stands for; the reply when it succeeded."""
    if isinstance(reply, KeyHeld):
        differs = differences(reply.fingerprint, req.fingerprint)
        raise KeyConflict(key, reply.holder, reply.series, differs)
    if isinstance(reply, ParentUnknown):
        raise ParentNotFound(after)
    if isinstance(reply, BadParents):
        raise InvalidParents(f"--after {after}: parents repeated or more than {MAX_PARENTS}")
    return reply


def notify(reply: Scheduled, *, req: Request, after: str) -> None:
    """Warn about what a request did that its caller may not expect."""
    if reply.existed:
        return  # an existing task: this request made nothing
    task_id, now, start, parent = reply.task_id, reply.now, reply.start, reply.parent_status
    if parent in ("failed", "cancelled") and "," in after:
        after = named_parent(reply, after)
    if parent in ("failed", "cancelled"):
        ended = "already failed" if parent == "failed" else "was already cancelled"
        warnings.warn(
            f"--after {after}: that task {ended}, so task {task_id} was created cancelled"
            f" (dependency {after} {parent})",
            DependencyEndedWarning,
            stacklevel=STACKLEVEL,
        )
    at_ms = req.at.at_ms
    # Judged by the script's clock (Redis's), like every start.
    if at_ms is not None and start >= 0 and now - start >= PAST_NOTICE_MS:
        ago = format_duration(max(1000, round((now - at_ms) / 1000) * 1000))
        shown = datetime.fromtimestamp(at_ms / 1000, UTC).isoformat(timespec="milliseconds")
        warnings.warn(
            f"--at {shown.replace('+00:00', 'Z')} is {ago} ago by Redis time; runs now",
            PastStartWarning,
            stacklevel=STACKLEVEL,
        )


def named_parent(reply: Scheduled, after: str) -> str:
    """The parent a task created cancelled names (``dependency <id> failed``), else ``after``:
    of a fan-in's parents, the one that settled it."""
    fields = dict(zip(reply.task_hash[::2], reply.task_hash[1::2], strict=True))
    words = str(fields.get("reason", "")).split(" ")
    return words[1] if len(words) == 3 and words[0] == "dependency" else after


def encode_args(args: Any) -> str:
    """Task arguments as JSON text: a JSON object of at most 1 MiB."""
    if args is None:
        return "{}"
    if not isinstance(args, dict):
        raise InvalidArgs(
            f"task arguments must be a JSON object, got {type(args).__name__};"
            " e.g. --args '{\"n\": 1}'"
        )
    try:
        data = orjson.dumps(args)
    except TypeError as exc:
        raise InvalidArgs(f"task arguments are not JSON-serialisable: {exc}") from None
    if len(data) > MAX_ARGS_BYTES:
        raise InvalidArgs(
            f"task arguments are {len(data)} bytes; the limit is {MAX_ARGS_BYTES} (1 MiB):"
            " pass a reference (a path or URL) instead of the data"
        )
    return data.decode()
