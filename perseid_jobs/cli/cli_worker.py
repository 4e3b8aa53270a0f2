"""The ``worker`` and ``logs`` commands."""

from __future__ import annotations

import inspect
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.models import TaskStatus
from ..core.timefmt import IsoFormatter
from ..logs.bucket import BucketError, read_url
from ..logs.spool import find_log
from ..store.keys import DEFAULT_NAMESPACE
from ..worker.settings import (
    DEFAULT_BUCKET,
    DEFAULT_LOGS_DIR,
    DEFAULT_REDIS_URL,
    SETTINGS,
    Setting,
    settings_from_cli,
)
from ..worker.zygote_client import start_zygote
from .cli_common import (
    EndpointOpt,
    LocalOpt,
    LogsDirOpt,
    NamespaceOpt,
    PartitionsOpt,
    RedisOpt,
    TaskArg,
    app,
    errors_as_lines,
    fail,
    make_client,
    setting_option,
)


def worker(**options: Any) -> None:
    """Run a worker instance: claim due tasks and run each in its own process."""
    settings = settings_from_cli(options)
    handler = logging.StreamHandler(sys.stderr)  # times as everywhere: ISO-8601, UTC
    handler.setFormatter(IsoFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=options["log_level"].upper(), handlers=[handler])
    # Usually started already, before the command line was parsed (start_zygote_early);
    # else now, first: it imports the jobs while this process imports the rest and connects.
    zygote = start_zygote(settings.jobs_dir, settings.logs_dir, wait=False)
    try:
        from ..worker.worker import Worker

        worker = Worker(settings, zygote)
    except BaseException:
        zygote.close()
        raise
    raise typer.Exit(worker.run())


def _parameter(s: Setting) -> inspect.Parameter:
    kind = inspect.Parameter.KEYWORD_ONLY
    annotated: Any = Annotated[s.cli_type if s.required else s.cli_type | None, setting_option(s)]
    if s.required:
        return inspect.Parameter(s.field, kind, annotation=annotated)
    return inspect.Parameter(s.field, kind, annotation=annotated, default=s.cli_default)


# The command's options are the table's rows (Typer reads a function's signature).
worker.__signature__ = inspect.Signature([_parameter(s) for s in SETTINGS])  # type: ignore[attr-defined]
app.command("worker")(errors_as_lines(worker))


@app.command()
@errors_as_lines
def logs(
    task_id: TaskArg,
    raw: Annotated[bool, typer.Option("--raw", help="The NDJSON as stored.")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow while it runs.")] = False,
    local_time: LocalOpt = False,
    logs_dir: LogsDirOpt = Path(DEFAULT_LOGS_DIR),
    bucket: Annotated[str, typer.Option("--bucket", hidden=True)] = DEFAULT_BUCKET,
    s3_endpoint_url: EndpointOpt = None,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    partitions: PartitionsOpt = None,
) -> None:
    """Print a task's log: from the local spool while it runs, else from where it was stored.

    A stored log is read at the URL recorded on the task (``log_url``), from
    any directory; ``--bucket`` is accepted for old scripts and not needed.
    """
    del bucket  # the recorded URL names the bucket
    client = make_client(redis_url, namespace, partitions=partitions)
    task = client.get(task_id)
    if task.status is TaskStatus.PENDING and not task.log_url:  # (else: an earlier attempt's)
        fail(f"task {task_id} is pending: it has no log yet")
    running = task.status is TaskStatus.RUNNING
    local = find_log(logs_dir, task_id) if running or not task.log_url else None

    def out(line: bytes) -> None:
        if raw:
            sys.stdout.buffer.write(line if line.endswith(b"\n") else line + b"\n")
        else:
            from . import render  # Rich: not imported by the worker command

            render.console.print(render.log_line(line), markup=False)

    if local is not None:
        with local.open("rb") as fh:
            while True:
                line = fh.readline()
                if line:
                    out(line)
                    continue
                if not follow or client.get(task_id).status.terminal or not local.exists():
                    return
                time.sleep(0.2)
    if task.log_url:
        try:
            data = read_url(task.log_url, s3_endpoint_url=s3_endpoint_url)
        except BucketError as exc:
            fail(f"cannot read the log of {task_id}: {exc}")
            return
        for line in data.splitlines():
            out(line)
        return
    if task.status.terminal:
        fail(f"the log of {task_id} is pending upload from instance {task.instance}")
    fail(
        f"task {task_id} is {task.status.value}; its log is on the host of instance"
        f" {task.instance} until it ends (run this there, or pass --logs-dir)"
    )
