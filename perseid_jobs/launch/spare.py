"""The spare: the next task's process, forked ahead of its start request.

It has already done what every task does before its job runs (its own
session, the parent-death signal, default signal handlers, stdout and stderr
pointed at its log), so a start costs a pipe write, not a fork. The zygote
(:class:`~perseid_jobs.launch.forkserver.Zygote`) holds at most one, in ``spare``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ..logs.tasklog import TaskOutput
from . import forking
from .protocol import StartRequest, write_all
from .runtime import EXIT_FAILED
from .taskproc import NUDGE, run_spare

if TYPE_CHECKING:
    from .forkserver import Zygote

SPARE_AFTER_IDLE_S = 0.005
"""Quiet time after which the zygote forks a spare task process ahead of the next start."""
SPARE_AT_ONCE_WITH = 2
"""Tasks running from which the spare is forked at once, not after a quiet time."""


class Spare(NamedTuple):
    """A process forked ahead of its task, waiting for the start request on ``ctl_fd``."""

    pid: int
    ctl_fd: int  # the start request is written here, then closed
    result_fd: int
    output: TaskOutput  # its log, at the spare path until the task's is known


def hand_over(z: Zygote, spare: Spare, req: StartRequest, line: bytes) -> bool:
    """Give the task to the spare: its log file takes the task's name. False if it failed."""
    assert z.spare_path is not None
    output = spare.output
    try:
        try:
            # A new file under that name: an earlier attempt's may live on in the bucket.
            os.replace(z.spare_path, req.log_path)
            output.path = Path(req.log_path)
            output.task_id, output.job, output.max_bytes = req.id, req.job, req.max_log_bytes
            output.attach(spare.pid)
            # Written here, before the spare hears of its task: the first line, and
            # one thing less for the task's process (whose every step costs it page copies).
            output.announce(started_at_ms=req.started_at_ms, attempt=req.attempt)
            write_all(spare.ctl_fd, line)  # the request as the worker sent it
        finally:
            os.close(spare.ctl_fd)
    except OSError:
        # Gone, or the log cannot be named: fork for this task instead.
        z.kill(spare.pid)
        os.close(spare.result_fd)
        output.discard()
        return False
    z.started(req.id, spare.pid, spare.result_fd, output)
    return True


def nudge(z: Zygote) -> None:
    """Have the spare go through its start once more: one is due in a moment."""
    if z.spare is not None:
        with contextlib.suppress(OSError):  # gone: the reap will tell
            os.write(z.spare.ctl_fd, NUDGE)


def make(z: Zygote) -> None:
    """Fork the next task's process ahead of its request (when spares are on)."""
    if z.spare is not None or z.spare_path is None:
        return
    try:
        output = TaskOutput(z.spare_path, task_id="", job="", max_bytes=0)
    except OSError as exc:
        print(f"perseid-jobs: no spare task process ({exc}); forks per start", file=sys.stderr)
        z.spare_path = None
        return
    ctl_r, ctl_w = os.pipe()
    result_r, result_w = os.pipe()
    pid = forking.fork()
    if pid == 0:
        code = EXIT_FAILED
        try:
            z.become_child((ctl_r, result_w))
            os.close(ctl_w)
            os.close(result_r)
            code = run_spare(z.jobs, output, ctl_r, result_w)
        finally:
            os._exit(code)
    os.close(ctl_r)
    os.close(result_w)
    z.spare = Spare(pid, ctl_w, result_r, output)


def reaped(z: Zygote, pid: int) -> None:
    """A child that was no task exited: if it was the spare (killed while waiting), let it go."""
    if z.spare is not None and z.spare.pid == pid:
        os.close(z.spare.ctl_fd)
        os.close(z.spare.result_fd)
        z.spare.output.discard()
        z.spare = None
