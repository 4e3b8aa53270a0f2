"""Reused task processes: one process runs up to N tasks of one job, one at a time.

Opt-in per job, ``@job(max_tasks_per_process=N)``. The zygote forks a reused
process the first time a task of that job finds none idle, and from then on
hands it each next task of the job over a Unix socket: the request line and,
with it (``SCM_RIGHTS``), that task's log file, a fresh pair of stdout/stderr
pipes and the log's truncation flag. So each task has pipes of its own: the
process points fds 1 and 2 at them for the task and at ``/dev/null`` after, and
no line can land in another task's log.

Each task's end comes back on the socket as a :class:`TaskDone` (what the exit
code would have been, the reason, the process's RSS), which the zygote turns
into the :class:`Exited` event a fresh process's exit would have given, so the
worker's handling (``Running.verdict``) is the same. A task that kills its
process (``os._exit``, a signal, the worker's timeout kill of the process group)
is reported from the process's exit status, as in fresh mode, and the next task
gets a fresh process.

A process is retired (its socket closed, so it exits) after N tasks, when its
RSS is above ``max_memory_per_process`` after a task, after ``sys.exit``, or
when its task ended close to the worker's deadline: the worker could be about
to kill that pid for the old task (:data:`REUSE_MARGIN_S`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from ..core.jobfile import JobSpec
from ..logs.tasklog import TaskLog, TaskOutput
from . import forking
from .dataflow import ProgressReporter, is_frame, progress_of
from .protocol import Exited, Progress, Started, StartRequest, TaskDone, encoder, request_decoder
from .runtime import EXIT_FAILED, end_of, run_job_ends
from .taskproc import task_context

if TYPE_CHECKING:
    from .forkserver import Zygote

REUSE_MARGIN_S = 1.0
"""A task that ended within this much of its deadline (or a quarter of its max duration,
if less) leaves its process retired: the worker may already be killing that pid."""

_done_decoder = msgspec.json.Decoder(TaskDone)
_PAGE = os.sysconf("SC_PAGE_SIZE")
_FDS_PER_TASK = 4  # log file, stdout and stderr write ends, truncation flag


class _Busy(NamedTuple):
    task_id: str
    output: TaskOutput
    deadline: float  # monotonic; 0: not known
    max_ms: int


class _Proc:
    """The zygote's handle on one reused process."""

    def __init__(self, pid: int, sock: socket.socket, job: str) -> None:
        self.pid = pid
        self.sock = sock
        self.fd = sock.fileno()
        self.job = job
        self.served = 0
        self.busy: _Busy | None = None
        self.buffer = b""
        self.closed = False


class ReusePool:
    """The zygote's reused processes, by pid, by socket fd and idle by job."""

    def __init__(self, zygote: Zygote) -> None:
        self.z = zygote
        self.procs: dict[int, _Proc] = {}
        self.by_fd: dict[int, _Proc] = {}
        self.idle: dict[str, list[_Proc]] = {}

    @staticmethod
    def wants(spec: JobSpec | None) -> bool:
        """True for a job whose tasks run in reused processes."""
        return spec is not None and spec.max_tasks_per_process > 1

    def start(self, req: StartRequest, spec: JobSpec, line: bytes) -> bool:
        """Hand the task to an idle process of its job, or to a new one; False if it failed."""
        try:
            output = TaskOutput(
                Path(req.log_path),
                task_id=req.id,
                job=req.job,
                max_bytes=req.max_log_bytes,
            )
        except OSError:
            return False  # the fresh path reports why
        idle = self.idle.get(req.job)
        proc = idle.pop() if idle else self._fork(req.job)
        fds = output.handoff_fds()
        try:
            output.attach(proc.pid)
            # Before the process hears of its task: the first line of its log.
            output.announce(started_at_ms=req.started_at_ms, attempt=req.attempt)
            sent = socket.send_fds(proc.sock, [line + b"\n"], fds)
            if sent < len(line) + 1:
                proc.sock.sendall((line + b"\n")[sent:])
        except OSError:
            self._close(proc)  # gone: the reap forgets it
            output.discard()
            return False
        finally:
            for fd in fds[1:]:
                os.close(fd)
        proc.busy = _Busy(req.id, output, req.deadline, spec.options.max_duration_ms)
        proc.served += 1
        self.z.watch(proc.pid, req.id, output)
        self.z.send(Started(id=req.id, pid=proc.pid))
        return True

    def _fork(self, job: str) -> _Proc:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = forking.fork()
        if pid == 0:
            code = EXIT_FAILED
            try:
                ours_fd = ours.detach()  # closed below with the zygote's other fds
                self.z.become_child(keep=(theirs.fileno(),), close=(ours_fd,))
                code = serve(theirs, self.z.jobs)
            finally:
                os._exit(code)
        theirs.close()
        proc = _Proc(pid, ours, job)
        self.procs[pid] = proc
        self.by_fd[proc.fd] = proc
        self.z.poller.register(proc.fd, select.POLLIN)
        return proc

    def on_readable(self, fd: int) -> None:
        """A process said a task ended (or closed its socket: it is exiting)."""
        proc = self.by_fd.get(fd)
        if proc is None:
            return
        try:
            chunk = proc.sock.recv(1 << 16)
        except OSError:
            chunk = b""
        if not chunk:
            self._close(proc)  # exiting: the reap reports a task it was running
            return
        self._take(proc, chunk)

    def _take(self, proc: _Proc, chunk: bytes) -> None:
        proc.buffer += chunk
        while b"\n" in proc.buffer:
            line, proc.buffer = proc.buffer.split(b"\n", 1)
            if is_frame(line):  # the running task's progress
                if proc.busy is not None and (value := progress_of(line)) is not None:
                    self.z.send(Progress(id=proc.busy.task_id, fraction=value[0], message=value[1]))
                continue
            self._done(proc, _done_decoder.decode(line))

    def _done(self, proc: _Proc, done: TaskDone) -> None:
        busy, proc.busy = proc.busy, None
        if busy is None:
            return
        self.z.unwatch(proc.pid, busy.output)
        retire, why = self._retire(proc, done, busy)
        if why:
            busy.output.note(why)
        busy.output.finish()
        status = (done.code & 0xFF) << 8  # as waitpid reports an exit with that code
        self.z.send(
            Exited(
                id=busy.task_id, pid=proc.pid, status=status, reason=done.reason, result=done.result
            )
        )
        # Now, before this process can take another task: the worker reads this exit
        # before it would kill the pid for the task (see Worker.read_exits_first).
        self.z.flush()
        if retire:
            self._close(proc)
        else:
            self.idle.setdefault(proc.job, []).append(proc)

    def _retire(self, proc: _Proc, done: TaskDone, busy: _Busy) -> tuple[bool, str]:
        """(whether the process retires after ``done``, a line for the task's log saying why)."""
        spec = self.z.jobs.get(proc.job)
        if spec is None or self.z.retiring or self.z.ending or done.ends:
            return True, ""
        if spec.max_memory_bytes and done.rss > spec.max_memory_bytes:
            note = (
                f"task process retired: RSS {done.rss // 10**6} MB is above"
                f" max_memory_per_process ({spec.max_memory_bytes // 10**6} MB)"
            )
            return True, note
        if proc.served >= spec.max_tasks_per_process:
            return True, ""  # its planned end
        # Close to the worker's timeout kill: it may be signalling this pid already.
        margin = min(REUSE_MARGIN_S, busy.max_ms / 4000)
        return bool(busy.deadline and time.monotonic() > busy.deadline - margin), ""

    def _close(self, proc: _Proc) -> None:
        """Retire a process: its socket closed, it exits (or has); the reap forgets it."""
        if proc.closed:
            return
        proc.closed = True
        idle = self.idle.get(proc.job, [])
        if proc in idle:
            idle.remove(proc)
        self.by_fd.pop(proc.fd, None)
        self.z.poller.unregister(proc.fd)
        proc.sock.close()

    def exited(self, pid: int, status: int, last: str, reason: str) -> bool:
        """The reap found ``pid`` ended; True if it was a reused process (then reported)."""
        proc = self.procs.pop(pid, None)
        if proc is None:
            return False
        if not proc.closed:  # it may have said its task ended just before it exited
            with contextlib.suppress(OSError):
                chunk = proc.sock.recv(1 << 16, socket.MSG_DONTWAIT)
                if chunk:
                    self._take(proc, chunk)
            self._close(proc)
        busy, proc.busy = proc.busy, None
        if busy is not None:  # it died during a task: os._exit, a signal, a kill
            self.z.unwatch(pid, busy.output)
            busy.output.finish(last)
            self.z.send(Exited(id=busy.task_id, pid=pid, status=status, reason=reason))
        return True

    def retire_idle(self) -> None:
        """The zygote retires: the idle processes go (the busy ones after their task)."""
        for procs in list(self.idle.values()):
            for proc in list(procs):
                self._close(proc)

    def idle_pids(self) -> list[int]:
        """The processes that run no task now (alive or not yet reaped)."""
        return [pid for pid, proc in self.procs.items() if proc.busy is None]

    def drop_in_child(self) -> None:
        """In a newly forked child: close every socket of the pool, none of them its own."""
        for proc in self.procs.values():
            if not proc.closed:
                os.close(proc.sock.detach())
        self.procs.clear()
        self.by_fd.clear()
        self.idle.clear()


# -- the reused process's side ---------------------------------------------------------------


def serve(sock: socket.socket, jobs: dict[str, JobSpec]) -> int:
    """Body of a reused process: run each task the zygote sends, until it closes the socket."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    saved = _State()
    buffer = b""
    while True:
        fds: list[int] = []
        while b"\n" not in buffer:
            data, got, _, _ = socket.recv_fds(sock, 1 << 16, _FDS_PER_TASK)
            fds += got
            if not data:
                return 0  # retired, or the zygote is gone
            buffer += data
        line, buffer = buffer.split(b"\n", 1)
        req = request_decoder.decode(line)
        assert isinstance(req, StartRequest)
        done = _run_one(req, jobs.get(req.job), fds, sock)
        saved.restore(devnull)
        sock.sendall(encoder.encode(done) + b"\n")
        if done.ends:
            return done.code


def _run_one(
    req: StartRequest, spec: JobSpec | None, fds: list[int], sock: socket.socket
) -> TaskDone:
    output = TaskOutput.received(fds, task_id=req.id, job=req.job, max_bytes=req.max_log_bytes)
    log = TaskLog.prepare(output)
    result = ""
    if spec is None:
        code, reason, ends = EXIT_FAILED, f"job {req.job!r} is not loaded on this worker", True
    else:
        task = task_context(req, log, ProgressReporter(sock.sendall))  # frames, then TaskDone
        code, reason, ends = run_job_ends(spec, task)
        code, reason, result = end_of(task, code, reason, req.max_result_bytes)
    log.close()
    output.truncated.close()
    return TaskDone(code=code, reason=reason, rss=_rss(), ends=ends, result=result)


class _State:
    """What the runtime set up before the first task, put back after each task."""

    def __init__(self) -> None:
        self.stdout, self.stderr = sys.stdout, sys.stderr
        self.loggers = [logging.getLogger(), logging.getLogger("perseid_jobs.task")]
        self.handlers = [list(lg.handlers) for lg in self.loggers]
        self.levels = [lg.level for lg in self.loggers]
        self.propagate = [lg.propagate for lg in self.loggers]

    def restore(self, devnull: int) -> None:
        for stream in (sys.stdout, sys.stderr, self.stdout, self.stderr):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.flush()
        sys.stdout, sys.stderr = self.stdout, self.stderr
        for fd in (1, 2):  # the task's pipes close here; a leftover child may hold them
            os.dup2(devnull, fd)
        for lg, handlers, level, propagate in zip(
            self.loggers, self.handlers, self.levels, self.propagate, strict=True
        ):
            lg.handlers[:] = handlers
            lg.filters.clear()
            lg.setLevel(level)
            lg.propagate = propagate
            lg.disabled = False
        logging.disable(logging.NOTSET)
        signal.alarm(0)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGALRM):
            signal.signal(sig, signal.SIG_DFL)  # a job's handler must not outlive its task


def _rss() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE
