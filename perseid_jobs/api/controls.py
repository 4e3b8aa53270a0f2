"""Operator controls: trigger a series now, retry a task, retry or cancel in bulk.

:class:`Controls` is a mixin of :class:`perseid_jobs.api.client.Client` (docs/controls.md).
A bulk action reads the matching state's index of each partition in pages (``ZRANGE``
of :data:`READ_PAGE` ids) and hands the ids to ``bulk.lua`` a small batch at a time
(:data:`BULK_BATCH`), which judges and acts on each atomically: no call holds Redis for
long, whatever the number of matches, and a repeated action finds nothing left to do.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..core.errors import (
    InvalidArgs,
    InvalidTime,
    SeriesNotFound,
    TaskNotEnded,
    TaskNotFound,
    TriggerEnded,
)
from ..core.jobfile import validate_job_name
from ..core.models import Task, TaskStatus, task_from_hash
from ..store.keys import Keys
from ..store.script_io import AlreadyEnded, NotEnded, NotFound
from .partitioned import Partitioned
from .scheduling import check_group

BULK_BATCH = {"retry": 25, "cancel": 50}
"""Task ids per ``bulk.lua`` call, by action: about 1 ms of Redis time each (a retry costs
some 37 µs a task, a cancel 18 µs; docs/controls.md has the measurement)."""

READ_PAGE = 500
"""Ids per ``ZRANGE`` while a bulk action reads an index."""

_RETRYABLE = ("failed", "cancelled", "completed")
_CANCELLABLE = ("pending", "running")
# Where the tasks of each status are listed, in the order they move through (see tasks()).
_INDEXES = {
    "pending": ("blocked", "held", "due"),
    "running": ("running",),
}


def _task(task_id: str, flat: list[str]) -> Task:
    return task_from_hash(task_id, dict(zip(flat[::2], flat[1::2], strict=True)))


def _status(status: TaskStatus | str, allowed: tuple[str, ...], what: str) -> str:
    value = status.value if isinstance(status, TaskStatus) else status
    if value not in allowed:
        raise InvalidArgs(
            f"--status {value!r}: {what} takes {', '.join(allowed)} (default {allowed[0]})"
        )
    return value


class Controls(Partitioned):
    """Trigger, retry and the bulk actions over all partitions; needs ``redis``."""

    redis: Any

    def trigger(self, series_id: str) -> Task:
        """Start one extra run of an active series now; return it.

        The run has ``metadata["triggered"] = True``; the series' grid, its current run and
        its skipped count do not change. It is claimed like any task, so the job's limits
        and a pause of its job or group apply (a pause of the series itself does not hold
        it). Raises SeriesNotFound, or TriggerEnded (a SeriesEnded) for an ended series.
        """
        keys = self.keys_of(series_id)
        if keys is None:
            raise SeriesNotFound(series_id)
        reply = self.scripts_in(keys).trigger(series_id, uuid.uuid4().hex)
        if isinstance(reply, NotFound):
            raise SeriesNotFound(series_id)
        if isinstance(reply, AlreadyEnded):
            raise TriggerEnded(series_id, reply.status)
        return _task(reply.task_id, reply.task_hash)

    def retry(self, task_id: str) -> Task:
        """A new task with the ended task's job, args, group, priority and tags, due now.

        The new task's ``retry_of`` names the old one, whose ``retried_by`` names the new
        one; the old one otherwise stays as it ended. A task retried already returns that
        retry (``existed=True``) and makes no other. Raises TaskNotFound, or TaskNotEnded
        for a pending or running task.
        """
        keys = self.keys_of(task_id)
        if keys is None:
            raise TaskNotFound(task_id)
        reply = self.scripts_in(keys).retry(task_id, uuid.uuid4().hex)
        if isinstance(reply, NotFound):
            raise TaskNotFound(task_id)
        if isinstance(reply, NotEnded):
            raise TaskNotEnded(task_id, reply.status)
        task = _task(reply.task_id, reply.task_hash)
        task.existed = bool(reply.existed)
        return task

    def retry_many(
        self,
        *,
        job: str | None = None,
        status: str = "failed",
        since: float | None = None,
        dry_run: bool = False,
    ) -> int:
        """Retry every ended task of ``status`` (failed, cancelled or completed), of ``job``
        if given, that ended within the last ``since`` seconds (by Redis time) if given, and
        was not retried yet; return how many (``dry_run``: would be, writing nothing).

        Repeating it retries none of those again (each records ``retried_by``).
        """
        want = _status(status, _RETRYABLE, "retry")
        if job is not None:
            validate_job_name(job)
        if since is not None and not since > 0:
            raise InvalidTime(f"--since {since!r}: give how far back to look, e.g. 1h or 30m")
        floor = None if since is None else self.now_ms() - int(since * 1000)  # type: ignore[attr-defined]
        total = 0
        for keys in self.partitions():
            ids = self._read_index(keys, "finished", newest_first=True, floor=floor)
            total += self._in_batches(
                keys, "retry", ids, status=want, job=job or "", since_ms=floor, dry_run=dry_run
            )
        return total

    def cancel_many(
        self,
        *,
        job: str | None = None,
        status: str = "pending",
        group: str | None = None,
        dry_run: bool = False,
    ) -> int:
        """Cancel every task of ``status`` (pending: at once; running: by its instance), of
        ``job`` and ``group`` if given; return how many (``dry_run``: would be, writing
        nothing). As with ``cancel``, cancelling a series' pending run ends the series.
        """
        want = _status(status, _CANCELLABLE, "cancel")
        if job is not None:
            validate_job_name(job)
        grp = check_group(group)
        total = 0
        parts = self.partitions()
        for keys in parts:
            ids: list[str] = []
            for name in _INDEXES[want]:
                ids += self._read_index(keys, name, newest_first=False)
            total += self._in_batches(
                keys, "cancel", list(dict.fromkeys(ids)), status=want, job=job or "",
                group=grp, dry_run=dry_run, reason="cancelled by user (bulk)",
            )  # fmt: skip
        if not dry_run:
            self.drain_outboxes(list(range(len(parts))))  # dependents in other partitions
        return total

    def _read_index(
        self, keys: Keys, name: str, *, newest_first: bool, floor: int | None = None
    ) -> list[str]:
        """The ids of one index of a partition, a page per call (down to score ``floor``)."""
        key, ids, start = getattr(keys, name), [], 0
        read = self.redis.zrevrange if newest_first else self.redis.zrange
        while True:
            page = read(key, start, start + READ_PAGE - 1, withscores=True)
            ids += [m for m, score in page if floor is None or score >= floor]
            if len(page) < READ_PAGE or (floor is not None and page[-1][1] < floor):
                return ids
            start += READ_PAGE

    def _in_batches(self, keys: Keys, action: str, ids: list[str], **how: Any) -> int:
        scripts = self.scripts_in(keys)
        done = 0
        step = BULK_BATCH[action]
        for i in range(0, len(ids), step):
            done += scripts.bulk(action, ids[i : i + step], **how).matched
        return done
