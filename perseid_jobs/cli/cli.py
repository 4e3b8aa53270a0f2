"""The ``perseid-jobs`` command line: a thin layer over :class:`perseid_jobs.Client`.

The common options also read environment variables (README.md lists which). Errors are one line on
stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..api.tags import parse_tags
from ..store.keys import DEFAULT_NAMESPACE
from ..worker.settings import DEFAULT_REDIS_URL
from .cli_common import (
    ArgsOpt,
    JobArg,
    JobsOpt,
    JsonOpt,
    NamespaceOpt,
    PartitionsOpt,
    RedisOpt,
    emit_json,
    errors_as_lines,
    fail,
    make_client,
    parse_args_json,
)
from .cli_common import app as app  # the command line (``perseid_jobs.cli.cli.app``)

AtOpt = Annotated[
    str | None, typer.Option(metavar="TIME", help="ISO-8601 time with offset, or +90s/+10m.")
]
EveryOpt = Annotated[
    str | None, typer.Option(metavar="DURATION", help="Run on a fixed grid: 10s, 5m, 1h, P1D.")
]
CronOpt = Annotated[
    str | None, typer.Option(metavar="EXPR", help="Cron expression, e.g. '0 9 * * MON-FRI'.")
]
TzOpt = Annotated[
    str | None, typer.Option(metavar="ZONE", help="Time zone of --cron (default UTC).")
]
AfterOpt = Annotated[
    list[str] | None,
    typer.Option(
        metavar="TASK",
        help="Start after this task completes; repeat for several (fan-in, at most 100).",
    ),
]
KeyOpt = Annotated[str | None, typer.Option(metavar="KEY", help="Idempotency key.")]
GroupOpt = Annotated[
    str | None,
    typer.Option(
        metavar="GROUP", help="The task's group (a customer, a tenant): see docs/flow.md."
    ),
]
PriorityOpt = Annotated[
    int,
    typer.Option(metavar="P", help="-100 to 100: higher runs first among due tasks (default 0)."),
]
TagOpt = Annotated[
    list[str] | None,
    typer.Option(metavar="TAG", help="A tag, key=value, to find the task by (repeatable)."),
]
CatchUpOpt = Annotated[
    str,
    typer.Option(
        "--catch-up",
        metavar="POLICY",
        help="Runs a series missed while no worker ran: skip (default) or all.",
    ),
]
CatchUpWindowOpt = Annotated[
    str | None,
    typer.Option(
        "--catch-up-window",
        metavar="DURATION",
        help="With --catch-up all: how far back missed runs are still run.",
    ),
]
DurableOpt = Annotated[
    bool, typer.Option("--durable", help="Return once a replica has it too (WAIT 1).")
]
DurableTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--durable-timeout", metavar="SECONDS", help="Seconds --durable waits for a replica."
    ),
]


@app.command()
@errors_as_lines
def schedule(
    job: JobArg,
    args: ArgsOpt = "{}",
    at: AtOpt = None,
    every: EveryOpt = None,
    cron: CronOpt = None,
    tz: TzOpt = None,
    after: AfterOpt = None,
    key: KeyOpt = None,
    group: GroupOpt = None,
    priority: PriorityOpt = 0,
    tag: TagOpt = None,
    catch_up: CatchUpOpt = "skip",
    catch_up_window: CatchUpWindowOpt = None,
    durable: DurableOpt = False,
    durable_timeout: DurableTimeoutOpt = 1.0,
    json: JsonOpt = False,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    partitions: PartitionsOpt = None,
    jobs_dir: JobsOpt = Path("jobs"),
) -> None:
    """Schedule a task; prints its id."""
    payload = parse_args_json(args)
    tags = parse_tags(tag or [])
    client = make_client(redis_url, namespace, jobs_dir, partitions=partitions)
    task = client.schedule(
        job,
        payload,
        at=at,
        every=every,
        cron=cron,
        tz=tz,
        after=after[0] if after and len(after) == 1 else after,
        key=key,
        catch_up=catch_up,
        catch_up_window=catch_up_window,
        durable=durable,
        durable_timeout=durable_timeout,
        group=group,
        priority=priority,
        tags=tags,
    )
    if json:
        emit_json(task)
    else:
        typer.echo(task.id + (" (already existed)" if task.existed else ""))


@app.command()
@errors_as_lines
def demo(
    duration: Annotated[
        float | None, typer.Option(metavar="SECONDS", help="Stop after this many seconds.")
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            envvar="PERSEID_DEMO_BACKEND",
            metavar="BACKEND",
            help="Which Redis: auto, server (a private redis-server) or fake (fakeredis).",
        ),
    ] = "auto",
    jobs_dir: JobsOpt = Path("jobs"),
) -> None:
    """Two workers, the example jobs and a live view, on an embedded default Redis."""
    from .demo import run_demo

    if backend not in ("auto", "server", "fake"):
        fail(f"--backend {backend!r}: use auto, server or fake", 2)
    if not jobs_dir.is_dir():
        fail(f"jobs directory {str(jobs_dir)!r} does not exist: pass --jobs DIR", 2)
    raise typer.Exit(run_demo(jobs_dir.resolve(), duration, backend))


def register_commands() -> None:
    """Add the commands defined in other modules to ``app`` (they import cli_common, not this)."""
    from . import cli_controls, cli_dashboard, cli_flow, cli_run, cli_tasks, cli_wait, cli_worker

    del cli_controls, cli_dashboard, cli_flow, cli_run, cli_tasks, cli_wait, cli_worker  # ...


def main() -> None:
    """Console script entry point."""
    register_commands()
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: one line, not a box
        format_message = getattr(exc, "format_message", None)
        message = format_message() if format_message else str(exc)
        if message:
            typer.echo(f"error: {message}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)
