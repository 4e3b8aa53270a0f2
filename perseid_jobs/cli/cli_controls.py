"""The operator controls: trigger a series now, retry a task or many (docs/controls.md).

The bulk form of ``cancel`` lives with ``cancel`` in cli_tasks.py and uses :func:`bulk_line`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..core.durations import parse_duration
from ..core.errors import InvalidArgs, InvalidTime
from ..store.connection import DEFAULT_REDIS_URL
from ..store.keys import DEFAULT_NAMESPACE
from .cli_common import (
    JsonOpt,
    NamespaceOpt,
    PartitionsOpt,
    RedisOpt,
    app,
    emit_json,
    errors_as_lines,
    make_client,
)

DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Only count the matching tasks; change nothing.")
]


def bulk_line(verb: str, count: int, dry_run: bool) -> str:
    """What a bulk action did (or would do), in a line."""
    noun = "task" if count == 1 else "tasks"
    return f"{count} {noun} would be {verb}" if dry_run else f"{count} {noun} {verb}"


def since_seconds(since: str | None) -> float | None:
    """``--since 1h`` as seconds, else raise with the fix."""
    if since is None:
        return None
    try:
        ms = parse_duration(since)
    except ValueError:
        ms = 0
    if ms <= 0:
        raise InvalidTime(f"--since {since!r}: give how far back to look, e.g. 1h or 30m")
    return ms / 1000


@app.command()
@errors_as_lines
def trigger(
    series_id: Annotated[str, typer.Argument(metavar="SERIES", help="A series id (`series`).")],
    json: JsonOpt = False,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    partitions: PartitionsOpt = None,
) -> None:
    """Start one extra run of a series now; prints its id.

    The run is marked triggered; the series' grid and its next run do not move.
    """
    run = make_client(redis_url, namespace, partitions=partitions).trigger(series_id)
    emit_json(run) if json else typer.echo(run.id)


@app.command()
@errors_as_lines
def retry(
    task_id: Annotated[
        str | None,
        typer.Argument(metavar="TASK", help="An ended task; omit it for the bulk form."),
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            metavar="STATUS",
            help="Bulk: retry tasks that ended so: failed (default), cancelled, completed.",
        ),
    ] = None,
    job: Annotated[str | None, typer.Option(metavar="JOB", help="Bulk: tasks of this job.")] = None,
    since: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="Bulk: tasks that ended within this, e.g. 1h."),
    ] = None,
    dry_run: DryRunOpt = False,
    json: JsonOpt = False,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    partitions: PartitionsOpt = None,
) -> None:
    """Retry an ended task as a new one (prints its id), or, with --job, many at once.

    The new task has the same job and args and links `retry_of` to the old one, which stays
    as it ended. The bulk form prints how many it retried; repeated, it retries none twice.
    """
    bulk = status is not None or job is not None or since is not None or dry_run
    if task_id is not None and bulk:
        raise InvalidArgs("retry TASK takes no --status, --job, --since or --dry-run: give one")
    if task_id is None and job is None:
        raise InvalidArgs("retry: give a task id, or --job JOB for the bulk form")
    client = make_client(redis_url, namespace, partitions=partitions)
    if task_id is not None:
        task = client.retry(task_id)
        again = f" (already existed: {task_id} was retried before)" if task.existed else ""
        emit_json(task) if json else typer.echo(task.id + again)
        return
    seconds = since_seconds(since)
    count = client.retry_many(job=job, status=status or "failed", since=seconds, dry_run=dry_run)
    emit_json({"count": count, "dry_run": dry_run}) if json else typer.echo(
        bulk_line("retried", count, dry_run)
    )
