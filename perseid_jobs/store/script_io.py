"""What the Lua scripts take and return, as types (see each script's header in ``lua/``).

Each reply is an array whose first element is the script's code (``errors.Code``);
a reply Struct is ``array_like`` with that code as its tag, so msgspec picks the
Struct of a union by the code and decodes the rest by position, once, here.
:class:`~perseid_jobs.store.scripts.Scripts` has one method per script that builds
its ARGV from named arguments and returns these. ``tests/test_scripts.py``
checks that each Struct has as many fields as its script returns.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from ..core.errors import Code


class ClaimedTask(msgspec.Struct, array_like=True):
    """A task record as the claim script returns it (see lua/claim.lua)."""

    id: str
    job: str
    args: str
    attempt: str
    started_at: str
    start_at: str
    max_ms: str
    slots: str
    series: str | None
    last_completed_at: str | None
    skipped_runs: str | None
    spec: str
    origin: str
    # Its parents, comma-separated ("": none); None where no claim made the record (an
    # adopted task: its parents are read from its hash).
    parents: str | None = None


class Need(msgspec.Struct, array_like=True):
    """A series run reap or deregister left running: it needs its next start from the caller."""

    task_id: str
    spec: str
    origin: str
    start_at: str


class NextStart(msgspec.Struct, array_like=True):
    """The next start a caller computed for a series run (ARGV of reap and deregister)."""

    task_id: str
    start: str  # ms as text, or "" for no next run
    skipped: int


class Refusal(msgspec.Struct, array_like=True):
    """A reply with an error code: the script changed nothing (its tag is the code)."""

    code: ClassVar[Code]


class LeaseLapsed(Refusal, tag=int(Code.LEASE_LOST)):
    """{-1}: the instance is unknown or its lease lapsed; it must fence."""

    code = Code.LEASE_LOST


class NotFound(Refusal, tag=int(Code.NOT_FOUND)):
    """{-2}: no such task (or series)."""

    code = Code.NOT_FOUND


class AlreadyEnded(Refusal, tag=int(Code.ALREADY_ENDED)):
    """{-3, status}: the task (or series) already ended."""

    code = Code.ALREADY_ENDED
    status: str


class ParentUnknown(Refusal, tag=int(Code.PARENT_NOT_FOUND)):
    """{-4}: the --after task does not exist."""

    code = Code.PARENT_NOT_FOUND


class BadParents(Refusal, tag=int(Code.BAD_PARENTS)):
    """{-18}: fan-in parents repeated or too many (the client checks first)."""

    code = Code.BAD_PARENTS


class KeyHeld(Refusal, tag=int(Code.KEY_CONFLICT)):
    """{-5, holder, its fingerprint, its series or ""}: the key stands for another request."""

    code = Code.KEY_CONFLICT
    holder: str
    fingerprint: str
    series: str


class NotEnded(Refusal, tag=int(Code.NOT_ENDED)):
    """{-7, status}: the task is pending or running (retry.lua)."""

    code = Code.NOT_ENDED
    status: str


class Claimed(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """claim.lua's reply (also the last part of finish.lua's)."""

    now: int
    next_due: int  # ms, -1 if nothing is pending
    cancels: list[str]  # running task ids flagged for cancel
    tasks: list[ClaimedTask]
    now_us_past_ms: int  # microseconds past `now`'s millisecond


class Looked(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """look.lua's reply: the next due time, and whether something is due now."""

    now: int
    next_due: int  # ms, -1 if nothing is pending; `now` when something is due now
    due_now: int
    cancels: list[str]
    now_us_past_ms: int


LookReply = Looked | LeaseLapsed


class Finished(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """finish.lua's reply: a code per outcome (0 recorded, -6 stale), then the claim, then
    how many deliveries it put in the outbox."""

    codes: list[int]
    claim: Claimed | LeaseLapsed
    outbox: int


class Renewed(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """heartbeat.lua's reply."""

    now: int
    lease_expiry: int
    cancels: list[str]


class Registered(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """register.lua's reply."""

    now: int
    lease_expiry: int


class Republished(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """republish.lua's reply: job names no live instance offers any more."""

    now: int
    dropped: list[str]


class Deregistered(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """deregister.lua's reply; the instance stays while ``needs`` is not empty."""

    failed: int
    needs: list[Need]


class Reaped(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """reap.lua's reply."""

    now: int
    reaped: list[str]
    needs: list[Need]


class Drained(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """drain.lua's reply."""


class Cancelled(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """cancel.lua's reply for a task id."""

    status: str  # after the call: "cancelled", "running", or the status it had ended with
    series_ended: int


class SeriesCancelled(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """cancel.lua's reply for a series id."""

    kind: str  # "series"
    series_ended: int
    current: str
    current_status: str


class Delivered(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """deliver.lua's reply."""

    applied: int
    outbox: int  # deliveries it put in the target partition's own outbox


class Acked(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """outbox_ack.lua's reply."""

    removed: int


class LogUrlsSet(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """set_log_url.lua's reply."""

    recorded: int


class ProgressSet(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """progress.lua's reply."""

    recorded: int


class Served(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """served.lua's reply."""

    live: int
    serving: int  # live, offering the job and not draining


class Paused(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """pause.lua's reply."""

    changed: int  # 1: it was not paused (or resumed) already
    reopened: int  # lanes a resume let go in this call
    held: int  # lanes still held back by this pause


class Scheduled(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """schedule.lua's reply."""

    task_id: str
    existed: int
    now: int
    start: int  # ms, -1 when waiting or cancelled
    task_hash: list[str]  # flat field/value list; empty unless asked for
    parent_status: str  # of the --after task if it had already ended, else ""


class Triggered(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """trigger.lua's reply."""

    task_id: str
    task_hash: list[str]  # flat field/value list


class Retried(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """retry.lua's reply."""

    task_id: str
    existed: int  # 1: the task had been retried already; this is that retry
    task_hash: list[str]


class BulkDone(msgspec.Struct, array_like=True, tag=int(Code.OK)):
    """bulk.lua's reply."""

    matched: int  # acted on, or (a dry run) that would be


class ScheduleArgs(msgspec.Struct, kw_only=True):
    """schedule.lua's ARGV, by name."""

    job: str
    args: str  # JSON object text
    slots: int
    max_ms: int
    at_ms: int | None = None  # absolute start; None: now plus delay_ms
    delay_ms: int = 0
    key: str = ""
    after: str = ""
    spec: str = ""  # recurrence (JSON text), "" for a one-off task
    origin: str = ""  # grid origin (ms), "" for the start time
    retries: int = 0
    backoff_ms: int = 1000
    request_id: str = ""
    with_hash: bool = False  # the reply carries the task's hash
    fingerprint: str = ""
    parent_partition: int | None = None  # the --after task's, when in another partition
    group: str = ""
    priority: int = 0
    tags: str = ""  # "key=value" lines, sorted; "" for none
    more_parents: str = ""  # fan-in: the parents after `after`, "id:partition" comma-separated

    def argv(self) -> list[str | int]:
        """In the order of schedule.lua's header."""
        start = "" if self.at_ms is None else self.at_ms
        return [self.job, self.args, self.slots, self.max_ms, start, self.delay_ms, self.key,
                self.after, self.spec, self.origin, self.retries, self.backoff_ms,
                self.request_id, "1" if self.with_hash else "0", self.fingerprint,
                "" if self.parent_partition is None else self.parent_partition,
                self.group, self.priority, self.tags, self.more_parents]  # fmt: skip


ScheduleReply = Scheduled | ParentUnknown | KeyHeld | BadParents
ClaimReply = Claimed | LeaseLapsed
CancelReply = Cancelled | NotFound | AlreadyEnded
SeriesCancelReply = SeriesCancelled | NotFound | AlreadyEnded
PauseReply = Paused | NotFound | AlreadyEnded
TriggerReply = Triggered | NotFound | AlreadyEnded
RetryReply = Retried | NotFound | NotEnded
