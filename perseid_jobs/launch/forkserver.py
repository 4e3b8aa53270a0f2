"""The zygote's fork server loop: its children, their pipes, the reap and the lease watchdog.

The process's entry, and what the zygote is for, are in :mod:`perseid_jobs.launch.zygote`;
the spare task process forked ahead of its start in :mod:`perseid_jobs.launch.spare`.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import time
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from ..core.jobfile import JobSpec
from ..logs.tasklog import TaskLog, TaskOutput
from . import forking, spare
from .dataflow import ResultPipes
from .protocol import (
    Exited,
    LeaseUntil,
    Retire,
    Started,
    StartRequest,
    Stop,
    Warm,
    drain_pipe,
    encoder,
    request_decoder,
    write_all,
)
from .reuse import ReusePool
from .runtime import EXIT_FAILED
from .spare import SPARE_AFTER_IDLE_S, SPARE_AT_ONCE_WITH, Spare
from .taskproc import become_task, clear_spares, run_task, wait_killed


class _Child(NamedTuple):
    """What the zygote holds for one running task process."""

    task_id: str
    result_fd: int  # the reason for a failure, written by the task
    output: TaskOutput | None  # its log and captured stdout/stderr; None if it could not be made


class Zygote:
    """The fork server loop."""

    def __init__(
        self, req_fd: int, evt_fd: int, jobs: dict[str, JobSpec], spare_dir: Path | None = None
    ) -> None:
        self.req_fd = req_fd
        self.lock_fd = -1  # the worker's spool lock, if it passed one: held here, never by a task
        self.ending = ""  # once set: why the tasks still running are killed
        self.evt_fd = evt_fd
        self.jobs = jobs
        self.spare: Spare | None = None
        self.spare_path: Path | None = None
        if spare_dir is not None:
            self.spare_path = clear_spares(spare_dir)
        self.pid = os.getpid()
        self.children: dict[int, _Child] = {}  # by pid
        self.pipes: dict[int, TaskOutput] = {}  # captured stdout/stderr read fd -> its log
        self.frames = ResultPipes(self.send)  # the tasks' result pipes: progress, result
        self.lease_deadline: float | None = None
        self.fenced: set[int] = set()  # children killed because the lease lapsed
        self.retiring = False  # a fresh zygote took over: exit once the children have ended
        self.buffer = b""
        self.outbox: list[bytes] = []  # encoded events not yet written
        self.reuse = ReusePool(self)  # processes of jobs that opt in, each serving many tasks
        self.sig_r, self.sig_w = os.pipe()
        os.set_blocking(self.sig_w, False)
        os.set_blocking(self.sig_r, False)
        self.poller = select.poll()
        for fd in (req_fd, self.sig_r):
            self.poller.register(fd, select.POLLIN)

    def send(self, event: Any) -> None:
        """Queue an event for the worker; :meth:`flush` writes what is queued."""
        self.outbox.append(encoder.encode(event))

    def flush(self) -> None:
        """Write the queued events in one write: each write wakes the worker."""
        if self.outbox:
            self.outbox.append(b"")
            data, self.outbox = b"\n".join(self.outbox), []
            write_all(self.evt_fd, data)

    def start(self, req: StartRequest, line: bytes) -> None:
        """Start one task: hand it to the spare if there is one, else fork its process.

        A job with ``max_tasks_per_process`` above 1 goes to a reused process instead.
        """
        spec = self.jobs.get(req.job)
        if spec is not None and self.reuse.wants(spec) and self.reuse.start(req, spec, line):
            return
        waiting, self.spare = self.spare, None
        if waiting is not None and spare.hand_over(self, waiting, req, line):
            return
        output: TaskOutput | None = None
        log_error = ""
        try:
            output = TaskOutput(
                Path(req.log_path), task_id=req.id, job=req.job, max_bytes=req.max_log_bytes
            )
        except OSError as exc:
            log_error = f"cannot open the task log: {exc}"
        result_r, result_w = os.pipe()
        pid = forking.fork()
        if pid == 0:  # the task's process
            self._child(req, spec, output, log_error, result_r, result_w)
        os.close(result_w)
        if output is not None:
            output.attach(pid)
        self.started(req.id, pid, result_r, output)

    def started(self, task_id: str, pid: int, result_fd: int, output: TaskOutput | None) -> None:
        """Hold a started task's process (its log already attached) and report it."""
        os.set_blocking(result_fd, False)
        self.watch(pid, task_id, output, result_fd)
        self.send(Started(id=task_id, pid=pid))

    def watch(self, pid: int, task_id: str, output: TaskOutput | None, result_fd: int = -1) -> None:
        """Hold a running task (``result_fd`` -1: a reused process, which reports otherwise)."""
        self.children[pid] = _Child(task_id, result_fd, output)
        if result_fd >= 0:  # read as it comes: a result may be more than a pipe holds
            self.frames.watch(result_fd, task_id, self.poller)
        if output is not None:
            for fd in output.fds:
                self.pipes[fd] = output
                self.poller.register(fd, select.POLLIN)

    def unwatch(self, pid: int, output: TaskOutput) -> None:
        """A reused process's task ended: stop reading its pipes here (its log finishes them)."""
        self.children.pop(pid, None)
        for fd in output.fds:
            self._forget(fd)

    def become_child(self, keep: tuple[int, ...], close: tuple[int, ...] = ()) -> None:
        """In a new child: leave the zygote behind (see :func:`taskproc.become_task`)."""
        fds = {self.req_fd, self.evt_fd, self.sig_r, self.sig_w, self.lock_fd, *close}
        fds |= {child.result_fd for child in self.children.values()}
        # No spare to close: a fork happens only while there is none (start takes it first).
        outputs = [child.output for child in self.children.values() if child.output is not None]
        become_task(self.pid, fds - set(keep) - {-1}, outputs)
        self.reuse.drop_in_child()

    def _child(
        self,
        req: StartRequest,
        spec: JobSpec | None,
        output: TaskOutput | None,
        log_error: str,
        result_r: int,
        result_w: int,
    ) -> NoReturn:
        code = EXIT_FAILED
        try:
            self.become_child((result_w,))
            os.close(result_r)
            if output is None:
                write_all(result_w, log_error.encode())
            elif spec is None:
                write_all(result_w, f"job {req.job!r} is not loaded on this worker".encode())
            else:
                code = run_task(req, spec, TaskLog.prepare(output), result_w)
        finally:
            os._exit(code)

    def read_output(self, fd: int) -> None:
        """Copy one bounded read of a task's stdout or stderr into its log."""
        output = self.pipes[fd]
        if not output.read(fd):
            self._forget(fd)

    def _forget(self, fd: int) -> None:
        del self.pipes[fd]
        self.poller.unregister(fd)

    def reap(self) -> None:
        """Collect every exited child, complete its log, and report it."""
        while True:  # until waitid says none (left): tasks, and a spare that died
            try:
                # Peek first: while the ended leader is not reaped, its pid (the group id)
                # cannot be reused, so killing what is left of its group is safe.
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            with contextlib.suppress(OSError):
                os.killpg(info.si_pid, signal.SIGKILL)
            pid, status = os.waitpid(info.si_pid, 0)
            fenced = pid in self.fenced
            self.fenced.discard(pid)
            last, why = (_FENCED, _FENCED_REASON) if fenced else ("", "")
            if self.reuse.exited(pid, status, last, why):
                continue
            child = self.children.pop(pid, None)
            if child is None:
                spare.reaped(self, pid)
                continue
            if child.output is not None:
                # The worker uploads the log once it hears of the exit: complete it first.
                for fd in child.output.fds:
                    self._forget(fd)
                child.output.finish(_FENCED if fenced else "")
            frames = self.frames.end(child.result_fd)
            reason = frames.reason or (_FENCED_REASON.encode() if fenced else b"")
            self.send(
                Exited(
                    id=child.task_id,
                    pid=pid,
                    status=status,
                    reason=reason.decode("utf-8", "replace"),
                    result=frames.result,
                )
            )

    def watchdog_timeout(self) -> float | None:
        """Seconds until the lease deadline, if a task could outlive it; else None."""
        if self.lease_deadline is None or not set(self.children) - self.fenced:
            return None
        return max(0.0, self.lease_deadline - time.monotonic())

    def enforce_lease(self) -> None:
        """Kill every task once the lease deadline passed without a renewal."""
        if self.lease_deadline is None or time.monotonic() < self.lease_deadline:
            return
        for pid in set(self.children) - self.fenced:
            self.fenced.add(pid)
            self.kill(pid)

    @staticmethod
    def kill(pid: int) -> None:
        """SIGKILL a task's process group (or the process, if it has no group yet)."""
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
                break
            except OSError:
                continue

    def kill_all(self) -> None:
        """SIGKILL every task's process group, and the spare."""
        for pid in [*self.children, *self.reuse.idle_pids()]:
            self.kill(pid)
        if self.spare is not None:
            self.kill(self.spare.pid)
            if self.spare_path is not None:
                self.spare_path.unlink(missing_ok=True)

    def retire(self) -> None:
        """Start nothing more: the spare goes (no more are made); the running tasks stay."""
        self.retiring = True
        self.reuse.retire_idle()
        if self.spare is not None:
            self.kill(self.spare.pid)  # the reap closes its pipes
        if self.spare_path is not None:
            self.spare_path.unlink(missing_ok=True)
            self.spare_path = None

    def handle_requests(self) -> bool:
        """Read and act on pending requests; False when the worker is gone or said stop."""
        chunk = os.read(self.req_fd, 1 << 16)
        if not chunk:
            return False
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            req = request_decoder.decode(line)
            if isinstance(req, Stop):
                self.ending = "killed: the worker stopped"
                return False
            if isinstance(req, LeaseUntil):
                self.lease_deadline = req.deadline
                continue
            if isinstance(req, Warm):
                spare.nudge(self)  # reading and decoding it warmed this loop
                continue
            if isinstance(req, Retire):
                self.retire()
                continue
            self.start(req, line)
        return True

    def serve(self) -> None:
        """Loop until the worker closes the pipe, says stop, or dies."""
        signal.set_wakeup_fd(self.sig_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        try:
            while True:
                timeout = self.watchdog_timeout()
                spare_wanted = self.spare is None and self.spare_path is not None
                if spare_wanted:
                    timeout = (
                        SPARE_AFTER_IDLE_S if timeout is None else min(timeout, SPARE_AFTER_IDLE_S)
                    )
                ready = {fd for fd, _ in self.poller.poll(_poll_ms(timeout))}
                if not ready and spare_wanted:
                    # Quiet for a moment: fork the next task's process now, off the path
                    # of any start (and not while a task just started wants the CPU).
                    spare.make(self)
                # One bounded read per pipe and round: a flooding task cannot hold up starts.
                for fd in ready & self.pipes.keys():
                    self.read_output(fd)
                for fd in ready & self.frames.fds.keys():
                    self.frames.read(fd)  # a task's progress (its result, its reason)
                for fd in ready & self.reuse.by_fd.keys():
                    self.reuse.on_readable(fd)  # a reused process's task ended
                if self.sig_r in ready:
                    drain_pipe(self.sig_r)
                    self.reap()
                if self.req_fd in ready and not self.handle_requests():
                    break
                self.enforce_lease()  # after reading requests: a renewal may have arrived
                self.flush()
                if self.retiring and not self.children and self.spare is None:
                    break  # retired, and every task's exit reported
                if self.spare is None and len(self.children) >= SPARE_AT_ONCE_WITH:
                    # Busy: another start is likely soon; fork it while these tasks run.
                    spare.make(self)
        finally:
            self.ending = self.ending or WORKER_GONE
            with contextlib.suppress(OSError):  # the worker may be gone
                self.flush()
            self.end_tasks()

    def end_tasks(self, *, in_handler: bool = False) -> None:
        """Kill every task; each log ends with a line saying why (:attr:`ending`).

        Before the zygote exits and frees the spool's lock (:mod:`perseid_jobs.logs.spool`).
        """
        self.kill_all()
        idle = self.reuse.idle_pids()
        for pid in wait_killed([*self.children, *idle], timeout=2.0):
            if pid not in self.children:
                continue  # a reused process between tasks: no log to end
            output = self.children.pop(pid).output
            if output is not None:
                # A handler that interrupted a write of this log must not wait for it.
                output.finish(self.ending, drain=not (in_handler and output.writing))
        self.end_unread()

    def end_unread(self) -> None:
        """Starts the worker sent that were never read: each task's log says it never ran.

        Their runs are claimed in Redis, and the reaper fails them; without this they
        would be the only ended tasks without a log.
        """
        with contextlib.suppress(OSError):  # nothing more to read (the worker's end open)
            os.set_blocking(self.req_fd, False)
            while chunk := os.read(self.req_fd, 1 << 16):
                self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            req = request_decoder.decode(line)
            if not isinstance(req, StartRequest):
                continue
            try:
                output = TaskOutput(
                    Path(req.log_path), task_id=req.id, job=req.job, max_bytes=req.max_log_bytes
                )
            except OSError:
                continue  # as for a start: a log that cannot be made is not made
            output.attach(self.pid)
            output.finish(f"{self.ending} before the task started")


WORKER_GONE = "killed: the worker process exited"
_FENCED = "killed: the instance's lease lapsed (no renewal reached the zygote in time)"
_FENCED_REASON = "killed by the zygote: the instance's lease lapsed"


def _poll_ms(timeout: float | None) -> int | None:
    return None if timeout is None else math.ceil(timeout * 1000)
