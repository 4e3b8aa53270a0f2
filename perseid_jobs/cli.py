"""The ``perseid-jobs`` command line: a thin layer over :class:`perseid_jobs.Client`.

The common options also read environment variables (README.md lists which). Errors are one line on
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
from .models import to_json

app = typer.Typer(
    name="perseid-jobs",
    help="A distributed job scheduler for Python, coordinated through Redis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help: Rich's panels label every flag `<bool>`, `--help` included.
    rich_markup_mode=None,
)

F = TypeVar("F", bound=Callable[..., Any])

RedisOpt = Annotated[
    str,
    typer.Option(
        "--redis",
        envvar="PERSEID_REDIS_URL",
        metavar="URL",
        help="Redis URL: redis://, rediss://, redis+sentinel://, redis+cluster://.",
    ),
]
NamespaceOpt = Annotated[
    str,
    typer.Option("--namespace", envvar="PERSEID_NAMESPACE", metavar="NAME", help="Key namespace."),
]
JobsOpt = Annotated[
    Path,
    typer.Option(
        "--jobs", envvar="PERSEID_JOBS_DIR", metavar="DIR", help="Directory of job scripts."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON document.")]
JobArg = Annotated[
    str, typer.Argument(metavar="JOB", help="Job name (the file stem in the jobs directory).")
]
ArgsOpt = Annotated[
    str,
    typer.Option(
        "--args", metavar="JSON", help="Task arguments: a JSON object, @file.json, or - (stdin)."
    ),
]


def _local_time(value: bool) -> bool:
    from .timefmt import use_local_time

    use_local_time(value)
    return value


LocalOpt = Annotated[
    bool,
    typer.Option(
        "--local",
        callback=_local_time,
        help="Print times in this machine's time zone (default: UTC). --json is always UTC.",
    ),
]


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
    job: JobArg,
    args: ArgsOpt = "{}",
    at: Annotated[
        str | None,
        typer.Option(metavar="TIME", help="ISO-8601 time with offset, or +90s/+10m."),
    ] = None,
    every: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="Run on a fixed grid: 10s, 5m, 1h, P1D."),
    ] = None,
    cron: Annotated[
        str | None,
        typer.Option(metavar="EXPR", help="Cron expression, e.g. '0 9 * * MON-FRI'."),
    ] = None,
    tz: Annotated[
        str | None, typer.Option(metavar="ZONE", help="Time zone of --cron (default UTC).")
    ] = None,
    after: Annotated[
        str | None, typer.Option(metavar="TASK", help="Start after this task completes.")
    ] = None,
    key: Annotated[str | None, typer.Option(metavar="KEY", help="Idempotency key.")] = None,
    catch_up: Annotated[
        str,
        typer.Option(
            "--catch-up",
            metavar="POLICY",
            help="Runs a series missed while no worker ran: skip (default) or all.",
        ),
    ] = "skip",
    catch_up_window: Annotated[
        str | None,
        typer.Option(
            "--catch-up-window",
            metavar="DURATION",
            help="With --catch-up all: how far back missed runs are still run.",
        ),
    ] = None,
    durable: Annotated[
        bool, typer.Option("--durable", help="Return once a replica has it too (WAIT 1).")
    ] = False,
    durable_timeout: Annotated[
        float,
        typer.Option(
            "--durable-timeout", metavar="SECONDS", help="Seconds --durable waits for a replica."
        ),
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
    """Add the commands defined in other modules to ``app`` (they import this one)."""
    from . import cli_run, cli_tasks, cli_wait, cli_worker  # run; show/tasks/...; wait; worker

    del cli_run, cli_tasks, cli_wait, cli_worker


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
