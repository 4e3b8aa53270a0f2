"""The commands that read or end what is scheduled: show, tasks, cancel, workers, jobs, series."""

from __future__ import annotations

from typing import Annotated

import typer

from ..api import documents
from ..api.client import Client
from ..core.errors import InvalidArgs, TaskNotFound
from ..core.models import Series, Task, TaskStatus
from ..store.connection import DEFAULT_REDIS_URL
from ..store.keys import DEFAULT_NAMESPACE
from .cli_common import (
    JsonOpt,
    LocalOpt,
    NamespaceOpt,
    PartitionsOpt,
    RedisOpt,
    app,
    emit_json,
    errors_as_lines,
    make_client,
    print_rendered,
)
from .cli_controls import DryRunOpt, bulk_line


@app.command()
@errors_as_lines
def show(
    some_id: Annotated[str, typer.Argument(metavar="ID", help="A task id, or a series id.")],
    json: JsonOpt = False,
    local_time: LocalOpt = False,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    partitions: PartitionsOpt = None,
) -> None:
    """Show one task, or one series with its current run and its last ended runs."""
    client = make_client(redis_url, namespace, partitions=partitions)
    doc = documents.show_document(client, some_id)
    if isinstance(doc, Task):
        emit_json(doc) if json else print_rendered(lambda r: r.task_detail(doc))
        return
    if json:
        emit_json(doc)
    else:
        print_rendered(
            lambda r: r.series_detail(doc["series"], doc["current_run"], doc["recent_runs"])
        )


@app.command()
@errors_as_lines
def tasks(
    status: Annotated[
        TaskStatus | None,
        typer.Option(
            metavar="STATUS",
            help="Only tasks in this state: pending, running, completed, failed, cancelled.",
        ),
    ] = None,
    job: Annotated[str | None, typer.Option(metavar="JOB", help="Only tasks of this job.")] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=10000, metavar="N", help="At most this many tasks.")
    ] = 100,
    waiting: Annotated[
        str | None,
        typer.Option(
            metavar="TEXT",
            help="Only pending tasks whose reason to wait contains TEXT (paused, concurrency,"
            " rate limit, due at, after, slots).",
        ),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(metavar="TAG", help="Only tasks with this tag, key=value (repeatable: all)."),
    ] = None,
    args_contains: Annotated[
        str | None,
        typer.Option(metavar="TEXT", help="Only tasks whose args (JSON) contain TEXT."),
    ] = None,
    json: JsonOpt = False,
    local_time: LocalOpt = False,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    partitions: PartitionsOpt = None,
) -> None:
    """List tasks.

    A filter (--job, --waiting, --tag, --args-contains) looks through at most 20 x --limit
    (at least 1,000) tasks per state, or per tag, and partition: a bounded scan.
    """
    client = make_client(redis_url, namespace, partitions=partitions)
    found = documents.tasks_document(
        client, status=status, job=job, limit=limit, waiting=waiting, tag=tag,
        args_contains=args_contains,
    )  # fmt: skip
    emit_json(found) if json else print_rendered(lambda r: r.task_table(found))


@app.command()
@errors_as_lines
def cancel(
    some_id: Annotated[
        str | None,
        typer.Argument(metavar="ID", help="A task id, or a series id; omit it for the bulk form."),
    ] = None,
    series: Annotated[bool, typer.Option("--series", help="End the task's whole series.")] = False,
    status: Annotated[
        str | None,
        typer.Option(metavar="STATUS", help="Bulk: cancel tasks in this state: pending, running."),
    ] = None,
    job: Annotated[str | None, typer.Option(metavar="JOB", help="Bulk: tasks of this job.")] = None,
    group: Annotated[
        str | None, typer.Option(metavar="GROUP", help="Bulk: tasks of this group.")
    ] = None,
    dry_run: DryRunOpt = False,
    json: JsonOpt = False,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    partitions: PartitionsOpt = None,
) -> None:
    """Cancel a task (pending at once, running by its instance), or end a series.

    A series id ends the series and cancels its pending run; a running run finishes.
    Without an id, --job or --group cancels every matching task and prints the count.
    """
    client = make_client(redis_url, namespace, partitions=partitions)
    if some_id is None or status is not None or job is not None or group is not None or dry_run:
        _cancel_many(client, some_id, series, status, job, group, dry_run, json)
        return
    if client.kind_of(some_id) == "series":
        ended = client.cancel_series(some_id)
        emit_json(ended) if json else typer.echo(series_cancel_line(client, ended))
        return
    before = client.get(some_id)
    was = client.get_series(before.series).status if before.series else None
    task = client.cancel(some_id, series=series)
    if json:
        emit_json(task)
        return
    if before.status.terminal:
        line = f"{task.id} had already ended ({before.status.value})"
    elif task.status.terminal:
        line = f"{task.id} cancelled"
    else:
        line = f"{task.id} cancel requested (running)"
    if before.series:
        now = client.get_series(before.series).status
        if was == "active" and now != "active":
            line += f"; series {before.series} cancelled: no further runs"
        elif was != "active":
            line += f"; series {before.series} had already ended ({was})"
        else:
            line += f"; series {before.series} continues (cancel --series ends it)"
    typer.echo(line)


def _cancel_many(
    client: Client,
    some_id: str | None,
    series: bool,
    status: str | None,
    job: str | None,
    group: str | None,
    dry_run: bool,
    json: bool,
) -> None:
    if some_id is not None or series:
        raise InvalidArgs(
            "cancel ID takes no --status, --job, --group or --dry-run (the bulk form takes no"
            " ID or --series): give one"
        )
    if job is None and group is None:
        raise InvalidArgs("cancel: give a task or series id, or --job JOB / --group GROUP")
    count = client.cancel_many(job=job, status=status or "pending", group=group, dry_run=dry_run)
    emit_json({"count": count, "dry_run": dry_run}) if json else typer.echo(
        bulk_line("cancelled", count, dry_run)
    )


def series_cancel_line(client: Client, ended: Series) -> str:
    """What ``cancel SERIES`` did, in a line: the series, and its current run."""
    line = f"series {ended.id} cancelled: no further runs"
    if not ended.current:
        return line
    try:
        run = client.get(ended.current)
    except TaskNotFound:
        return line
    if run.status is TaskStatus.RUNNING:
        return line + f"; its run {run.id} is still running (`cancel {run.id}` stops it)"
    return line + f"; its pending run {run.id} {run.status.value}"


@app.command()
@errors_as_lines
def workers(
    json: JsonOpt = False,
    local_time: LocalOpt = False,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    partitions: PartitionsOpt = None,
) -> None:
    """List live worker instances."""
    found = documents.workers_document(make_client(redis_url, namespace, partitions=partitions))
    emit_json(found) if json else print_rendered(lambda r: r.worker_table(found))


@app.command()
@errors_as_lines
def jobs(
    json: JsonOpt = False,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    partitions: PartitionsOpt = None,
) -> None:
    """List the job catalog and the live instances that can run each job (enough slots)."""
    client = make_client(redis_url, namespace, partitions=partitions)
    found = documents.jobs_document(client)
    if json:
        emit_json(found)
    else:
        live = client.workers()
        print_rendered(lambda r: r.job_table(found, live))


@app.command(name="series")
@errors_as_lines
def series_cmd(
    json: JsonOpt = False,
    local_time: LocalOpt = False,
    limit: Annotated[
        int, typer.Option(min=1, max=10000, metavar="N", help="At most this many series.")
    ] = 100,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    partitions: PartitionsOpt = None,
) -> None:
    """List recurring schedules: next run, last run and outcome, skipped runs."""
    client = make_client(redis_url, namespace, partitions=partitions)
    found = documents.series_list_document(client, limit=limit)
    emit_json(found) if json else print_rendered(lambda r: r.series_table(found))
