"""Logs for reaped tasks that never got one: the reaper writes a one-line log for them.

A worker killed between a claim's reply and writing the start to its zygote leaves
claimed tasks that no process ever ran, so no log file exists anywhere; the reaper
fails them. A grace period after it reaped a task, the reaping worker looks again: a
task that still has no ``log_url`` gets a log of one line, ``killed: the worker
process exited before the task started``, through its own spool and shipper.

The grace is there for the logs that do exist, in the dead instance's spool: a worker
on that host takes the spool over and uploads them, and their ``log_url`` is set first.
A spool taken over later than the grace uploads the real log under the same object
name, which replaces the one-line log (docs/logs.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..logs.shipper import LogShipper
from ..logs.taskoutput import TaskOutput
from ..store.keys import Keys

GRACE_S = 5.0
"""How long after a reap the reaping worker waits for a log to be uploaded by others."""

NEVER_STARTED = "killed: the worker process exited before the task started"


class OrphanLogs:
    """Reaped tasks to look at again once their grace is over."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._waiting: list[tuple[float, str]] = []

    def reaped(self, task_ids: list[str]) -> None:
        """The reaper failed (or retried) these: look at them again after the grace."""
        due = self._now() + GRACE_S
        self._waiting += [(due, t) for t in task_ids]

    def take_due(self) -> list[str]:
        """The tasks whose grace is over (each once)."""
        now = self._now()
        due = [t for at, t in self._waiting if at <= now]
        self._waiting = [(at, t) for at, t in self._waiting if at > now]
        return due


def write_missing(
    task_ids: list[str],
    redis: Any,
    keys_of: Callable[[str], Keys],
    spool_path: Callable[[str], Path],
    shipper: LogShipper,
) -> int:
    """Give each ended task of ``task_ids`` that has no log yet a one-line log, shipped
    like any other; returns how many it wrote. ``keys_of``: a task id's partition keys;
    ``spool_path``: where this instance's spool keeps a task's log."""
    written = 0
    for task_id in task_ids:
        keys = keys_of(task_id)
        fields = redis.hmget(keys.task(task_id), ["status", "log_url", "job", "started_at"])
        status, log_url, job, started_at = fields
        if status in (None, "pending", "running") or log_url:
            continue  # trimmed, retried (its next attempt logs), or it has its log
        path = spool_path(task_id)
        if path.exists():
            continue  # this worker's own log of it, on its way
        try:
            output = TaskOutput(path, task_id=task_id, job=str(job), max_bytes=1 << 20)
        except OSError:
            continue  # as for a start: a log that cannot be made is not made
        output.attach(os.getpid())
        output.finish(NEVER_STARTED)
        shipper.submit(task_id, str(job), int(started_at or 0))
        written += 1
    return written
