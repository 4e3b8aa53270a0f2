"""What the commands share: the Typer app, the common options, and errors as one line.

Every ``cli_*`` module and :mod:`perseid_jobs.cli.cli` import this one, none of them
each other. The options that are worker settings take their name, variable and
help from :data:`perseid_jobs.worker.settings.SETTINGS`.
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

from ..api.client import Client
from ..core.errors import InvalidArgs, PerseidError
from ..core.models import to_json
from ..store.connection import redacted
from ..store.partitions import check_count
from ..worker.settings import BY_FIELD, Setting

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


def setting_option(s: Setting) -> Any:
    """The Typer option of worker setting ``s``: its name, variable and help from the table."""
    return typer.Option(s.option, envvar=s.env, metavar=s.metavar, help=s.help)


RedisOpt = Annotated[str, setting_option(BY_FIELD["redis_url"])]
NamespaceOpt = Annotated[str, setting_option(BY_FIELD["namespace"])]
PartitionsOpt = Annotated[str | None, setting_option(BY_FIELD["partitions"])]
JobsOpt = Annotated[Path, setting_option(BY_FIELD["jobs_dir"])]
LogsDirOpt = Annotated[Path, setting_option(BY_FIELD["logs_dir"])]
EndpointOpt = Annotated[str | None, setting_option(BY_FIELD["s3_endpoint_url"])]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON document.")]
TaskArg = Annotated[str, typer.Argument(metavar="TASK", help="The task's id.")]
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
    from ..core.timefmt import use_local_time

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


def make_client(
    redis_url: str, namespace: str, jobs_dir: Path | None = None, partitions: str | None = None
) -> Client:
    """A client for the command's options."""
    return Client.from_url(
        redis_url, namespace=namespace, jobs_dir=jobs_dir, partitions=check_count(partitions)
    )


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
    """Print what ``make`` builds from :mod:`perseid_jobs.cli.render` (Rich is imported only here,
    so commands that print no table, ``worker`` first, start without it)."""
    from . import render

    render.console.print(make(render))


def emit_json(obj: Any) -> None:
    """Write one JSON document to stdout."""
    sys.stdout.buffer.write(to_json(obj) + b"\n")
    sys.stdout.flush()
