"""What a task process runs once forked: its break from the zygote, its log begun, its job
called, its exit code.

A process forked for a task at once runs :func:`run_task`; a spare, forked
ahead of any task, runs :func:`run_spare`, which prepares the log and goes
once through a sample start (:func:`warm`) before it waits for its request.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from ..core.jobfile import JobSpec
from ..core.models import task_metadata
from ..logs.tasklog import TaskLog, TaskOutput
from .dataflow import ProgressReporter, result_frame
from .protocol import StartRequest, encoder, request_decoder, write_all
from .runtime import EXIT_FAILED, TaskContext, end_of, run_job

NUDGE = b"\n"
"""Written to a waiting spare ahead of a start request: go through the start once more."""

_PR_SET_PDEATHSIG = 1
_signal: Any = importlib.import_module("_signal")  # signal's C half (no stub of its own)
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up once, not in every task


def set_parent_death_signal(sig: int) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies."""
    _prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def clear_spares(spare_dir: Path) -> Path:
    """A zygote's spare log path in ``spare_dir``; earlier zygotes' leftovers there are removed."""
    spare_dir.mkdir(parents=True, exist_ok=True)
    for leftover in spare_dir.glob("*.log"):
        leftover.unlink(missing_ok=True)
    return spare_dir / f"{os.getpid()}.log"


def wait_killed(pids: list[int], timeout: float) -> Iterator[int]:
    """Reap the given children, just SIGKILLed, as each exits (for up to ``timeout`` s)."""
    left = set(pids)
    deadline = time.monotonic() + timeout  # SIGKILLed: only a process stuck in the kernel lingers
    while left and time.monotonic() < deadline:
        for pid in list(left):
            with contextlib.suppress(ChildProcessError):  # reaped already: gone all the same
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    continue
            left.discard(pid)
            yield pid
        if left:
            time.sleep(0.01)


def become_task(zygote_pid: int, close: Iterable[int], discard: Iterable[TaskOutput]) -> None:
    """In a new child of the zygote: its own session, death with the zygote, nothing of its.

    ``close``: the zygote's fds the task must not hold; ``discard``: other tasks'
    logs and pipes it inherited.
    """
    os.setsid()
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != zygote_pid:
        # The zygote died between the fork and the line above (its kill-all may
        # not have known this pid yet): no one would report us, so go.
        os._exit(EXIT_FAILED)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        # The C function, not signal.signal: its enum wrapping alone would copy
        # tens of the zygote's pages into every task (measured: ~90 us a task).
        _signal.signal(sig, _signal.SIG_DFL)
    for fd in close:
        os.close(fd)
    for output in discard:
        output.discard()


def run_task(
    req: StartRequest, spec: JobSpec, log: TaskLog, result_fd: int, *, announced: bool = False
) -> int:
    """Body of a task process, its log prepared; returns its exit code.

    ``announced``: the zygote already wrote the ``task started`` line.
    """
    log.begin(
        started_at_ms=req.started_at_ms,
        attempt=req.attempt,
        task_id=req.id,
        job=req.job,
        max_bytes=req.max_log_bytes,
        announce=not announced,
    )
    task = task_context(req, log, ProgressReporter(lambda frame: write_all(result_fd, frame)))
    code, reason = run_job(spec, task)
    code, reason, result = end_of(task, code, reason, req.max_result_bytes)
    if result:  # before the reason: the zygote reads frames, then the reason's plain text
        write_all(result_fd, result_frame(result))
    if reason:
        write_all(result_fd, reason.encode("utf-8", "replace"))
    log.close()
    return code


def task_context(
    req: StartRequest, log: TaskLog, progress: ProgressReporter | None = None
) -> TaskContext:
    """The ``task`` object the job receives: made anew for every task."""
    return TaskContext(
        id=req.id,
        job=req.job,
        args=msgspec.json.decode(req.args),
        metadata=task_metadata(req.last_completed_at, req.skipped_runs),
        logger=log.logger,
        attempt=req.attempt,
        parent_results=msgspec.json.decode(req.parent_results) if req.parent_results else None,
        progress=progress,
    )


def run_spare(jobs: dict[str, JobSpec], output: TaskOutput, ctl_fd: int, result_fd: int) -> int:
    """Body of a spare: prepare the log, wait for the start request, run it."""
    log = TaskLog.prepare(output)
    warm(log)
    data = b""
    while chunk := os.read(ctl_fd, 1 << 16):
        data = (data + chunk).lstrip(NUDGE)
        if not data:  # only nudged: a start is due in a moment, and this spare went cold
            warm(log)
    if not data:
        return 0  # not needed after all: the zygote is stopping
    req = request_decoder.decode(data)
    assert isinstance(req, StartRequest)
    spec = jobs.get(req.job)
    if spec is None:
        write_all(result_fd, f"job {req.job!r} is not loaded on this worker".encode())
        return EXIT_FAILED
    return run_task(req, spec, log, result_fd, announced=True)


_SAMPLE_REQUEST = encoder.encode(
    StartRequest(
        id="01M8E3REWN0000000000000001",
        job="sample",
        args='{"sample": [1, 2.5, "x", null, true]}',
        attempt=1,
        started_at_ms=1_700_000_000_000,
        last_completed_at="1700000000000",
        skipped_runs="1",
        log_path="/sample.log",
        max_log_bytes=1,
    )
)


REHEARSALS = 20
"""Sample starts the zygote rehearses (enough for 3.11's warm-up and specialisation)."""


def rehearse(jobs: dict[str, JobSpec], times: int = REHEARSALS) -> None:
    """In the zygote, before its first fork: go through a task's start ``times`` times.

    On a sample, with a log on ``/dev/null`` and a job that does nothing. CPython
    rewrites a function's bytecode in place as it warms up (3.11 counts calls
    up to 8 before it specialises, then adapts each instruction), and in a forked
    process every page so written is copied. Code that only task processes ran
    was cold in the zygote, so every task warmed it again. tests/test_rehearsal.py
    checks that a rehearsed zygote's children copy fewer pages through a start;
    per task it is measured in docs/benchmark.md's fifth session.
    """
    spec = next(iter(jobs.values()), None)
    idle = None if spec is None else msgspec.structs.replace(spec, func=_nothing)
    for _ in range(times):
        log = TaskLog.rehearsal(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC))
        warm(log)
        req = request_decoder.decode(_SAMPLE_REQUEST)
        assert isinstance(req, StartRequest)
        log.begin(
            started_at_ms=req.started_at_ms,
            attempt=req.attempt,
            task_id=req.id,
            job=req.job,
            max_bytes=req.max_log_bytes,
            announce=False,
        )
        context = task_context(req, log)
        if idle is not None:
            run_job(idle, context)
        log.close()


def _nothing(task: TaskContext) -> None:
    """The job of a rehearsal."""


def warm(log: TaskLog) -> None:
    """In a spare: go once through what a start goes through, on a sample, unwritten.

    A forked process pays a page fault for each page it first writes (even a
    reference count): paid here, while it waits, not between request and job.
    """
    req = request_decoder.decode(_SAMPLE_REQUEST)
    assert isinstance(req, StartRequest)
    msgspec.json.decode(req.args)
    task_metadata(req.last_completed_at, req.skipped_runs)
    log.sample_line(started_at_ms=req.started_at_ms, attempt=req.attempt)
