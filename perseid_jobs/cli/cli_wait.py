"""The ``wait`` command: block until a task ends; the exit code says how (for scripts and CI)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..core.durations import DurationError, parse_duration
from ..core.errors import ConfigError, WaitTimeout
from ..core.models import TaskStatus
from ..store.connection import DEFAULT_REDIS_URL
from ..store.keys import DEFAULT_NAMESPACE
from .cli_common import (
    JsonOpt,
    NamespaceOpt,
    PartitionsOpt,
    RedisOpt,
    TaskArg,
    app,
    emit_json,
    errors_as_lines,
    make_client,
)

EXIT_COMPLETED = 0
EXIT_FAILED = 10
EXIT_CANCELLED = 100  # what a job exits with to end cancelled
EXIT_TIMED_OUT = WaitTimeout.exit_code  # 124, as timeout(1)

EXIT_CODES = {
    TaskStatus.COMPLETED: EXIT_COMPLETED,
    TaskStatus.FAILED: EXIT_FAILED,
    TaskStatus.CANCELLED: EXIT_CANCELLED,
}


@app.command()
@errors_as_lines
def wait(
    task_id: TaskArg,
    timeout: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Give up after this long (30, 90s, 5m): exit 124. Default: no limit.",
        ),
    ] = None,
    json: JsonOpt = False,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    partitions: PartitionsOpt = None,
) -> None:
    """Wait until a task ends; print how it ended. The exit code tells it apart:

    \b
      0    completed
      10   failed
      100  cancelled
      124  timed out (the task is still pending or running)
      1    no such task; 2 bad option; 3 Redis unreachable
    """
    limit_s: float | None = None
    if timeout is not None:
        try:
            limit_s = parse_duration(timeout) / 1000
        except DurationError as exc:
            raise ConfigError(f"--timeout: {exc}") from None
    task = make_client(redis_url, namespace, partitions=partitions).wait(task_id, timeout=limit_s)
    if json:
        emit_json(task)
    else:
        ok = task.status is TaskStatus.COMPLETED
        typer.echo(
            f"{task.id} {task.status.value}" + ("" if ok or not task.reason else f": {task.reason}")
        )
    raise typer.Exit(EXIT_CODES[task.status])
