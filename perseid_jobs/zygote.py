"""The warm parent: imports every job once, then forks one process per task.

The worker spawns it as ``python -m perseid_jobs.zygote`` with two pipes. It
loads the jobs directory, reports the job definitions, and then, for each
start request, forks a child that runs the task in a new session (its own
process group, so a kill reaches the job's own subprocesses too). It reaps
its children and reports each exit status with the reason the child gave.

It also owns each task's stdout and stderr: the pipes are made before the fork
and their read ends polled here, their lines written into the task's log file
(:class:`~perseid_jobs.tasklog.TaskOutput`), so a task process starts no
thread for its output. A task's exit is reported only once its pipes are
drained, so the log is complete when the worker uploads it.

A task process never outlives its worker: the zygote asks the kernel for
SIGTERM when the worker dies (``PR_SET_PDEATHSIG``) and then kills every
task's process group; each child asks for SIGKILL when the zygote dies.

Nor does it outlive the worker's lease. The worker passes on each renewal's
conservative deadline (:class:`LeaseUntil`); if that deadline passes, because
the worker is stopped, hung, or cut off from Redis, the zygote kills every task
on its own, before any other instance could reap the tasks and run their series
on. And nothing of a task outlives the task: when its process ends, whatever is
left of its process group (a grandchild that ignored SIGTERM) is killed too,
while the ended leader still holds the group id.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import os
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import msgspec

from .jobfile import JobSpec, load_jobs_dir
from .models import JobDefinition, task_metadata
from .runtime import EXIT_FAILED, TaskContext, run_job
from .tasklog import TaskLog, TaskOutput

_PR_SET_PDEATHSIG = 1


class StartRequest(msgspec.Struct, tag="start"):
    """Worker -> zygote: run one task."""

    id: str
    job: str
    args: str
    attempt: int
    started_at_ms: int
    last_completed_at: str
    skipped_runs: str
    log_path: str
    max_log_bytes: int


class Stop(msgspec.Struct, tag="stop"):
    """Worker -> zygote: kill every task and exit."""


class LeaseUntil(msgspec.Struct, tag="lease"):
    """Worker -> zygote: the lease holds until ``deadline`` (``time.monotonic()`` seconds)."""

    deadline: float


class Ready(msgspec.Struct, tag="ready"):
    """Zygote -> worker: the jobs it loaded and the files it could not."""

    jobs: dict[str, JobDefinition]
    errors: list[str]


class Started(msgspec.Struct, tag="started"):
    """Zygote -> worker: the task's process exists."""

    id: str
    pid: int


class Exited(msgspec.Struct, tag="exited"):
    """Zygote -> worker: the task's process ended (``status`` as from waitpid)."""

    id: str
    pid: int
    status: int
    reason: str


Request = StartRequest | Stop | LeaseUntil
Event = Ready | Started | Exited
request_decoder = msgspec.json.Decoder(Request)
event_decoder = msgspec.json.Decoder(Event)
encoder = msgspec.json.Encoder()


def drain_pipe(fd: int) -> None:
    """Empty a non-blocking wake-up pipe (its bytes only say "look")."""
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 512):
            pass


def set_parent_death_signal(sig: int) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _run_child(req: StartRequest, spec: JobSpec, output: TaskOutput, result_fd: int) -> int:
    """Body of a task process; returns its exit code."""
    log = TaskLog.open(output, started_at_ms=req.started_at_ms, attempt=req.attempt)
    task = TaskContext(
        id=req.id,
        job=req.job,
        args=msgspec.json.decode(req.args),
        metadata=task_metadata(req.last_completed_at, req.skipped_runs),
        logger=log.logger,
        attempt=req.attempt,
    )
    code, reason = run_job(spec, task)
    if reason:
        _write_all(result_fd, reason.encode("utf-8", "replace"))
    log.close()
    return code


class _Child(NamedTuple):
    """What the zygote holds for one running task process."""

    task_id: str
    result_fd: int  # the reason for a failure, written by the task
    output: TaskOutput | None  # its log and captured stdout/stderr; None if it could not be made


class Zygote:
    """The fork server loop."""

    def __init__(self, req_fd: int, evt_fd: int, jobs: dict[str, JobSpec]) -> None:
        self.req_fd = req_fd
        self.evt_fd = evt_fd
        self.jobs = jobs
        self.pid = os.getpid()
        self.children: dict[int, _Child] = {}  # by pid
        self.pipes: dict[int, TaskOutput] = {}  # captured stdout/stderr read fd -> its log
        self.lease_deadline: float | None = None
        self.fenced: set[int] = set()  # children killed because the lease lapsed
        self.buffer = b""
        self.sig_r, self.sig_w = os.pipe()
        os.set_blocking(self.sig_w, False)
        os.set_blocking(self.sig_r, False)
        self.poller = select.poll()
        for fd in (req_fd, self.sig_r):
            self.poller.register(fd, select.POLLIN)

    def send(self, event: Any) -> None:
        """Report an event to the worker."""
        _write_all(self.evt_fd, encoder.encode(event) + b"\n")

    def start(self, req: StartRequest) -> None:
        """Fork the process of one task, its stdout and stderr piped into its log here."""
        spec = self.jobs.get(req.job)
        output: TaskOutput | None = None
        log_error = ""
        try:
            output = TaskOutput(
                Path(req.log_path), task_id=req.id, job=req.job, max_bytes=req.max_log_bytes
            )
        except OSError as exc:
            log_error = f"cannot open the task log: {exc}"
        result_r, result_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the task's process
            self._child(req, spec, output, log_error, result_r, result_w)
        os.close(result_w)
        os.set_blocking(result_r, False)
        self.children[pid] = _Child(req.id, result_r, output)
        if output is not None:
            output.attach(pid)
            for fd in output.fds:
                self.pipes[fd] = output
                self.poller.register(fd, select.POLLIN)
        self.send(Started(id=req.id, pid=pid))

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
            os.setsid()
            set_parent_death_signal(signal.SIGKILL)
            if os.getppid() != self.pid:
                # The zygote died between the fork and the line above (its kill-all may
                # not have known this pid yet): no one would report us, so go.
                os._exit(EXIT_FAILED)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            for fd in (self.req_fd, self.evt_fd, self.sig_r, self.sig_w, result_r):
                os.close(fd)
            for child in self.children.values():
                os.close(child.result_fd)
                if child.output is not None:
                    child.output.discard()
            if output is None:
                _write_all(result_w, log_error.encode())
            elif spec is None:
                _write_all(result_w, f"job {req.job!r} is not loaded on this worker".encode())
            else:
                code = _run_child(req, spec, output, result_w)
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
        while self.children:
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
            child = self.children.pop(pid, None)
            if child is None:
                continue
            if child.output is not None:
                # The worker uploads the log once it hears of the exit: complete it first.
                for fd in child.output.fds:
                    self._forget(fd)
                child.output.finish()
            reason = b""
            with contextlib.suppress(BlockingIOError):
                reason = os.read(child.result_fd, 65536)
            os.close(child.result_fd)
            if pid in self.fenced:
                self.fenced.discard(pid)
                reason = reason or b"killed by the zygote: the instance's lease lapsed"
            self.send(
                Exited(
                    id=child.task_id,
                    pid=pid,
                    status=status,
                    reason=reason.decode("utf-8", "replace"),
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
        """SIGKILL every task's process group."""
        for pid in list(self.children):
            self.kill(pid)

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
                return False
            if isinstance(req, LeaseUntil):
                self.lease_deadline = req.deadline
                continue
            self.start(req)
        return True

    def serve(self) -> None:
        """Loop until the worker closes the pipe, says stop, or dies."""
        signal.set_wakeup_fd(self.sig_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        try:
            while True:
                timeout = self.watchdog_timeout()
                ready = {fd for fd, _ in self.poller.poll(_poll_ms(timeout))}
                # One bounded read per pipe and round: a flooding task cannot hold up starts.
                for fd in ready & self.pipes.keys():
                    self.read_output(fd)
                if self.sig_r in ready:
                    drain_pipe(self.sig_r)
                    self.reap()
                if self.req_fd in ready and not self.handle_requests():
                    break
                self.enforce_lease()  # after reading requests: a renewal may have arrived
        finally:
            self.kill_all()


def _poll_ms(timeout: float | None) -> int | None:
    return None if timeout is None else math.ceil(timeout * 1000)


def main() -> None:
    """Entry point: ``python -m perseid_jobs.zygote REQ_FD EVT_FD JOBS_DIR WORKER_PID``."""
    req_fd, evt_fd, jobs_dir, worker_pid = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        Path(sys.argv[3]),
        int(sys.argv[4]),
    )
    os.set_inheritable(req_fd, False)
    os.set_inheritable(evt_fd, False)

    def on_worker_death(*_: Any) -> None:
        zygote.kill_all()
        os._exit(0)

    set_parent_death_signal(signal.SIGTERM)
    jobs, errors = load_jobs_dir(jobs_dir)
    zygote = Zygote(req_fd, evt_fd, jobs)
    # Everything loaded so far lives as long as the zygote: keep it out of the
    # collector, so a collection in a task does not write to (and so copy) the
    # pages of every object it inherited.
    gc.freeze()
    signal.signal(signal.SIGTERM, on_worker_death)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the worker, which drains
    if os.getppid() != worker_pid:
        return
    zygote.send(Ready(jobs={n: s.definition() for n, s in jobs.items()}, errors=errors))
    zygote.serve()


if __name__ == "__main__":
    main()
