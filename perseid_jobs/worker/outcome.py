"""How a task ended, from the worker's point of view, and the next run of its series."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import msgspec

from ..core.durations import format_duration
from ..core.models import TaskStatus
from ..core.recurrence import Recurrence, next_run
from ..launch.runtime import EXIT_CANCELLED, EXIT_COMPLETED
from ..store.script_io import ClaimedTask, Need, NextStart

__all__ = ["ClaimedTask", "Outcome", "Running"]  # ClaimedTask: where its users import it from

_recurrence_decoder = msgspec.json.Decoder(Recurrence)


class Outcome(msgspec.Struct):
    """One finished task, as passed to lua/finish.lua."""

    id: str
    token: str
    status: TaskStatus
    exit_code: str
    reason: str
    next_start: str = ""
    skipped: int = 0
    result: str = ""  # what the job returned, as JSON text ("" for none)


def outcome_of_status(wait_status: int) -> tuple[TaskStatus, str, str]:
    """(status, exit code text, default reason) for a ``waitpid`` status."""
    code = os.waitstatus_to_exitcode(wait_status)
    if code == EXIT_COMPLETED:
        return TaskStatus.COMPLETED, "0", ""
    if code == EXIT_CANCELLED:
        return TaskStatus.CANCELLED, "100", "cancelled by the job (exit 100)"
    if code < 0:
        name = signal.Signals(-code).name
        return TaskStatus.FAILED, str(code), f"killed by signal {name}"
    return TaskStatus.FAILED, str(code), f"exit code {code}"


def series_next(task: ClaimedTask, now_ms: int) -> tuple[str, int]:
    """(next start as ARGV text, skipped runs) for a run of a series ending at ``now_ms``."""
    if not task.series or not task.spec:
        return "", 0
    return next_from_spec(task.spec, task.origin, task.start_at, now_ms)


def given_next_starts(needs: list[Need], now_ms: int) -> list[NextStart]:
    """The next starts reap/deregister asked for (series runs they left running)."""
    given = []
    for n in needs:
        nxt, skipped = next_from_spec(n.spec, n.origin, n.start_at, now_ms)
        given.append(NextStart(n.task_id, nxt, skipped))
    return given


def next_from_spec(spec: str, origin: str, start_at: str, now_ms: int) -> tuple[str, int]:
    """Next start of a series given its stored spec, grid origin and the ending run's start."""
    rec = _recurrence_decoder.decode(spec)
    nxt = next_run(rec, origin_ms=int(origin), current_start_ms=int(start_at), now_ms=now_ms)
    return str(nxt.start_ms), nxt.skipped


def run_key(task: ClaimedTask) -> tuple[str, str, str]:
    """What identifies one run of a task, even across a failover that lost writes."""
    return (task.id, str(task.attempt), str(task.started_at))


# Task hash fields a reconcile reads: the first 10 rebuild a ClaimedTask after its id.
TASK_FIELDS = (
    "job",
    "args",
    "attempt",
    "started_at",
    "start_at",
    "max_ms",
    "slots",
    "series",
    "last_completed_at",
    "skipped_runs",
    "status",
    "instance",
    "deadline",
)


class Running(msgspec.Struct):
    """A task this instance runs."""

    task: ClaimedTask
    instance: str
    started_mono: float
    deadline_mono: float
    pid: int | None = None
    kill_at: float | None = None
    forced: tuple[TaskStatus, str] | None = None

    @classmethod
    def begin(cls, task: ClaimedTask, instance: str, max_s: float | None = None) -> Running:
        """A task starting now, timed out ``max_s`` from now (default: its max duration)."""
        now = time.monotonic()
        limit = int(task.max_ms) / 1000 if max_s is None else max_s
        return cls(task=task, instance=instance, started_mono=now, deadline_mono=now + limit)

    @property
    def slots(self) -> int:
        """The slots the task takes while it runs."""
        return int(self.task.slots)

    def verdict(self, wait_status: int, reason: str) -> tuple[TaskStatus, str, str]:
        """(status, exit code text, reason) of its ended process, as the zygote reported it.

        ``reason``: what the task said (an exception, a sys.exit); a forced stop
        (timeout, cancel) decides the status and reason whatever the process did.
        """
        status, code, default = outcome_of_status(wait_status)
        if reason:
            default = f"{default}: {reason}" if status is TaskStatus.FAILED else reason
        if self.forced is not None:
            status, default = self.forced
        return status, code, default

    def kill(self, sig: int) -> None:
        """Signal the task's whole process group (nothing before its pid is known)."""
        if self.pid is None:
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def stop(self, status: TaskStatus, reason: str, grace_s: float) -> None:
        """SIGTERM now, SIGKILL after ``grace_s``; report ``status`` when it exits."""
        if self.forced is not None:
            return
        self.forced = (status, reason)
        self.kill_at = time.monotonic() + grace_s
        self.kill(signal.SIGTERM)

    def kill_due(self, now: float) -> bool:
        """True if :meth:`enforce_deadline` would signal the task now."""
        if self.forced is None:
            return now >= self.deadline_mono
        return self.kill_at is not None and now >= self.kill_at

    def enforce_deadline(self, now: float, grace_s: float) -> None:
        """Time the task out past its max duration; SIGKILL it past its grace."""
        if self.forced is None and now >= self.deadline_mono:
            limit = format_duration(int(self.task.max_ms))
            self.stop(TaskStatus.FAILED, f"timeout after {limit}", grace_s)
        elif self.kill_at is not None and now >= self.kill_at:
            self.kill(signal.SIGKILL)
            self.kill_at = None
