"""The ``worker`` and ``logs`` commands."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from .bucket import BucketError, read_url
from .cli import (
    JobsOpt,
    LocalOpt,
    NamespaceOpt,
    RedisOpt,
    app,
    errors_as_lines,
    fail,
    make_client,
)
from .connection import DEFAULT_REDIS_URL
from .durations import DurationError, parse_duration
from .errors import ConfigError
from .keys import DEFAULT_NAMESPACE, validate_namespace
from .models import TaskStatus
from .procs import DEFAULT_LOGS_DIR, start_zygote
from .settings import DEFAULT_BUCKET, WorkerSettings
from .spool import find_log
from .timefmt import IsoFormatter

LogsDirOpt = Annotated[
    Path,
    typer.Option(
        "--logs-dir", envvar="PERSEID_LOGS_DIR", metavar="DIR", help="Local spool of task logs."
    ),
]
BucketOpt = Annotated[
    str,
    typer.Option(
        "--bucket",
        envvar="PERSEID_BUCKET",
        metavar="URL",
        help="Where task logs are kept: file:///path or s3://bucket/prefix.",
    ),
]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--s3-endpoint-url",
        envvar="AWS_ENDPOINT_URL",
        metavar="URL",
        help="S3 API endpoint (MinIO and other S3-compatible stores).",
    ),
]


def seconds(value: str, option: str) -> float:
    """A duration option (``5s``, ``1m``, ``0.2``) in seconds, or a one-line error."""
    try:
        return parse_duration(value) / 1000
    except DurationError as exc:
        raise ConfigError(f"{option}: {exc}") from None


MIN_RESCAN_S = 0.1


def rescan_seconds(value: str) -> float:
    """``--jobs-rescan``: a duration of at least 0.1 s, or 0 (job files reloaded on SIGHUP only)."""
    with contextlib.suppress(ValueError):
        if float(value.strip().removesuffix("s")) == 0:
            return 0.0
    s = seconds(value, "--jobs-rescan")
    if s < MIN_RESCAN_S:
        raise ConfigError(
            f"--jobs-rescan {value}: rescan at most every {MIN_RESCAN_S:g}s (e.g. 2s),"
            " or 0 to reload job files on SIGHUP only"
        )
    return s


@app.command()
@errors_as_lines
def worker(
    slots: Annotated[
        int, typer.Option(envvar="PERSEID_SLOTS", metavar="N", help="Slots this instance offers.")
    ],
    jobs_dir: JobsOpt = Path("jobs"),
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
    instance_id: Annotated[
        str | None,
        typer.Option(
            envvar="PERSEID_INSTANCE_ID",
            metavar="ID",
            help="This instance's id (default: a new random one at each start).",
        ),
    ] = None,
    heartbeat: Annotated[
        str,
        typer.Option(
            envvar="PERSEID_HEARTBEAT", metavar="DURATION", help="How often the lease is renewed."
        ),
    ] = "5s",
    lease_ttl: Annotated[
        str,
        typer.Option(
            envvar="PERSEID_LEASE_TTL",
            metavar="DURATION",
            help="How long a lease lasts unrenewed; then the instance counts as dead"
            " (longer than --heartbeat, e.g. 3x).",
        ),
    ] = "15s",
    reap_interval: Annotated[
        str,
        typer.Option(
            envvar="PERSEID_REAP_INTERVAL",
            metavar="DURATION",
            help="How often this instance fails or retries the tasks of dead instances.",
        ),
    ] = "5s",
    drain_timeout: Annotated[
        str,
        typer.Option(
            envvar="PERSEID_DRAIN_TIMEOUT",
            metavar="DURATION",
            help="On SIGTERM/SIGINT, how long running tasks may finish before they are killed.",
        ),
    ] = "60s",
    kill_grace: Annotated[
        str,
        typer.Option(
            envvar="PERSEID_KILL_GRACE",
            metavar="DURATION",
            help="Between SIGTERM and SIGKILL when a task is stopped (timeout, cancel).",
        ),
    ] = "5s",
    logs_dir: LogsDirOpt = Path(DEFAULT_LOGS_DIR),
    bucket: BucketOpt = DEFAULT_BUCKET,
    s3_endpoint_url: EndpointOpt = None,
    max_log_bytes: Annotated[
        int,
        typer.Option(
            envvar="PERSEID_MAX_LOG_BYTES",
            metavar="BYTES",
            help="A task's log is cut (with a note) beyond this size.",
        ),
    ] = 64 * 1024 * 1024,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            envvar="PERSEID_METRICS_PORT",
            metavar="PORT",
            help="Serve Prometheus /metrics, /healthz and /readyz on this port (default: off).",
        ),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option(
            envvar="PERSEID_LOG_LEVEL",
            metavar="LEVEL",
            help="The worker's own log on stderr: DEBUG, INFO, WARNING or ERROR.",
        ),
    ] = "INFO",
    jobs_rescan: Annotated[
        str,
        typer.Option(
            envvar="PERSEID_JOBS_RESCAN",
            metavar="DURATION",
            help="How often to look for added, changed or removed job files (0: only on SIGHUP).",
        ),
    ] = "2s",
) -> None:
    """Run a worker instance: claim due tasks and run each in its own process."""

    if slots < 1:
        fail(f"--slots {slots}: an instance must offer at least 1 slot", 2)
    if not jobs_dir.is_dir():
        fail(f"jobs directory {str(jobs_dir)!r} does not exist: pass --jobs DIR", 2)
    validate_namespace(namespace)
    settings = WorkerSettings(
        slots=slots,
        jobs_dir=jobs_dir.resolve(),
        redis_url=redis_url,
        namespace=namespace,
        instance_id=instance_id,
        heartbeat_s=seconds(heartbeat, "--heartbeat"),
        lease_ttl_s=seconds(lease_ttl, "--lease-ttl"),
        reap_interval_s=seconds(reap_interval, "--reap-interval"),
        drain_timeout_s=seconds(drain_timeout, "--drain-timeout"),
        kill_grace_s=seconds(kill_grace, "--kill-grace"),
        logs_dir=logs_dir.resolve(),
        bucket_url=bucket,
        s3_endpoint_url=s3_endpoint_url,
        max_log_bytes=max_log_bytes,
        metrics_port=metrics_port,
        jobs_rescan_s=rescan_seconds(jobs_rescan),
    )
    if settings.lease_ttl_s <= settings.heartbeat_s:
        fail("--lease-ttl must be longer than --heartbeat (e.g. 3x)", 2)
    handler = logging.StreamHandler(sys.stderr)  # times as everywhere: ISO-8601, UTC
    handler.setFormatter(IsoFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=log_level.upper(), handlers=[handler])
    # Usually started already, before the command line was parsed (procs.start_zygote_early);
    # else now, first: it imports the jobs while this process imports the rest and connects.
    zygote = start_zygote(settings.jobs_dir, settings.logs_dir, wait=False)
    try:
        from .worker import Worker

        worker = Worker(settings, zygote)
    except BaseException:
        zygote.close()
        raise
    raise typer.Exit(worker.run())


@app.command()
@errors_as_lines
def logs(
    task_id: Annotated[str, typer.Argument(metavar="TASK", help="The task's id.")],
    raw: Annotated[bool, typer.Option("--raw", help="The NDJSON as stored.")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow while it runs.")] = False,
    local_time: LocalOpt = False,
    logs_dir: LogsDirOpt = Path(DEFAULT_LOGS_DIR),
    bucket: Annotated[str, typer.Option("--bucket", hidden=True)] = DEFAULT_BUCKET,
    s3_endpoint_url: EndpointOpt = None,
    redis_url: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = DEFAULT_NAMESPACE,
) -> None:
    """Print a task's log: from the local spool while it runs, else from where it was stored.

    A stored log is read at the URL recorded on the task (``log_url``), from
    any directory; ``--bucket`` is accepted for old scripts and not needed.
    """
    del bucket  # the recorded URL names the bucket
    client = make_client(redis_url, namespace)
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
