"""The flow-control commands: pause and resume a job or a group (see docs/flow.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..store.connection import DEFAULT_REDIS_URL
from ..store.keys import DEFAULT_NAMESPACE
from .cli_common import (
    JobsOpt,
    NamespaceOpt,
    PartitionsOpt,
    RedisOpt,
    app,
    errors_as_lines,
    make_client,
)

JobOpt = Annotated[
    str | None, typer.Option("--job", metavar="JOB", help="The job whose tasks to hold back.")
]
GroupOpt = Annotated[
    str | None, typer.Option("--group", metavar="GROUP", help="The group whose tasks to hold back.")
]
SeriesOpt = Annotated[
    str | None,
    typer.Option("--series", metavar="SERIES", help="The series whose runs to hold back."),
]


def _what(job: str | None, group: str | None, series: str | None) -> str:
    if job is not None:
        return f"job {job}"
    return f"group {group}" if group is not None else f"series {series}"


@app.command()
@errors_as_lines
def pause(
    job: JobOpt = None,
    group: GroupOpt = None,
    series: SeriesOpt = None,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    partitions: PartitionsOpt = None,
    jobs_dir: JobsOpt = Path("jobs"),
) -> None:
    """Hold back the pending tasks of a job, a group or a series; running ones run on."""
    client = make_client(redis_url, namespace, jobs_dir, partitions=partitions)
    changed = client.pause(job=job, group=group, series=series)
    what = _what(job, group, series)
    typer.echo(f"{what} paused" if changed else f"{what} was already paused")


@app.command()
@errors_as_lines
def resume(
    job: JobOpt = None,
    group: GroupOpt = None,
    series: SeriesOpt = None,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    partitions: PartitionsOpt = None,
) -> None:
    """Let a paused job's, group's or series' tasks run again, in due order."""
    client = make_client(redis_url, namespace, partitions=partitions)
    changed = client.resume(job=job, group=group, series=series)
    what = _what(job, group, series)
    typer.echo(f"{what} resumed" if changed else f"{what} was not paused")
