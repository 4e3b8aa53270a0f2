"""Named exceptions, each with a message a user can act on.

The Lua scripts return negative integer codes; :func:`raise_for_code` turns
them into these exceptions, so a failure reads as a sentence, not as ``-3``.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for an annotation only: job processes import this module, keep it light
    from .models import Task


class Code(IntEnum):
    """Error codes returned by the Lua scripts (see each script's header)."""

    OK = 0
    LEASE_LOST = -1
    NOT_FOUND = -2
    ALREADY_ENDED = -3
    PARENT_NOT_FOUND = -4
    KEY_CONFLICT = -5
    STALE = -6
    NOT_ENDED = -7
    BAD_PARENTS = -18  # fan-in parents repeated or too many (issue 18: far from others' codes)


class PerseidError(Exception):
    """Base class of every error perseid-jobs raises on purpose."""

    exit_code = 1


class ConfigError(PerseidError):
    """A setting or an argument cannot be used."""

    exit_code = 2


class InvalidJobName(ConfigError):
    """A job name that is not a plain file stem."""


class UnknownJob(ConfigError):
    """No worker published the job and no local file defines it."""


class InvalidArgs(ConfigError):
    """Task arguments that are not a JSON object of acceptable size."""


class InvalidTime(ConfigError):
    """A time (``--at``) that cannot be parsed."""


class JobDefinitionError(ConfigError):
    """A job file that cannot be imported or does not define one job."""


class TaskNotFound(PerseidError):
    """No task with this id."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r}: check the id with `perseid-jobs tasks`")
        self.task_id = task_id


class UnknownId(TaskNotFound):
    """No task and no series with this id (the commands that take either)."""

    def __init__(self, some_id: str) -> None:
        PerseidError.__init__(
            self,
            f"no task or series with id {some_id!r}: check the id with `perseid-jobs tasks`"
            " or `perseid-jobs series`",
        )
        self.task_id = some_id


class SeriesNotFound(PerseidError):
    """No series with this id."""

    def __init__(self, series_id: str) -> None:
        super().__init__(
            f"no series with id {series_id!r}: check the id with `perseid-jobs series`"
        )
        self.series_id = series_id


class SeriesAlreadyEnded(PerseidError):
    """The series is no longer active; nothing to cancel."""

    def __init__(self, series_id: str, status: str) -> None:
        super().__init__(f"series {series_id} already ended ({status}); nothing to cancel")
        self.series_id = series_id
        self.status = status


class WaitTimeout(PerseidError, TimeoutError):
    """``wait`` gave up: the task had not ended when the timeout passed.

    A ``TimeoutError`` too, so code that handles timeouts in general catches it.
    ``task`` is the task as last read (still pending or running).
    """

    # What `timeout(1)` exits with: scripts already read 124 as "timed out".
    exit_code = 124

    def __init__(self, task: Task, timeout_s: float) -> None:
        super().__init__(
            f"task {task.id} is still {task.status.value} after {timeout_s:g}s;"
            " wait longer (--timeout) or check it with `perseid-jobs show`"
        )
        self.task = task
        self.timeout_s = timeout_s


class SeriesEnded(PerseidError):
    """A series that ended (or was cancelled) cannot be paused or resumed."""

    def __init__(self, series_id: str, status: str) -> None:
        super().__init__(f"series {series_id} has ended ({status}): nothing to pause or resume")
        self.series_id = series_id
        self.status = status


class TriggerEnded(SeriesEnded):
    """``trigger`` of a series that ended (or was cancelled): it has no runs to add to."""

    def __init__(self, series_id: str, status: str) -> None:
        PerseidError.__init__(
            self,
            f"series {series_id} has ended ({status}): nothing to trigger; schedule the job"
            " again for new runs (`perseid-jobs schedule JOB --every ...`)",
        )
        self.series_id = series_id
        self.status = status


class TaskNotEnded(PerseidError):
    """``retry`` of a task that is pending or running: it has not failed (yet)."""

    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(
            f"task {task_id} is {status}, not ended: only an ended task can be retried;"
            f" wait for it (`perseid-jobs wait {task_id}`) or cancel it first"
        )
        self.task_id = task_id
        self.status = status


class InvalidTag(InvalidArgs):
    """A tag that is not ``key=value`` within the documented limits."""


class TaskAlreadyEnded(PerseidError):
    """The task is in a terminal state; nothing to do."""

    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(f"task {task_id} already ended ({status}); nothing to cancel")
        self.task_id = task_id
        self.status = status


class ParentNotFound(ConfigError):
    """``--after`` names a task that does not exist."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"--after {task_id}: no such task; check the id with `perseid-jobs tasks`")


class InvalidParents(ConfigError):
    """``--after`` given the same task twice, or more parents than a fan-in allows."""


class KeyConflict(ConfigError):
    """``--key`` is held by a live task that a different request made (idempotency keys
    stand for one request: reusing one for another is a mistake, not a retry)."""

    def __init__(self, key: str, task_id: str, series: str, differs: list[str]) -> None:
        held = f"task {task_id}" + (f" of series {series}" if series else "")
        free = f"cancel {task_id}" + (" --series" if series else "")
        super().__init__(
            f"--key {key!r} is held by {held}, scheduled with a different"
            f" {', '.join(differs)}: use another key, or free this one (`perseid-jobs {free}`)"
        )
        self.key = key
        self.task_id = task_id
        self.series = series
        self.differs = differs


class NotDurable(PerseidError):
    """A durable schedule: no replica confirmed the task in time (it is on the primary)."""

    exit_code = 4

    def __init__(self, task_id: str, timeout_s: float) -> None:
        super().__init__(
            f"task {task_id} is stored on the primary, but no replica confirmed it within"
            f" {timeout_s:g}s, so a failover now could lose it: check the replicas"
            " (INFO replication), or schedule again with the same --key to be sure"
        )
        self.task_id = task_id


class RedisUnavailable(PerseidError):
    """Redis does not answer at the configured URL."""

    exit_code = 3


def raise_for_code(code: int, *, task_id: str = "", detail: str = "") -> None:
    """Raise the exception for a script error ``code`` (no-op for OK)."""
    if code == Code.OK:
        return
    if code == Code.NOT_FOUND:
        raise TaskNotFound(task_id)
    if code == Code.ALREADY_ENDED:
        raise TaskAlreadyEnded(task_id, detail)
    if code == Code.PARENT_NOT_FOUND:
        raise ParentNotFound(task_id)
    raise PerseidError(f"unexpected script reply code {code}")


class DashboardUnprotected(ConfigError):
    """``perseid-jobs dashboard`` asked to listen beyond this machine without a token."""

    def __init__(self, host: str) -> None:
        super().__init__(
            f"--host {host} listens beyond this machine and no token is set: pass --token T"
            " (or PERSEID_DASHBOARD_TOKEN), or --no-auth to serve it unprotected on purpose"
        )
