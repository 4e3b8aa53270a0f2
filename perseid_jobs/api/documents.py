"""The documents the reads return: what ``--json`` prints and what the dashboard's ``/api/`` serves.

One place builds them so that the command line and the dashboard never drift: each
function returns msgspec Structs (or a dict of them) that :func:`perseid_jobs.core.models.to_json`
encodes the same way for both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..core.errors import TaskNotFound
from ..core.models import Instance, JobInfo, Series, Task, TaskStatus

if TYPE_CHECKING:
    from .client import Client


def task_document(client: Client, task_id: str) -> Task:
    """``show TASK --json``: the task, with why it waits when it is pending."""
    task = client.get(task_id)
    task.waiting = client.waiting(task)
    return task


def series_document(client: Client, series_id: str) -> dict[str, Any]:
    """``show SERIES --json``: the series, its current run (or null) and its last ended runs."""
    series = client.get_series(series_id)
    current = None
    if series.current:
        with contextlib.suppress(TaskNotFound):  # ended and trimmed since: there is none
            current = client.get(series.current)
    recent = client.series_runs(series_id)
    return {"series": series, "current_run": current, "recent_runs": recent}


def show_document(client: Client, some_id: str) -> Task | dict[str, Any]:
    """``show ID --json``: a task's document or a series' (raises UnknownId)."""
    if client.kind_of(some_id) == "task":
        return task_document(client, some_id)
    return series_document(client, some_id)


def tasks_document(
    client: Client,
    *,
    status: TaskStatus | str | None = None,
    job: str | None = None,
    limit: int = 100,
    waiting: str | None = None,
    tag: str | Iterable[str] | None = None,
    args_contains: str | None = None,
) -> list[Task]:
    """``tasks --json``: tasks by status (pending/running oldest first, ended newest first)."""
    return client.tasks(
        status=status,
        job=job,
        limit=limit,
        waiting=waiting,
        tag=tag,
        args_contains=args_contains,
    )


def series_list_document(client: Client, *, limit: int = 100) -> list[Series]:
    """``series --json``: recurring schedules, newest first."""
    return client.series(limit=limit)


def workers_document(client: Client) -> list[Instance]:
    """``workers --json``: the live instances, by id."""
    return client.workers()


def jobs_document(client: Client) -> list[JobInfo]:
    """``jobs --json``: the catalog and the live instances that can run each job."""
    return client.jobs()
