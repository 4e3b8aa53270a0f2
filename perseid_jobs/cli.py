"""The ``perseid-jobs`` command line: a thin layer over :class:`perseid_jobs.Client`.

Every option also reads an environment variable. Errors are one line on
stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, TypeVar

import orjson
import redis
import typer

from .client import Client
from .connection import DEFAULT_REDIS_URL, redacted
from .errors import InvalidArgs, PerseidError
from .keys import DEFAULT_NAMESPACE
from .models import TaskStatus, to_json

app = typer.Typer(
    name="perseid-jobs",
    help="A distributed job scheduler for Python, coordinated through Redis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])

RedisOpt = Annotated[str, typer.Option("--redis", envvar="PERSEID_REDIS_URL", help="Redis URL.")]
NamespaceOpt = Annotated[
    str, typer.Option("--namespace", envvar="PERSEID_NAMESPACE", help="Key namespace.")
]
JobsOpt = Annotated[
    Path, typer.Option("--jobs", envvar="PERSEID_JOBS_DIR", help="Directory of job scripts.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON document.")]


def fail(message: str, code: int = 1) -> None:
    """Print one line on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def errors_as_lines(func: F) -> F:
    """Turn known errors into one stderr line and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = func(*args, **kwargs)
            for w in caught:
                typer.echo(f"warning: {w.message}", err=True)
            return result
        except PerseidError as exc:
            fail(str(exc), exc.exit_code)
        except redis.RedisError as exc:
            url = kwargs.get("redis_url", "")
            fail(f"Redis error at {redacted(str(url))}: {exc}", 3)

    return wrapper  # type: ignore[return-value]


def make_client(redis_url: str, namespace: str, jobs_dir: Path | None = None) -> Client:
    """A client for the command's options."""
    return Client.from_url(redis_url, namespace=namespace, jobs_dir=jobs_dir)


def parse_args_json(text: str) -> dict[str, Any]:
    """``--args`` text (or ``@file.json``, or ``-``: stdin) -> dict, or a one-line error."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgs(f"--args {text}: cannot read the file: {exc}") from None
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise InvalidArgs("--args is not valid UTF-8: pass JSON text") from None
    if size > 1024 * 1024:
        raise InvalidArgs(f"--args is {size} bytes; the limit is 1 MiB: pass a reference instead")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgs(f"--args is not valid JSON ({exc}); e.g. --args '{{\"n\": 1}}'") from None
    if not isinstance(value, dict):
        raise InvalidArgs(
            f"--args must be a JSON object, got {type(value).__name__}; e.g. --args '{{\"n\": 1}}'"
        )
    return value


def print_rendered(make: Callable[[ModuleType], Any]) -> None:
    """Print what ``make`` builds from :mod:`perseid_jobs.render` (Rich is imported only here,
    so commands that print no table, ``worker`` first, start without it)."""
    from . import render

    render.console.print(make(render))


def emit_json(obj: Any) -> None:
    """Write one JSON document to stdout."""
    sys.stdout.buffer.write(to_json(obj) + b"\n")
    sys.stdout.flush()


@app.command()
@errors_as_lines
def schedule(
    job: Annotated[str, typer.Argument(help="Job name (the file stem in the jobs directory).")],
    args: Annotated[
        str, typer.Option("--args", help="Task arguments: a JSON object, @file.json, or - (stdin).")
    ] = "{}",
    at: Annotated[str | None, typer.Option(help="ISO-8601 time with offset, or +90s/+10m.")] = None,
    every: Annotated[
        str | None, typer.Option(help="Run on a fixed grid: 10s, 5m, 1h, P1D.")
    ] = None,
    cron: Annotated[
        str | None, typer.Option(help="Cron expression, e.g. '0 9 * * MON-FRI'.")
    ] = None,
    tz: Annotated[str | None, typer.Option(help="Time zone of --cron (default UTC).")] = None,
    after: Annotated[str | None, typer.Option(help="Start after this task completes.")] = None,
    key: Annotated[str | None, typer.Option(help="Idempotency key.")] = None,
    catch_up: Annotated[str, typer.Option("--catch-up", help="skip | all")] = "skip",
    catch_up_window: Annotated[str | None, typer.Option("--catch-up-window")] = None,
    durable: Annotated[
        bool, typer.Option("--durable", help="Return once a replica has it too (WAIT 1).")
    ] = False,
    durable_timeout: Annotated[
        float, typer.Option("--durable-timeout", help="Seconds --durable waits for a replica.")
    ] = 1.0,
    json: JsonOpt = False,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    jobs_dir: JobsOpt = Path("jobs"),
) -> None:
    """Schedule a task; prints its id."""
    payload = parse_args_json(args)
    client = make_client(redis_url, namespace, jobs_dir)
    task = client.schedule(
        job,
        payload,
        at=at,
        every=every,
        cron=cron,
        tz=tz,
        after=after,
        key=key,
        catch_up=catch_up,
        catch_up_window=catch_up_window,
        durable=durable,
        durable_timeout=durable_timeout,
    )
    if json:
        emit_json(task)
    else:
        typer.echo(task.id + (" (already existed)" if task.existed else ""))


@app.command()
@errors_as_lines
def show(
    task_id: Annotated[str, typer.Argument(metavar="TASK")],
    json: JsonOpt = False,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
) -> None:
    """Show one task."""
    task = make_client(redis_url, namespace).get(task_id)
    emit_json(task) if json else print_rendered(lambda r: r.task_detail(task))


@app.command()
@errors_as_lines
def tasks(
    status: Annotated[TaskStatus | None, typer.Option(help="Only tasks in this state.")] = None,
    job: Annotated[str | None, typer.Option(help="Only tasks of this job.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    json: JsonOpt = False,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
) -> None:
    """List tasks."""
    found = make_client(redis_url, namespace).tasks(status=status, job=job, limit=limit)
    emit_json(found) if json else print_rendered(lambda r: r.task_table(found))


@app.command()
@errors_as_lines
def cancel(
    task_id: Annotated[str, typer.Argument(metavar="TASK")],
    series: Annotated[bool, typer.Option("--series", help="End the task's whole series.")] = False,
    json: JsonOpt = False,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
) -> None:
    """Cancel a task: pending at once, running by its instance."""
    task = make_client(redis_url, namespace).cancel(task_id, series=series)
    if json:
        emit_json(task)
    else:
        state = "cancelled" if task.status.terminal else "cancel requested (running)"
        typer.echo(f"{task.id} {state}")


@app.command()
@errors_as_lines
def workers(
    json: JsonOpt = False,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
) -> None:
    """List live worker instances."""
    found = make_client(redis_url, namespace).workers()
    emit_json(found) if json else print_rendered(lambda r: r.worker_table(found))


@app.command()
@errors_as_lines
def jobs(
    json: JsonOpt = False,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
) -> None:
    """List the job catalog the workers published."""
    found = make_client(redis_url, namespace).jobs()
    emit_json(found) if json else print_rendered(lambda r: r.job_table(found))


@app.command(name="series")
@errors_as_lines
def series_cmd(
    json: JsonOpt = False,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
) -> None:
    """List recurring schedules: next run, last run and outcome, skipped runs."""
    found = make_client(redis_url, namespace).series(limit=limit)
    emit_json(found) if json else print_rendered(lambda r: r.series_table(found))


@app.command()
@errors_as_lines
def demo(
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    backend: Annotated[
        str, typer.Option("--backend", envvar="PERSEID_DEMO_BACKEND", help="auto | server | fake")
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


def main() -> None:
    """Console script entry point."""
    from . import cli_run, cli_worker  # register `run`, `worker` and `logs`

    del cli_run, cli_worker
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
