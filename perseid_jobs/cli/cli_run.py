"""The ``run`` command: one task on this machine, without Redis, the way a worker runs it.

The task goes through the worker's own path, so its verdict is the one a worker
would give: a zygote forks its process in a session of its own (a kill reaches
the job's subprocesses too), its stdout, stderr and log records become its pino
log, a :class:`~perseid_jobs.worker.outcome.Running` handle times it out at its max
duration (SIGTERM, then SIGKILL after the grace) and judges its exit. Only
Redis is left out: no record, no claim, no upload. The log is printed as it
grows, then the verdict.
"""

from __future__ import annotations

import os
import select
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from ..core.errors import JobDefinitionError
from ..core.jobfile import find_job_file
from ..core.models import TaskStatus
from ..launch.protocol import Exited, Started, drain_pipe
from ..launch.runtime import EXIT_CANCELLED, EXIT_COMPLETED, EXIT_FAILED
from ..logs.tasklog import DEFAULT_MAX_LOG_BYTES
from ..worker.claiming import note_kill, start_request
from ..worker.outcome import ClaimedTask, Running
from ..worker.settings import BY_FIELD, seconds
from ..worker.zygote_client import ZygoteClient, ZygoteFailed
from .cli_common import ArgsOpt, JobArg, JobsOpt, app, errors_as_lines, fail, parse_args_json

TAIL_S = 0.05
"""How often the task's log is looked at for new lines while nothing else happens."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@app.command()
@errors_as_lines
def run(
    job: JobArg,
    args: ArgsOpt = "{}",
    kill_grace: Annotated[
        str,
        typer.Option(
            envvar=BY_FIELD["kill_grace_s"].env,  # the worker's setting, its variable too
            metavar="DURATION",
            help="From SIGTERM to SIGKILL at a timeout, as a worker.",
        ),
    ] = BY_FIELD["kill_grace_s"].cli_default,
    jobs_dir: JobsOpt = Path("jobs"),
) -> None:
    """Run one task locally, without Redis, as a worker would: same process, limits, verdict.

    Exit code: 0 completed, 100 cancelled, the task's own when it failed with one
    (1 for a timeout or a kill), 130/143 when interrupted (the task is stopped too).
    """
    payload = parse_args_json(args)
    grace = seconds(kill_grace, "--kill-grace")
    if not jobs_dir.is_dir():
        fail(f"jobs directory {str(jobs_dir)!r} does not exist: pass --jobs DIR", 2)
    path = find_job_file(jobs_dir, job)
    if path is None:
        fail(f"unknown job {job!r}: no file {jobs_dir}/{job}.py; pass --jobs DIR", 2)
        return
    with tempfile.TemporaryDirectory(prefix="perseid-run-") as tmp:
        zygote = ZygoteClient(jobs_dir.resolve())  # no spare: one task only
        try:
            code = run_one(zygote, job, path.resolve(), payload, grace, Path(tmp) / "task.log")
        finally:
            zygote.close()
    raise typer.Exit(code)


def run_one(
    zygote: ZygoteClient,
    job: str,
    path: Path,
    payload: dict[str, Any],
    grace_s: float,
    log_path: Path,
) -> int:
    """Run ``job`` once through ``zygote``, print its log and verdict; the exit code."""
    definition = zygote.ready.jobs.get(job)
    if definition is None:
        why = [line for line in zygote.ready.errors if line.startswith(f"{path}:")]
        raise JobDefinitionError(why[0] if why else f"{path}: the job was not loaded")
    now_ms = str(int(time.time() * 1000))
    task = ClaimedTask(
        id=f"local-{uuid.uuid4().hex[:12]}",
        job=job,
        args=orjson.dumps(payload).decode(),
        attempt="1",
        started_at=now_ms,
        start_at=now_ms,
        max_ms=str(definition.max_duration_ms),
        slots=str(definition.slots),
        series=None,
        last_completed_at=None,
        skipped_runs=None,
        spec="",
        origin="",
    )
    running = Running.begin(task, "local")
    zygote.start(start_request(task, log_path, DEFAULT_MAX_LOG_BYTES))
    tail = LogTail(log_path)
    with StopSignals() as stops:
        event = watch(zygote, running, grace_s, tail, stops)
    status, code, reason = running.verdict(event.status, event.reason)
    note_kill(running, event.pid, log_path)
    tail.pump(final=True)
    took = time.monotonic() - running.started_mono
    because = f": {reason}" if reason else ""
    typer.echo(f"{status.value} in {took:.3f}s (exit {code}){because}", err=True)
    if stops.received:
        return 128 + stops.received[0]
    return exit_code(status, int(code), running.forced is not None)


def exit_code(status: TaskStatus, code: int, forced: bool) -> int:
    """``run``'s exit code for a verdict (see the command's help)."""
    if status is TaskStatus.COMPLETED:
        return EXIT_COMPLETED
    if status is TaskStatus.CANCELLED:
        return EXIT_CANCELLED
    return code if code > 0 and not forced else EXIT_FAILED


def watch(
    zygote: ZygoteClient, running: Running, grace_s: float, tail: LogTail, stops: StopSignals
) -> Exited:
    """Until the task's process has ended: its events, deadline, log, and our stop signals."""
    acted = 0  # stop signals acted on
    while True:
        try:
            events = zygote.read_events()
        except ZygoteFailed:
            if not stops.received:
                raise
            return launcher_stopped(running, stops.received[0])
        for event in events:
            if isinstance(event, Started) and event.id == running.task.id:
                running.pid = event.pid
            elif isinstance(event, Exited) and event.id == running.task.id:
                return event
        while len(stops.received) > acted and running.pid is not None:
            # One at a time: a signal arriving meanwhile is acted on too, not lost.
            interrupt(running, stops.received[acted], acted == 0, grace_s)
            acted += 1
        now = time.monotonic()
        running.enforce_deadline(now, grace_s)
        tail.pump()
        wake = running.kill_at if running.kill_at is not None else running.deadline_mono
        if running.forced is not None and running.kill_at is None:
            wake = now + TAIL_S  # killed: its exit is awaited
        timeout = max(0.0, min(wake - now, TAIL_S))
        r, _, _ = select.select([zygote.fileno(), stops.fd], [], [], timeout)
        if stops.fd in r:
            drain_pipe(stops.fd)


def launcher_stopped(running: Running, signum: int) -> Exited:
    """The verdict when the stop signal also reached the zygote (sent to our whole group).

    The zygote takes SIGTERM for its worker's death: it SIGKILLs every task's group and exits.
    """
    if running.forced is None:
        running.forced = (TaskStatus.FAILED, f"interrupted by {signal.Signals(signum).name}")
    return Exited(id=running.task.id, pid=running.pid or 0, status=signal.SIGKILL, reason="")


def interrupt(running: Running, signum: int, first: bool, grace_s: float) -> None:
    """Stop the task on a stop signal: as a timeout would, or at once if already stopping."""
    name = signal.Signals(signum).name
    if first and running.forced is None:
        typer.echo(
            f"{name}: stopping the task (SIGTERM; SIGKILL in {grace_s:g}s or at a second {name})",
            err=True,
        )
        running.stop(TaskStatus.FAILED, f"interrupted by {name}", grace_s)
    else:
        running.kill(signal.SIGKILL)


class StopSignals:
    """SIGINT and SIGTERM, while inside: recorded in :attr:`received`, and :attr:`fd` readable.

    Not KeyboardInterrupt: the task must be stopped and its verdict printed.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.fd, self._w = os.pipe()
        for fd in (self.fd, self._w):
            os.set_blocking(fd, False)
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1

    def __enter__(self) -> StopSignals:
        self._previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        self._previous_fd = signal.set_wakeup_fd(self._w)  # wakes the select at once
        return self

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.received.append(signum)

    def __exit__(self, *_: object) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        os.close(self.fd)
        os.close(self._w)


class LogTail:
    """Prints a task's pino log as readable lines, extra fields included, as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def pump(self, *, final: bool = False) -> None:
        """Print the whole lines written since the last call (``final``: and any rest)."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return  # not created yet (or the task could not get a log: its reason says)
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        if final and self.partial:
            lines.append(self.partial)
            self.partial = b""
        if lines:
            from . import render  # Rich: only once there is something to print

            for line in lines:
                if line.strip():
                    render.console.print(render.log_line(line), markup=False)
