"""The worker's side of the zygote: spawn it, send start requests, read events."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..core.errors import PerseidError
from ..launch.protocol import (
    Event,
    LeaseUntil,
    Progress,
    Ready,
    Request,
    Retire,
    StartRequest,
    Stop,
    Warm,
    encoder,
    event_decoder,
    write_all,
)
from ..logs.spool import Spool
from .settings import given


class ZygoteFailed(PerseidError):
    """The warm parent did not start or died."""


class ZygoteClient:
    """A running zygote process and the two pipes to it."""

    def __init__(
        self,
        jobs_dir: Path,
        *,
        spare_dir: Path | None = None,
        spool: Spool | None = None,
        start_timeout: float = 60.0,
        wait: bool = True,
    ) -> None:
        """Start the zygote for ``jobs_dir``; with ``spare_dir``, it keeps a spare process.

        ``spool``: the worker's spool; the zygote keeps its spare there and holds
        its lock too (the same open file), so the spool is not taken over while
        the zygote may still write its logs, even if the worker is gone.

        ``wait=False``: return at once, while it imports the jobs; :attr:`ready`
        waits for it then (the worker starts it before its own imports are done).
        """
        self.jobs_dir = jobs_dir
        self.spool = spool
        if spool is not None:
            spare_dir = spool.spare_dir
        self.spare_dir = spare_dir
        lock = [spool.lock_fd] if spool is not None else []
        req_r, self._req_w = os.pipe()
        self._evt_r, evt_w = os.pipe()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "perseid_jobs.launch.zygote",
                str(req_r),
                str(evt_w),
                str(jobs_dir),
                str(os.getpid()),
                *([str(spare_dir)] if spare_dir is not None else []),
                *[str(fd) for fd in lock],
            ],
            pass_fds=(req_r, evt_w, *lock),
            stdin=subprocess.DEVNULL,
        )
        os.close(req_r)
        os.close(evt_w)
        self._buffer = b""
        self._progress: list[Progress] = []
        self._write_lock = threading.Lock()  # the heartbeat thread sends lease deadlines
        self._start_timeout = start_timeout
        self._ready: Ready | None = None
        self.ended = False  # the event pipe reached its end: the zygote exited
        self._closed = False
        if wait:
            self.wait_ready()

    def wait_ready(self) -> Ready:
        """Wait until the zygote is up; what it loaded (its jobs, the files it could not)."""
        if self._ready is None:
            self._ready = self._wait_ready(self._start_timeout)
            os.set_blocking(self._evt_r, False)
        return self._ready

    @property
    def ready(self) -> Ready:
        """What the zygote loaded (waits until it is up)."""
        return self.wait_ready()

    def _wait_ready(self, timeout: float) -> Ready:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self._evt_r], [], [], 0.1)
            if r:
                for event in self.read_events(block=True):
                    if isinstance(event, Ready):
                        return event
            elif self.proc.poll() is not None:
                break
        self.close()
        raise ZygoteFailed("the task launcher process did not start; see the errors above")

    def poll_ready(self) -> Ready | None:
        """Without waiting: what it loaded once it is up, else None (raises if it died)."""
        if self._ready is None:
            r, _, _ = select.select([self._evt_r], [], [], 0)
            if r:
                for event in self.read_events(block=True):
                    if isinstance(event, Ready):
                        self._ready = event
                        os.set_blocking(self._evt_r, False)
            if self._ready is None and self.ended:
                self.close()
                raise ZygoteFailed("the task launcher exited before it was up")
        return self._ready

    def sibling(self) -> ZygoteClient:
        """A fresh zygote for the same directories (it loads the jobs again), not waited for."""
        if self.spool is not None:  # the fresh zygote holds the spool's lock too
            return ZygoteClient(self.jobs_dir, spool=self.spool, wait=False)
        return ZygoteClient(self.jobs_dir, spare_dir=self.spare_dir, wait=False)

    def retire(self) -> None:
        """Tell the zygote to start nothing more and exit once its tasks have ended."""
        with contextlib.suppress(OSError):  # the zygote is gone: the event pipe tells
            self._send(Retire())

    def fileno(self) -> int:
        """Readable when events arrive."""
        return self._evt_r

    def _send(self, request: Request) -> None:
        data = encoder.encode(request) + b"\n"
        with self._write_lock:
            if self._closed:  # the fd number may belong to another file by now
                raise BrokenPipeError("the zygote's pipe is closed")
            write_all(self._req_w, data)

    def start(self, request: StartRequest) -> None:
        """Ask for one task's process."""
        self._send(request)

    def warm(self) -> None:
        """Tell the zygote a start is due in a moment (see :class:`Warm`)."""
        with contextlib.suppress(OSError):  # the zygote is gone: the event pipe tells
            self._send(Warm())

    def lease_until(self, deadline: float) -> None:
        """Tell the zygote to kill every task if ``deadline`` (monotonic) passes unrenewed."""
        with contextlib.suppress(OSError):  # the zygote is gone: the event pipe tells
            self._send(LeaseUntil(deadline=deadline))

    def read_events(self, *, block: bool = False) -> list[Event]:
        """Events available now (``block``: wait for at least one read)."""
        try:
            chunk = os.read(self._evt_r, 1 << 16)
        except BlockingIOError:
            return []
        if not chunk:
            self.ended = True
            if self.proc.poll() is not None:
                raise ZygoteFailed(f"the task launcher exited with code {self.proc.returncode}")
            return []
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        events = [event_decoder.decode(line) for line in lines]
        # Progress waits here for the loop's next Redis turn (worker.dataflow writes it).
        self._progress += [e for e in events if isinstance(e, Progress)]
        return [e for e in events if not isinstance(e, Progress)]

    def take_progress(self) -> list[Progress]:
        """The tasks' progress read since the last call, oldest first."""
        taken, self._progress = self._progress, []
        return taken

    def close(self, timeout: float = 5.0) -> None:
        """Tell the zygote to kill its tasks and exit; wait for it."""
        with contextlib.suppress(OSError):
            self._send(Stop())
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._req_w, self._evt_r):
                with contextlib.suppress(OSError):
                    os.close(fd)


_early: ZygoteClient | None = None


def start_zygote(jobs_dir: Path, logs_dir: Path, *, wait: bool) -> ZygoteClient:
    """A worker's zygote, with a new spool of the worker in ``logs_dir`` (see ZygoteClient).

    The one :func:`start_zygote_early` started, if it was for the same directories.
    """
    global _early
    early, _early = _early, None
    if early is not None:
        assert early.spool is not None
        if (early.jobs_dir, early.spool.logs_dir) == (jobs_dir.resolve(), logs_dir.resolve()):
            if wait:
                early.wait_ready()
            return early
        early.close()  # guessed wrong: the command line said otherwise
        early.spool.close()
    return ZygoteClient(jobs_dir.resolve(), spool=Spool.create(logs_dir), wait=wait)


def start_zygote_early(args: list[str]) -> None:
    """For ``perseid-jobs worker ARGS``: start its zygote before the command line is parsed.

    Importing the command line (Redis client, Typer) takes a quarter of a
    second, in which the zygote can already import the jobs. The directories
    are read here the way the ``worker`` command reads them (``--jobs`` and
    ``--logs-dir``, else their environment variables, else the defaults: all
    from :data:`perseid_jobs.worker.settings.SETTINGS`); :func:`start_zygote` uses
    this zygote only if the parsed command agrees, and closes it otherwise.
    Nothing is started for ``--help``, without ``--slots``, or for a jobs
    directory that does not exist.
    """
    global _early
    if "--help" in args or not given(args, "slots"):
        return  # help, or a command that will be refused
    jobs, logs = given(args, "jobs_dir"), given(args, "logs_dir")
    assert jobs is not None and logs is not None  # both have defaults
    if Path(jobs).is_dir():
        _early = start_zygote(Path(jobs), Path(logs), wait=False)
